# virtio-console: the inner kernel's virtio_console driver makes the port a
# console (hvc0); text the guest writes to /dev/hvc0 arrives in the file
# vconsole.path names, in order, and nothing else does.
# VMM: $NESTED_VMM (tern; run.sh --vmm qemu checks this test against QEMU).
# timeout: 300
. /nested/lib.sh
need_vmm

case $NESTED_VMM in
    tern) set -- -o "vconsole.path=$PWD/hvc0.txt" ;;
    qemu) set -- -device virtio-serial-pci -chardev "file,id=c0,path=$PWD/hvc0.txt" \
                 -device virtconsole,chardev=c0 ;;
esac

cat >guest.sh <<'EOF'
echo "CON-BOUND $(ls /sys/bus/virtio/drivers/virtio_console | grep -c '^virtio')"
test -c /dev/hvc0 && echo CON-HVC0-PRESENT
echo "hvc0 line one" >/dev/hvc0
i=1
while [ $i -le 50 ]; do
    echo "hvc0 numbered line $i" >/dev/hvc0
    i=$((i + 1))
done
printf 'a line with no newline at the end' >/dev/hvc0
echo CON-WRITTEN
EOF

run_linux --timeout 240 --script guest.sh -- "$@"
tr -d '\r' <"$CONSOLE" | grep -v '^$' | sed 's/^/  | /'
expect_console 'TERN-INNER-INIT' "Linux under $NESTED_VMM never reached init"
expect_console '^CON-BOUND 1$' "the virtio_console driver is not bound to one device"
expect_console '^CON-HVC0-PRESENT' "no /dev/hvc0"
expect_console '^CON-WRITTEN' "the guest could not write to /dev/hvc0"
[ "$VM_RC" = 0 ] || fail "$NESTED_VMM exited with $VM_RC"
[ -f hvc0.txt ] || fail "no output file hvc0.txt"
echo "---- hvc0.txt ($(wc -c <hvc0.txt) bytes), first lines ----"
head -n 5 hvc0.txt | sed 's/^/  hvc0| /'
{
    echo "hvc0 line one"
    i=1
    while [ $i -le 50 ]; do
        echo "hvc0 numbered line $i"
        i=$((i + 1))
    done
    printf 'a line with no newline at the end'
} >want.txt
# the tty layer may turn \n into \r\n (onlcr): compare without \r
tr -d '\r' <hvc0.txt >got.txt
cmp -s want.txt got.txt || { diff want.txt got.txt | head -n 20; fail "hvc0.txt is not what the guest wrote"; }
echo "hvc0.txt holds exactly what the guest wrote"
