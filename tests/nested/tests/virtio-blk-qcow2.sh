# virtio-blk on a qcow2 image (vdisk on worker threads under tern): mke2fs,
# mount, write a 64 MiB file, checksum (from the disk), unmount, power off;
# boot again, checksum again: equal; then the image passes `qemu-img check`
# (or `tern-img check` when the outer machine has no qemu-img).
# VMM: $NESTED_VMM (tern; run.sh --vmm qemu checks this test against QEMU).
# timeout: 900
. /nested/lib.sh
need_vmm

if command -v tern-img >/dev/null 2>&1; then
    tern-img create -f qcow2 disk.qcow2 160M >/dev/null || fail "tern-img create failed"
elif command -v qemu-img >/dev/null 2>&1; then
    qemu-img create -f qcow2 disk.qcow2 160M >/dev/null || fail "qemu-img create failed"
else
    skip "neither tern-img nor qemu-img in the outer machine to make a qcow2 image"
fi

case $NESTED_VMM in
    tern) DISKS="-o disk.0.path=$PWD/disk.qcow2 -o disk.0.format=qcow2" ;;
    qemu) DISKS="-drive file=$PWD/disk.qcow2,format=qcow2,if=none,id=d0 -device virtio-blk-pci,drive=d0" ;;
esac

cat >boot1.sh <<'EOF'
set -e
echo "BLK-SIZE $(cat /sys/block/vda/size)"
mke2fs /dev/vda >/tmp/mke2fs.log 2>&1 || { cat /tmp/mke2fs.log; exit 1; }
mkdir -p /mnt
mount -t ext2 /dev/vda /mnt
dd if=/dev/urandom of=/mnt/big bs=1M count=64 2>/dev/null
sync
echo 3 >/proc/sys/vm/drop_caches
echo "BLK-SUM1 $(sha256sum /mnt/big | cut -d' ' -f1) $(wc -c </mnt/big)"
umount /mnt
echo "BLK-ERRORS $(dmesg | grep -ci 'I/O error')"
EOF
cat >boot2.sh <<'EOF'
set -e
mkdir -p /mnt
mount -t ext2 /dev/vda /mnt
echo "BLK-SUM2 $(sha256sum /mnt/big | cut -d' ' -f1) $(wc -c </mnt/big)"
umount /mnt
echo "BLK-ERRORS $(dmesg | grep -ci 'I/O error')"
EOF

# shellcheck disable=SC2086
run_linux --timeout 400 --script boot1.sh -- $DISKS
tr -d '\r' <"$CONSOLE" | grep -v '^$' | sed 's/^/  1| /'
expect_console '^BLK-SIZE 327680$' "/dev/vda is not 160 MiB (327680 sectors)"
expect_console '^BLK-ERRORS 0$' "the guest saw I/O errors"
[ "$INNER_RC" = 0 ] || fail "first boot: inner script exit status '${INNER_RC:-none}'"
[ "$VM_RC" = 0 ] || fail "first boot: $NESTED_VMM exited with $VM_RC"
sum1=$(tr -d '\r' <"$CONSOLE" | sed -n 's/^BLK-SUM1 \([0-9a-f]*\) 67108864$/\1/p')
[ -n "$sum1" ] || fail "first boot: no checksum of a 64 MiB file"

# shellcheck disable=SC2086
run_linux --timeout 300 --script boot2.sh -- $DISKS
tr -d '\r' <"$CONSOLE" | grep -v '^$' | sed 's/^/  2| /'
[ "$INNER_RC" = 0 ] || fail "second boot: inner script exit status '${INNER_RC:-none}'"
sum2=$(tr -d '\r' <"$CONSOLE" | sed -n 's/^BLK-SUM2 \([0-9a-f]*\) 67108864$/\1/p')
[ -n "$sum2" ] || fail "second boot: no checksum of the 64 MiB file"
[ "$sum1" = "$sum2" ] || fail "the file changed across power-off: $sum1 then $sum2"
echo "checksum equal across boots: $sum1"

if command -v qemu-img >/dev/null 2>&1; then
    checker=qemu-img
else
    checker=tern-img
fi
$checker check disk.qcow2 >check.txt 2>&1
rc=$?
sed 's/^/  check| /' check.txt
[ $rc = 0 ] || fail "$checker check disk.qcow2: exit status $rc"
echo "image checked clean by $checker"
metric "blk_qcow2_allocated_kib" "$(du -k disk.qcow2 | cut -f1)" KiB
