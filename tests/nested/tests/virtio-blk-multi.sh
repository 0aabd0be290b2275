# Two disks appear as vda and vdb, each with its own image, size and serial;
# the second is read-only: the guest sees it read-only, its writes are
# refused and the image is untouched, while what it reads is the image's
# content. What the guest writes to vda lands at the right place in vda's
# image.
# VMM: $NESTED_VMM (tern; run.sh --vmm qemu checks this test against QEMU).
# timeout: 600
. /nested/lib.sh
need_vmm

truncate -s 16M a.raw || fail "cannot make images in $PWD"
# b.raw: 32 MiB with a known first MiB
dd if=/dev/urandom of=b.raw bs=1M count=1 2>/dev/null
truncate -s 32M b.raw
b_head=$(dd if=b.raw bs=1M count=1 2>/dev/null | md5sum | cut -d' ' -f1)
b_all=$(md5sum <b.raw | cut -d' ' -f1)
dd if=/dev/urandom of=pattern bs=64k count=1 2>/dev/null
pattern=$(md5sum <pattern | cut -d' ' -f1)

case $NESTED_VMM in
    tern) DISKS="-o disk.0.path=$PWD/a.raw -o disk.0.serial=FIRSTDISK
                 -o disk.1.path=$PWD/b.raw -o disk.1.readonly=on -o disk.1.serial=SECONDDISK" ;;
    qemu) DISKS="-drive file=$PWD/a.raw,format=raw,if=none,id=d0
                 -device virtio-blk-pci,drive=d0,serial=FIRSTDISK
                 -drive file=$PWD/b.raw,format=raw,if=none,id=d1,readonly=on
                 -device virtio-blk-pci,drive=d1,serial=SECONDDISK" ;;
esac

cat >guest.sh <<EOF
for d in vda vdb; do
    echo "BLK-DISK \$d size=\$(cat /sys/block/\$d/size) ro=\$(cat /sys/block/\$d/ro) serial=\$(cat /sys/block/\$d/serial)"
done
echo "BLK-MQ vda=\$(ls -d /sys/block/vda/mq/* | wc -l)"
if dd if=/dev/zero of=/dev/vdb bs=4096 count=1 conv=fsync 2>/tmp/err; then
    echo BLK-VDB-WRITE-ACCEPTED
else
    echo "BLK-VDB-WRITE-REFUSED \$(head -n 1 /tmp/err)"
fi
echo "BLK-VDB-HEAD \$(dd if=/dev/vdb bs=1M count=1 2>/dev/null | md5sum | cut -d' ' -f1)"
echo "BLK-VDB-ALL \$(md5sum </dev/vdb | cut -d' ' -f1)"
EOF
# 64 KiB of pattern from the outer machine (base64 in the script), written
# at 5 MiB into vda with direct I/O and read back
{
    echo "base64 -d >/tmp/pattern <<'B64'"
    base64 <pattern
    echo "B64"
    echo 'dd if=/tmp/pattern of=/dev/vda bs=64k seek=80 count=1 oflag=direct conv=fsync 2>/dev/null && echo BLK-VDA-WRITTEN'
    echo 'echo "BLK-VDA-READ $(dd if=/dev/vda bs=64k skip=80 count=1 iflag=direct 2>/dev/null | md5sum | cut -d" " -f1)"'
} >>guest.sh

# shellcheck disable=SC2086
run_linux --timeout 300 --cpus 2 --script guest.sh -- $DISKS
tr -d '\r' <"$CONSOLE" | grep -v '^$' | sed 's/^/  | /'
expect_console 'TERN-INNER-INIT' "Linux under $NESTED_VMM never reached init"
expect_console '^BLK-DISK vda size=32768 ro=0 serial=FIRSTDISK$' "vda is not the 16 MiB read-write first disk"
expect_console '^BLK-DISK vdb size=65536 ro=1 serial=SECONDDISK$' "vdb is not the 32 MiB read-only second disk"
expect_console '^BLK-MQ vda=2$' "vda does not have one queue per vCPU"
expect_console '^BLK-VDB-WRITE-REFUSED' "a write to the read-only disk was accepted"
expect_console "^BLK-VDB-HEAD $b_head\$" "vdb does not read back the image's first MiB"
expect_console "^BLK-VDB-ALL $b_all\$" "vdb does not read back the whole image"
expect_console '^BLK-VDA-WRITTEN' "writing to vda failed"
expect_console "^BLK-VDA-READ $pattern\$" "vda does not read back what was written"
[ "$VM_RC" = 0 ] || fail "$NESTED_VMM exited with $VM_RC"
[ "$(md5sum <b.raw | cut -d' ' -f1)" = "$b_all" ] || fail "the read-only image changed"
got=$(dd if=a.raw bs=64k skip=80 count=1 2>/dev/null | md5sum | cut -d' ' -f1)
[ "$got" = "$pattern" ] || fail "the pattern is not at 5 MiB in vda's image"
[ "$(dd if=a.raw bs=64k count=80 2>/dev/null | md5sum | cut -d' ' -f1)" = \
  "$(dd if=/dev/zero bs=64k count=80 2>/dev/null | md5sum | cut -d' ' -f1)" ] ||
    fail "vda's image changed outside the written range"
echo "two disks, one read-only: as configured"
