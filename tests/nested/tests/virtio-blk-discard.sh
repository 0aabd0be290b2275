# Discard in the guest gives space back on the host: a raw image (vda) is
# filled with 48 MiB and then blkdiscard'ed; on a qcow2 image (vdb) an ext2
# file of 48 MiB is written, removed and fstrim'ed. Between and after the
# boots the outer machine measures each image's allocation (du): both shrink
# by at least 40 MiB, and the qcow2 image still checks clean.
# VMM: $NESTED_VMM (tern; run.sh --vmm qemu checks this test against QEMU).
# timeout: 900
. /nested/lib.sh
need_vmm

truncate -s 128M disk.raw || fail "cannot make an image in $PWD"
if command -v tern-img >/dev/null 2>&1; then
    tern-img create -f qcow2 disk.qcow2 128M >/dev/null || fail "tern-img create failed"
elif command -v qemu-img >/dev/null 2>&1; then
    qemu-img create -f qcow2 disk.qcow2 128M >/dev/null || fail "qemu-img create failed"
else
    skip "neither tern-img nor qemu-img in the outer machine to make a qcow2 image"
fi

case $NESTED_VMM in
    tern) DISKS="-o disk.0.path=$PWD/disk.raw -o disk.1.path=$PWD/disk.qcow2 -o disk.1.format=qcow2" ;;
    qemu) DISKS="-drive file=$PWD/disk.raw,format=raw,if=none,id=d0,discard=unmap
                 -device virtio-blk-pci,drive=d0
                 -drive file=$PWD/disk.qcow2,format=qcow2,if=none,id=d1,discard=unmap
                 -device virtio-blk-pci,drive=d1" ;;
esac

cat >boot1.sh <<'EOF'
set -e
echo "BLK-DISCARD-MAX vda=$(cat /sys/block/vda/queue/discard_max_bytes) vdb=$(cat /sys/block/vdb/queue/discard_max_bytes)"
dd if=/dev/urandom of=/dev/vda bs=1M count=48 conv=fsync 2>/dev/null
mke2fs /dev/vdb >/tmp/mke2fs.log 2>&1 || { cat /tmp/mke2fs.log; exit 1; }
mkdir -p /mnt
mount -t ext2 /dev/vdb /mnt
dd if=/dev/urandom of=/mnt/big bs=1M count=48 2>/dev/null
sync
umount /mnt
echo BLK-FILLED
EOF
cat >boot2.sh <<'EOF'
set -e
blkdiscard /dev/vda
echo BLK-BLKDISCARD-DONE
mkdir -p /mnt
mount -t ext2 /dev/vdb /mnt
rm /mnt/big
sync
fstrim -v /mnt
umount /mnt
echo BLK-FSTRIM-DONE
echo "BLK-ERRORS $(dmesg | grep -ci 'I/O error')"
EOF

alloc() { du -k "$1" | cut -f1; }
raw0=$(alloc disk.raw)
q0=$(alloc disk.qcow2)

# shellcheck disable=SC2086
run_linux --timeout 400 --script boot1.sh -- $DISKS
tr -d '\r' <"$CONSOLE" | grep -v '^$' | sed 's/^/  1| /'
expect_console '^BLK-FILLED' "the guest did not fill the disks"
[ "$INNER_RC" = 0 ] || fail "first boot: inner script exit status '${INNER_RC:-none}'"
expect_console '^BLK-DISCARD-MAX vda=[1-9][0-9]* vdb=[1-9]' "a disk without discard support"
raw1=$(alloc disk.raw)
q1=$(alloc disk.qcow2)
echo "allocated after filling: raw ${raw0} -> ${raw1} KiB, qcow2 ${q0} -> ${q1} KiB"
[ "$raw1" -ge $((raw0 + 45 * 1024)) ] || fail "the raw image did not grow by the 48 MiB written (${raw0} -> ${raw1} KiB)"
[ "$q1" -ge $((q0 + 45 * 1024)) ] || fail "the qcow2 image did not grow by the 48 MiB written (${q0} -> ${q1} KiB)"

# shellcheck disable=SC2086
run_linux --timeout 300 --script boot2.sh -- $DISKS
tr -d '\r' <"$CONSOLE" | grep -v '^$' | sed 's/^/  2| /'
expect_console '^BLK-BLKDISCARD-DONE' "blkdiscard /dev/vda failed"
expect_console '^BLK-FSTRIM-DONE' "fstrim failed"
expect_console '^BLK-ERRORS 0$' "the guest saw I/O errors"
[ "$INNER_RC" = 0 ] || fail "second boot: inner script exit status '${INNER_RC:-none}'"
raw2=$(alloc disk.raw)
q2=$(alloc disk.qcow2)
echo "allocated after discard: raw ${raw1} -> ${raw2} KiB, qcow2 ${q1} -> ${q2} KiB"
metric "blk_${NESTED_VMM}_raw_freed_kib" $((raw1 - raw2)) KiB
metric "blk_${NESTED_VMM}_qcow2_freed_kib" $((q1 - q2)) KiB
[ "$raw2" -le $((raw1 - 40 * 1024)) ] || fail "blkdiscard did not shrink the raw image (${raw1} -> ${raw2} KiB)"
[ "$q2" -le $((q1 - 40 * 1024)) ] || fail "fstrim did not shrink the qcow2 image (${q1} -> ${q2} KiB)"

if command -v qemu-img >/dev/null 2>&1; then checker=qemu-img; else checker=tern-img; fi
$checker check disk.qcow2 >check.txt 2>&1
rc=$?
sed 's/^/  check| /' check.txt
[ $rc = 0 ] || fail "$checker check disk.qcow2 after discard: exit status $rc"
