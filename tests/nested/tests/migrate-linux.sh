# Live migration of a real Linux guest between two tern processes in the
# outer machine, judged by the guest: a process appends a counter (1, 2,
# 3, ...) to a file on an ext2 virtio disk; the disk is one raw file both
# tern processes open (writable: the source holds its lock until the
# destination has everything, then hands it over, docs/migration-protocol.md).
# The source runs with a control socket; the destination is `tern receive
# --listen unix:...`; `ternctl migrate --mode live` moves the guest while the
# counter runs. The guest learns that it moved through the network (user-
# mode: the destination brings its own back end): a file that appears on the
# outer machine's web server only after the migration. It then carries on:
# the counter continues without a gap or a repeat, the file system unmounts
# clean (superblock state "clean", no ext2 or I/O errors in the kernel log),
# the guest powers off on the destination with status 0, the source (paused
# for good after the handover) never ran it again, and a later boot mounts
# the disk and finds the same counter file. MIG_FORMAT=qcow2 (migrate-linux-
# qcow2.sh): the disk is a qcow2 image, which the source allocates clusters
# in during the migration and the destination reopens at the handover; it
# must also pass the image check.
# timeout: 900
. /nested/lib.sh
MIG_FORMAT=${MIG_FORMAT:-raw}
[ "$NESTED_VMM" = tern ] || skip "tern only (migration)"
need_vmm
command -v ternctl >/dev/null 2>&1 || skip "no ternctl in the outer machine"

HTTP_PORT=8592
SRC_SOCK=$PWD/src.sock
DST_SOCK=$PWD/dst.sock
MIG=$PWD/mig.sock
DISK=$PWD/disk.$MIG_FORMAT
if [ "$MIG_FORMAT" = raw ]; then
    truncate -s 64M "$DISK" || fail "cannot make a 64 MiB image"
elif command -v tern-img >/dev/null 2>&1; then
    tern-img create -f qcow2 "$DISK" 64M >/dev/null || fail "tern-img create failed"
else
    skip "no tern-img in the outer machine to make a qcow2 image"
fi
mkdir -p www
httpd -f -p 127.0.0.1:$HTTP_PORT -h "$PWD/www" &
httpd_pid=$!
dst_pid=
trap 'kill $httpd_pid 2>/dev/null; [ -n "$dst_pid" ] && kill -9 $dst_pid 2>/dev/null' EXIT

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
udhcpc -i eth0 -n -q -t 10 -T 2 -s /tmp/dhcp.sh >/dev/null 2>&1 || { echo MIG-DHCP-FAILED; exit 1; }
mke2fs -q /dev/vda
mkdir -p /mnt
mount -t ext2 /dev/vda /mnt
# the counter: one line per step, appended; synced now and then so the
# disk sees writes throughout (before, during and after the migration)
(i=0; while :; do i=\$((i + 1)); echo \$i >>/mnt/counter; [ \$((i % 25)) = 0 ] && sync; usleep 20000; done) &
cpid=\$!
until [ "\$(wc -l </mnt/counter)" -ge 50 ]; do usleep 100000; done
echo MIG-READY
# /moved exists only once the outer machine saw the migration complete
i=0
until wget -q -O /tmp/moved http://10.0.2.2:$HTTP_PORT/moved 2>/dev/null; do
    i=\$((i + 1))
    [ \$i -lt 600 ] || { echo MIG-NEVER-MOVED; exit 1; }
    sleep 1
done
echo "MIG-MOVED after \$i tries: \$(cat /tmp/moved)"
n0=\$(wc -l </mnt/counter)
until [ "\$(wc -l </mnt/counter)" -ge \$((n0 + 50)) ]; do usleep 100000; done
kill \$cpid
wait \$cpid 2>/dev/null || true
sync
awk 'BEGIN { want = 1 } { if (\$1 != want) { print "MIG-COUNTER-BAD line " NR ": " \$1 ", expected " want; bad = 1; exit } want++ } END { if (!bad) print "MIG-COUNTER-OK " want - 1 }' /mnt/counter
echo "MIG-SUM \$(md5sum </mnt/counter | cut -d' ' -f1) \$(wc -l </mnt/counter)"
umount /mnt
echo "MIG-FS-ERRORS \$(dmesg | grep -ciE 'ext2.*(error|warning)|I/O error')"
EOF
cat >check.sh <<'EOF'
set -e
mkdir -p /mnt
mount -t ext2 -o ro /dev/vda /mnt
echo "MIG-SUM3 $(md5sum </mnt/counter | cut -d' ' -f1) $(wc -l </mnt/counter)"
umount /mnt
echo "MIG-FS-ERRORS3 $(dmesg | grep -ciE 'ext2.*(error|warning)|I/O error')"
EOF

# the source
run_linux --timeout 700 --cpus 2 --script guest.sh --out "$PWD/console1" -- \
    -o disk.0.path="$DISK" -o disk.0.format=$MIG_FORMAT -o net.0.backend=user -o "control.path=$SRC_SOCK" &
