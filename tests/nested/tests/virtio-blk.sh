# virtio-blk on a raw image, judged by the inner kernel's virtio_blk driver:
# the module binds and /dev/vda has the image's size, its serial and one
# hardware queue per vCPU; mke2fs, mount, write a 64 MiB file, checksum it
# (from the disk, after dropping the page cache), unmount, power off; boot
# again, mount, checksum: equal.
# VMM: $NESTED_VMM (tern; run.sh --vmm qemu checks this test against QEMU).
# timeout: 900
. /nested/lib.sh
need_vmm

# disk FILE FORMAT INDEX SERIAL: the VMM arguments of one virtio-blk disk,
# appended to $DISKS (words without spaces).
DISKS=
disk() {
    case $NESTED_VMM in
        tern) DISKS="$DISKS -o disk.$3.path=$1 -o disk.$3.format=$2 -o disk.$3.serial=$4" ;;
        qemu) DISKS="$DISKS -drive file=$1,format=$2,if=none,id=d$3,cache=writeback
                     -device virtio-blk-pci,drive=d$3,serial=$4" ;;
    esac
}

truncate -s 160M disk.raw || fail "cannot make a 160 MiB image in $PWD"
disk "$PWD/disk.raw" raw 0 BLKTEST0

cat >boot1.sh <<'EOF'
set -e
echo "BLK-DRIVER $(basename "$(readlink /sys/block/vda/device/driver)")"
echo "BLK-SIZE $(cat /sys/block/vda/size)"
echo "BLK-SERIAL $(cat /sys/block/vda/serial)"
echo "BLK-MQ $(ls -d /sys/block/vda/mq/* | wc -l)"
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
run_linux --timeout 400 --cpus 2 --script boot1.sh -- $DISKS
tr -d '\r' <"$CONSOLE" | grep -v '^$' | sed 's/^/  1| /'
expect_console 'TERN-INNER-INIT' "Linux under $NESTED_VMM never reached init"
expect_console '^BLK-DRIVER virtio_blk$' "no virtio_blk driver bound to /dev/vda"
expect_console '^BLK-SIZE 327680$' "/dev/vda is not 160 MiB (327680 sectors)"
expect_console '^BLK-SERIAL BLKTEST0$' "the serial is not the configured one"
expect_console '^BLK-MQ 2$' "not one hardware queue per vCPU (2)"
expect_console '^BLK-ERRORS 0$' "the guest saw I/O errors"
[ "$INNER_RC" = 0 ] || fail "first boot: inner script exit status '${INNER_RC:-none}'"
[ "$VM_RC" = 0 ] || fail "first boot: $NESTED_VMM exited with $VM_RC"
sum1=$(tr -d '\r' <"$CONSOLE" | sed -n 's/^BLK-SUM1 \([0-9a-f]*\) 67108864$/\1/p')
[ -n "$sum1" ] || fail "first boot: no checksum of a 64 MiB file"
metric "blk_${NESTED_VMM}_boot1_total" "$VM_TOTAL" s

# shellcheck disable=SC2086
run_linux --timeout 300 --script boot2.sh -- $DISKS
tr -d '\r' <"$CONSOLE" | grep -v '^$' | sed 's/^/  2| /'
[ "$INNER_RC" = 0 ] || fail "second boot: inner script exit status '${INNER_RC:-none}'"
sum2=$(tr -d '\r' <"$CONSOLE" | sed -n 's/^BLK-SUM2 \([0-9a-f]*\) 67108864$/\1/p')
[ -n "$sum2" ] || fail "second boot: no checksum of the 64 MiB file"
[ "$sum1" = "$sum2" ] || fail "the file changed across power-off: $sum1 then $sum2"
expect_console '^BLK-ERRORS 0$' "the guest saw I/O errors"
echo "checksum equal across boots: $sum1"
