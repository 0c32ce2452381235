# about: xckpt base + 3 incrementals of a PVH guest (separate processes), restore latest and @1, bad=0
. /testbed/xckpt.sh
chain_scenario pvh xpvh
