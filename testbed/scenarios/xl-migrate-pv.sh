# about: live xl migrate to localhost (pv guest; uses log-dirty, needs the shadow variant for pv)
[ "$TB_VARIANT" = shadow ] ||
  fail "needs the shadow variant (Debian's Xen has no PV log-dirty): testbed/run test -v shadow xl-migrate-pv"
migrate_scenario pv migpv