vm_pid=$!
i=0
until grep -q MIG-READY console1 2>/dev/null; do
    i=$((i + 1))
    if [ $i -ge 800 ] || ! kill -0 $vm_pid 2>/dev/null; then
        wait $vm_pid
        CONSOLE=$PWD/console1
        tr -d '\r' <console1 | tail -20 | sed 's/^/  1| /'
        fail "the guest never got ready for the migration"
    fi
    sleep 0.5
done
sleep 1

# the destination, in the same outer machine, on the same disk file
timeout -s KILL 600 tern receive --listen "unix:$MIG" -o "control.path=$DST_SOCK" \
    </dev/null >console2 2>&1 &
dst_pid=$!
i=0
until grep -q "listening on" console2 2>/dev/null; do
    i=$((i + 1))
    [ $i -lt 100 ] && kill -0 $dst_pid 2>/dev/null || { cat console2; fail "tern receive did not listen"; }
    sleep 0.1
done

t0=$(now_cs)
if ! ternctl -t 400 -s "$SRC_SOCK" --json migrate "unix:$MIG" --mode live --timeout 300 >mig.json 2>mig.err; then
    cat mig.json mig.err
    tr -d '\r' <console2 | tail -20 | sed 's/^/  dst| /'
    fail "the migration failed"
fi
t1=$(now_cs)
echo "migrate: $(cat mig.json)"
field() { sed -n "s/.*\"$1\": *\([0-9.]*\).*/\1/p" mig.json | head -n 1; }
mname=migrate_linux
[ "$MIG_FORMAT" = raw ] || mname=migrate_linux_$MIG_FORMAT
metric ${mname}_total "$(fmt_cs $((t1 - t0)))" s
metric ${mname}_downtime "$(field downtime_ms)" ms
metric ${mname}_rounds "$(field rounds)" rounds

# the source stays paused for good after the handover: it must refuse to
# run the guest again, and ends when told to
ternctl -s "$SRC_SOCK" resume >/dev/null 2>&1 && fail "the source resumed a guest it handed over"
ternctl -s "$SRC_SOCK" quit >/dev/null 2>&1
wait $vm_pid

echo "migrated at $(date +%s)" >www/moved
i=0
while kill -0 $dst_pid 2>/dev/null; do
    i=$((i + 1))
    [ $i -lt 3000 ] || fail "the guest did not finish on the destination"
    sleep 0.2
done
wait $dst_pid
rc=$?
dst_pid=
CONSOLE=$PWD/console2
VM_RC=$rc
tr -d '\r' <console2 | grep -E '^MIG-|TERN-INNER-RC|tern receive' | sed 's/^/  2| /'
[ $rc = 0 ] || { show_console; fail "the destination tern exited with status $rc"; }
tr -d '\r' <console1 | grep -qE '^MIG-(MOVED|COUNTER|SUM|FS)' && fail "the guest ran on at the source after the handover"
grep -q 'TERN-INNER-INIT' console2 && fail "the destination booted the guest again instead of carrying on"
expect_console '^MIG-MOVED' "the migrated guest never reached the outer machine's web server"
expect_console '^MIG-COUNTER-OK [0-9]+' "the counter has a gap or a repeat"
expect_console '^MIG-FS-ERRORS 0$' "the guest's kernel reported file-system or I/O errors"
expect_console '^TERN-INNER-RC=0' "the migrated guest's commands failed"
n=$(tr -d '\r' <console2 | sed -n 's/^MIG-COUNTER-OK \([0-9]*\)$/\1/p')
[ "${n:-0}" -ge 100 ] || fail "the counter reached only ${n:-0}"
sum=$(tr -d '\r' <console2 | sed -n 's/^MIG-SUM \([0-9a-f]*\) .*/\1/p')

# the superblock says clean (s_state at byte 1024+58: 1 = valid, 2 = errors)
RAW=$DISK
if [ "$MIG_FORMAT" != raw ]; then
    if command -v qemu-img >/dev/null 2>&1; then
        qemu-img check -f qcow2 "$DISK" || fail "qemu-img check finds the image damaged"
    else
        tern-img check "$DISK" || fail "tern-img check finds the image damaged"
    fi
    RAW=$PWD/back.raw
    tern-img convert -O raw "$DISK" "$RAW" || fail "tern-img convert failed"
fi
state=$(od -An -tu2 -j 1082 -N2 "$RAW" | tr -d ' ')
[ "$state" = 1 ] || fail "the ext2 superblock state is $state, not clean (1)"

run_linux --timeout 200 --script check.sh -- -o disk.0.path="$DISK" -o disk.0.format=$MIG_FORMAT
tr -d '\r' <"$CONSOLE" | grep -E '^MIG-' | sed 's/^/  3| /'
expect_console "^MIG-SUM3 $sum " "the counter file read on a fresh boot differs"
expect_console '^MIG-FS-ERRORS3 0$' "mounting the disk again reported errors"
echo "counter continued to $n without a gap or repeat across a live migration; file system clean"
