# Snapshot and restore of a real Linux guest (tern only), judged by the
# guest: a process appends a counter (1, 2, 3, ...) to a file on an ext2
# virtio disk while the guest is on user-mode networking. The outer machine
# pauses tern, saves a snapshot, kills tern with SIGKILL, and restores the
# snapshot with `tern restore`. The restored guest carries on: the counter
# continues without a gap or a repeat, the network answers (a file fetched
# from the outer machine through 10.0.2.2 after the restore), the file
# system unmounts clean (superblock state "clean", no ext2 errors in the
# kernel log), and a third boot mounts it and finds the same counter file.
# The disk is not part of the snapshot: tern is paused before the save and
# killed while paused, so the image holds exactly what the guest had
# written when it was saved.
# timeout: 600
. /nested/lib.sh
[ "$NESTED_VMM" = tern ] || skip "tern only (snapshot and restore)"
need_vmm
command -v ternctl >/dev/null 2>&1 || skip "no ternctl in the outer machine"

HTTP_PORT=8591
SNAP=$PWD/linux.snap
SOCK=$PWD/vm.sock
truncate -s 64M disk.raw || fail "cannot make a 64 MiB image"
mkdir -p www
dd if=/dev/urandom of=www/after bs=1024 count=64 2>/dev/null
after_md5=$(md5sum <www/after | cut -d' ' -f1)
httpd -f -p 127.0.0.1:$HTTP_PORT -h "$PWD/www" &
httpd_pid=$!
trap 'kill $httpd_pid 2>/dev/null' EXIT

cat >guest.sh <<EOF
set -e
ip link set eth0 up
cat >/tmp/dhcp.sh <<'EOS'
#!/bin/sh
[ "\$1" = bound ] || exit 0
ip addr add "\$ip/\$mask" dev "\$interface"
ip route add default via "\$router" dev "\$interface"
EOS
chmod +x /tmp/dhcp.sh
udhcpc -i eth0 -n -q -t 10 -T 2 -s /tmp/dhcp.sh >/dev/null 2>&1 || { echo SNAP-DHCP-FAILED; exit 1; }
mke2fs -q /dev/vda
mkdir -p /mnt
mount -t ext2 /dev/vda /mnt
# the counter: one line per step, appended
(i=0; while :; do i=\$((i + 1)); echo \$i >>/mnt/counter; usleep 20000; done) &
cpid=\$!
until [ "\$(wc -l </mnt/counter)" -ge 50 ]; do usleep 100000; done
echo SNAP-READY
# /go exists only once the outer machine has restored the snapshot
i=0
until wget -q -O /tmp/go http://10.0.2.2:$HTTP_PORT/go 2>/dev/null; do
    i=\$((i + 1))
    [ \$i -lt 600 ] || { echo SNAP-NO-GO; exit 1; }
    sleep 1
done
echo "SNAP-RESTORED after \$i tries"
wget -q -O /tmp/after http://10.0.2.2:$HTTP_PORT/after || { echo SNAP-WGET-FAILED; exit 1; }
echo "SNAP-NET \$(md5sum </tmp/after | cut -d' ' -f1)"
n0=\$(wc -l </mnt/counter)
until [ "\$(wc -l </mnt/counter)" -ge \$((n0 + 50)) ]; do usleep 100000; done
kill \$cpid
wait \$cpid 2>/dev/null || true
sync
awk 'BEGIN { want = 1 } { if (\$1 != want) { print "SNAP-COUNTER-BAD line " NR ": " \$1 ", expected " want; bad = 1; exit } want++ } END { if (!bad) print "SNAP-COUNTER-OK " want - 1 }' /mnt/counter
echo "SNAP-SUM \$(md5sum </mnt/counter | cut -d' ' -f1) \$(wc -l </mnt/counter)"
umount /mnt
echo "SNAP-FS-ERRORS \$(dmesg | grep -ciE 'ext2.*(error|warning)|I/O error')"
EOF
cat >check.sh <<'EOF'
set -e
mkdir -p /mnt
mount -t ext2 -o ro /dev/vda /mnt
echo "SNAP-SUM3 $(md5sum </mnt/counter | cut -d' ' -f1) $(wc -l </mnt/counter)"
umount /mnt
echo "SNAP-FS-ERRORS3 $(dmesg | grep -ciE 'ext2.*(error|warning)|I/O error')"
EOF

