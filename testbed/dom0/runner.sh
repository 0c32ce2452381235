#!/bin/sh
# Runs the scenarios named as arguments, one after another, in this dom0. Each prints exactly
# one "PASS <name> key=value..." or "FAIL <name> reason cause=CAUSE" line. A failed scenario
# is re-run up to RETRIES times unless its cause is `verdict` (bad pages, a guest left paused,
# a wrong generation: never retried); a line after a retry carries retried=N
# first_failure="..." first_cause=CAUSE, and testbed/run fails the run unless that first cause
# is a listed test-bed cause (tb:..., docs/testbed.md "Retries"). The last two lines are
# "N retried" and "N passed, N failed".
. /etc/testbed.env
export PATH=/bin:/sbin:/usr/bin:/usr/sbin:/usr/local/bin:$(echo /usr/lib/xen-4.*/bin)
. /testbed/lib.sh

# run_once NAME ATTEMPT: runs the scenario under `timeout`, copies its log to the console
# (prefixed, so no log line looks like a result) and prints its result line.
run_once() {
  local name=$1 attempt=$2 log=/tmp/tb/$1.$2.log t0 rc line
  export SCN=$name RESULT=/tmp/tb/$name.result
  rm -f "$RESULT" "$RESULT.cause"
  t0=$(now)
  timeout -s KILL "${SCENARIO_TIMEOUT:-600}" \
    sh -c ". /testbed/lib.sh; . /testbed/scenarios/$name.sh" > "$log" 2>&1
  rc=$?
  tr '\r' '\n' < "$log" | sed "s/^/  [$name] /" > /dev/console
  line=$(tail -n 1 "$RESULT" 2>/dev/null)
  if [ -z "$line" ]; then
    if [ "$rc" = 137 ]; then line="FAIL $name timed out after ${SCENARIO_TIMEOUT:-600}s"
    else line="FAIL $name ended (rc=$rc) without a verdict"; fi
    line="$line cause=$(cat "$RESULT.cause" 2>/dev/null || echo scenario)"
  fi
  echo "$line wall_s=$(since "$t0")"
}

npass=0
nfail=0
nretried=0
for name in "$@"; do
  if [ ! -f "/testbed/scenarios/$name.sh" ]; then
    echo "FAIL $name no such scenario cause=scenario"; nfail=$((nfail + 1)); continue
  fi
  echo "TB-SCENARIO start $name uptime=$(now)" > /dev/console
  line=$(run_once "$name" 1)
  attempt=1
  # The first failure's cause decides: a verdict is final.
  cause=$(echo "$line" | sed -n 's/.* cause=\([^ ]*\).*/\1/p')
  first=$(echo "$line" | sed "s/^FAIL $name //; s/ cause=[^ ]*.*$//; s/ wall_s=.*$//; s/\"/'/g")
  while [ "${line#FAIL }" != "$line" ] && [ "$cause" != verdict ] && [ "$attempt" -le "${RETRIES:-1}" ]; do
    echo "TB-SCENARIO retry $name after ($cause): $first" > /dev/console
    destroy_all > /dev/null 2>&1
    rm -rf /tmp/tb/work
    attempt=$((attempt + 1))
    line=$(run_once "$name" "$attempt")
    line="$line retried=$((attempt - 1)) first_failure=\"$first\" first_cause=$cause"
  done
  [ "$attempt" -gt 1 ] && nretried=$((nretried + 1))
  destroy_all > /dev/null 2>&1
  rm -rf /tmp/tb/work
  echo "$line"
  case $line in PASS*) npass=$((npass + 1)) ;; *) nfail=$((nfail + 1)) ;; esac
done
echo "$nretried retried"
echo "$npass passed, $nfail failed"
