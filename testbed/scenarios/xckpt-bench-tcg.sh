# about: issue 12's sim bench run inside dom0 (TCG speed, one vCPU): xckpt's capture and restore stages beside the xl-like raw write and read, CPU s/GB per stage
. /testbed/xckpt.sh
B=$TBW/bench.json
BS=$TBW/bench-store
rm -rf "$BS"
# Exit status 3 is the bench's own speed check failing (capture over the xl-like save, restore
# over 1.5x the xl-like read-back, or dead copies over 5%): reported here, not a failure. 2 (a
# restore not verified) or any other is.
rc=0
out BENCH_S xckpt bench --sim --mem 256M --dirty-rate 8M --checkpoints 2 --interval 2 \
  --store "$BS" --json || rc=$?
[ "$rc" = 0 ] || [ "$rc" = 3 ] || fail "xckpt bench --sim failed (exit $rc): $OUT_LAST"
# The JSON document (pretty-printed) is stdout from its first line "{" on.
sed -n '/^{/,$p' "$TBW/.out" > "$B"
jq -e . "$B" >/dev/null || fail "xckpt bench --sim printed no JSON document"
rm -rf "$BS"
figs=""
for k in full_capture_s xl_like_save_s restore_s xl_like_restore_s two_pass_restore_s \
         cpu_s_per_gb.copy cpu_s_per_gb.zero_check cpu_s_per_gb.digest cpu_s_per_gb.compress \
         cpu_s_per_gb.write; do
  val=$(json "$B" ".$k"); nums val
  figs="$figs $k=$val"
done
for k in read decompress check stream; do
  val=$(json "$B" ".restore_cpu_s_per_gb.$k"); nums val
  figs="$figs restore_cpu_$k=$val"
done
[ "$(json "$B" .verified)" = true ] || fail "the bench's restore was not verified:$figs"
pass "${figs# } bench_exit=$rc verified=true"