run_linux --timeout 400 --cpus 2 --script guest.sh --out "$PWD/console1" -- \
    -o disk.0.path="$PWD/disk.raw" -o net.0.backend=user -o "control.path=$SOCK" &
vm_pid=$!
i=0
until grep -q SNAP-READY console1 2>/dev/null; do
    i=$((i + 1))
    if [ $i -ge 800 ] || ! kill -0 $vm_pid 2>/dev/null; then
        wait $vm_pid
        CONSOLE=$PWD/console1
        tr -d '\r' <console1 | tail -20 | sed 's/^/  1| /'
        fail "the guest never got ready for the snapshot"
    fi
    sleep 0.5
done
sleep 1
tern_pid=$(ternctl -s "$SOCK" --json status | sed -n 's/.*"pid":\([0-9]*\).*/\1/p')
[ -n "$tern_pid" ] || fail "ternctl status gave no pid"
ternctl -s "$SOCK" pause || fail "ternctl pause failed"
t0=$(now_cs)
ternctl -s "$SOCK" --json snapshot save "$SNAP" >save.json || fail "ternctl snapshot save failed"
t1=$(now_cs)
echo "saved: $(cat save.json)"
kill -9 "$tern_pid"
wait $vm_pid
ternctl snapshot inspect "$SNAP" | sed -n '1,8p;/^sections/,/^$/p' | sed 's/^/  inspect| /'
metric snapshot_linux_save "$(fmt_cs $((t1 - t0)))" s

: >www/go
t0=$(now_cs)
timeout -s KILL 300 tern restore "$SNAP" >console2 2>&1
rc=$?
t1=$(now_cs)
CONSOLE=$PWD/console2
tr -d '\r' <console2 | grep -E '^SNAP-|TERN-INNER-RC' | sed 's/^/  2| /'
[ $rc = 0 ] || { show_console 2>/dev/null; fail "tern restore exited with status $rc"; }
grep -q 'TERN-INNER-INIT' console2 && fail "the restored guest booted again instead of carrying on"
expect_console '^SNAP-RESTORED' "the restored guest never reached the outer machine's web server"
expect_console "^SNAP-NET $after_md5" "the file fetched after the restore differs (or never came)"
expect_console '^SNAP-COUNTER-OK [0-9]+' "the counter has a gap or a repeat"
expect_console '^SNAP-FS-ERRORS 0$' "the guest's kernel reported file-system or I/O errors"
expect_console '^TERN-INNER-RC=0' "the restored guest's commands failed"
n=$(tr -d '\r' <console2 | sed -n 's/^SNAP-COUNTER-OK \([0-9]*\)$/\1/p')
[ "${n:-0}" -ge 100 ] || fail "the counter reached only ${n:-0}"
sum=$(tr -d '\r' <console2 | sed -n 's/^SNAP-SUM \([0-9a-f]*\) .*/\1/p')
metric snapshot_linux_restore_run "$(fmt_cs $((t1 - t0)))" s

# the superblock says clean (s_state at byte 1024+58: 1 = valid, 2 = errors)
state=$(od -An -tu2 -j 1082 -N2 disk.raw | tr -d ' ')
[ "$state" = 1 ] || fail "the ext2 superblock state is $state, not clean (1)"

run_linux --timeout 200 --script check.sh -- -o disk.0.path="$PWD/disk.raw"
tr -d '\r' <"$CONSOLE" | grep -E '^SNAP-' | sed 's/^/  3| /'
expect_console "^SNAP-SUM3 $sum " "the counter file read on a fresh boot differs"
expect_console '^SNAP-FS-ERRORS3 0$' "mounting the disk again reported errors"
echo "counter continued to $n without a gap or repeat; network answered; file system clean"
