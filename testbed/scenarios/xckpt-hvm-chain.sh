# about: xckpt base + 3 incrementals of an HVM guest (qemu-xen), restore latest and @1, bad=0
. /testbed/xckpt.sh
BOOT_TIMEOUT=300
chain_scenario hvm xhvm
