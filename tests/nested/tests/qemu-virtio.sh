# The inner kernel's virtio drivers (modules in Debian's cloud kernel) bind
# to virtio-pci devices: blk, net, rng, console.  Checked with QEMU/KVM now;
# the same check serves tern's devices later.
# timeout: 300
. /nested/lib.sh
need_kvm
need_qemu

dd if=/dev/zero of=disk.img bs=1M count=8 2>/dev/null
cat >inner.sh <<'INNER'
set -e
ls /sys/bus/virtio/devices
for d in /sys/bus/virtio/devices/*; do
    echo "virtio $(basename $d) device=$(cat $d/device) driver=$(basename $(readlink $d/driver))"
done
test -b /dev/vda && echo "vda-size=$(cat /sys/block/vda/size)"
test -e /sys/class/net/eth0 && echo "eth0-present"
test -c /dev/hwrng && echo "rng=$(cat /sys/class/misc/hw_random/rng_current)"
test -c /dev/vport0p1 -o -e /sys/class/virtio-ports && echo "virtio-console-present"
INNER
run_qemu_linux --timeout 240 --script inner.sh -- \
    -drive file=disk.img,format=raw,if=none,id=d0 -device virtio-blk-pci,drive=d0 \
    -netdev user,id=n0 -device virtio-net-pci,netdev=n0,romfile= \
    -device virtio-rng-pci \
    -device virtio-serial-pci -chardev null,id=c0 -device virtserialport,chardev=c0
cat "$CONSOLE" | tr -d '\r' | sed 's/^/  | /'
expect_console 'TERN-INNER-INIT'
expect_console '^vda-size=16384' "virtio-blk: no /dev/vda of 8 MiB"
expect_console '^eth0-present' "virtio-net: no eth0"
expect_console '^rng=virtio_rng' "virtio-rng: not the current hwrng"
expect_console '^virtio-console-present' "virtio-console: no port"
[ "$INNER_RC" = 0 ] || fail "inner script exit status '${INNER_RC:-none}'"
