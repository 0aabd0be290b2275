# virtio-rng: with rng.enable=on the inner kernel's virtio-rng driver binds,
# becomes the current hwrng, and reading /dev/hwrng returns data that is not
# all one byte value (two reads differ).
# VMM: $NESTED_VMM (tern; run.sh --vmm qemu checks this test against QEMU).
# timeout: 240
. /nested/lib.sh
need_vmm

case $NESTED_VMM in
    tern) set -- -o rng.enable=on ;;
    qemu) set -- -device virtio-rng-pci ;;
esac

cat >guest.sh <<'EOF2'
echo "RNG-BOUND $(ls /sys/bus/virtio/drivers/virtio_rng 2>/dev/null | grep -c '^virtio')"
echo "RNG-CURRENT $(cat /sys/class/misc/hw_random/rng_current 2>/dev/null)"
a=$(dd if=/dev/hwrng bs=64 count=1 2>/dev/null | od -An -tx1 | tr -d ' \n')
b=$(dd if=/dev/hwrng bs=64 count=1 2>/dev/null | od -An -tx1 | tr -d ' \n')
echo "RNG-LEN-A ${#a}"
echo "RNG-A $a"
echo "RNG-B $b"
[ -n "$a" ] && [ "$a" != "$b" ] && echo RNG-DIFFER
EOF2

run_linux --timeout 200 --script guest.sh -- "$@"
tr -d '\r' <"$CONSOLE" | grep -E '^RNG-' | sed 's/^/  | /'
expect_console 'TERN-INNER-INIT' "Linux under $NESTED_VMM never reached init"
expect_console '^RNG-BOUND 1$' "the virtio_rng driver is not bound to one device"
expect_console '^RNG-CURRENT virtio_rng' "virtio_rng is not the current hwrng"
expect_console '^RNG-LEN-A 128$' "reading /dev/hwrng did not return 64 bytes"
expect_console '^RNG-DIFFER' "two reads of /dev/hwrng returned the same bytes"
[ "$VM_RC" = 0 ] || fail "$NESTED_VMM exited with $VM_RC"
