# virtio-net on a tap the VMM creates (the outer machine is root): the outer
# side gets 10.0.3.1/24 once the tap appears, the guest 10.0.3.2/24; the
# guest fetches a file from the outer machine's HTTP server and sends one to
# its nc listener over TCP.  Checksums match both ways.
# timeout: 420
. /nested/lib.sh
need_vmm
[ -c /dev/net/tun ] || fail "/dev/net/tun is missing in the outer machine (tun module?)"

TAP=ternt0
HTTP_PORT=8581
NC_PORT=8582
ACK_PORT=8583

mkdir -p www
dd if=/dev/urandom of=www/blob bs=1024 count=1024 2>/dev/null
down_md5=$(md5sum <www/blob | cut -d' ' -f1)
httpd_pid=
nc_pid=
trap 'kill $httpd_pid $nc_pid 2>/dev/null; ip link del $TAP 2>/dev/null' EXIT

cat >guest.sh <<EOF
ip addr add 10.0.3.2/24 dev eth0
ip link set eth0 up
echo "NET-MAC \$(cat /sys/class/net/eth0/address)"
echo "NET-FEATURES \$(cat /sys/class/net/eth0/device/features 2>/dev/null)"
i=0
until ping -c 1 -W 1 10.0.3.1 >/dev/null 2>&1; do
    i=\$((i + 1))
    [ \$i -lt 120 ] || { echo NET-NO-PEER; exit 1; }
    sleep 1
done
echo NET-PEER-UP
wget -q -O /tmp/blob http://10.0.3.1:$HTTP_PORT/blob || { echo NET-WGET-FAILED; exit 1; }
echo "NET-DOWN \$(md5sum </tmp/blob | cut -d' ' -f1)"
dd if=/dev/urandom of=/tmp/up bs=1024 count=512 2>/dev/null
echo "NET-UP-SENT \$(md5sum </tmp/up | cut -d' ' -f1)"
nc 10.0.3.1 $NC_PORT </tmp/up || { echo NET-NC-FAILED; exit 1; }
echo NET-UP-DONE
# the outer machine answers with the checksum of what it got (so the guest
# does not power off while its data is still on the way)
mkfifo /tmp/hold
timeout 200 nc -l -p $ACK_PORT </tmp/hold >/tmp/ack &
exec 3>/tmp/hold
wait \$!
echo "NET-ACK \$(cat /tmp/ack)"
EOF

case $NESTED_VMM in
    tern) set -- -o net.0.backend=tap -o net.0.tap=$TAP ;;
    qemu) set -- -netdev tap,id=n0,ifname=$TAP,script=no,downscript=no -device virtio-net-pci,netdev=n0 ;;
esac
run_linux --timeout 360 --script guest.sh --out "$PWD/console" -- "$@" &
vm_pid=$!

# The VMM creates the tap; configure the outer side as soon as it appears.
i=0
until ip link show $TAP >/dev/null 2>&1; do
    i=$((i + 1))
    if [ $i -ge 600 ] || ! kill -0 $vm_pid 2>/dev/null; then
        wait $vm_pid
        CONSOLE=$PWD/console
        show_console
        fail "the VMM did not create tap $TAP"
    fi
    sleep 0.2
done
ip addr add 10.0.3.1/24 dev $TAP
ip link set $TAP up
# the servers bind to the address once it exists
httpd -f -p 10.0.3.1:$HTTP_PORT -h "$PWD/www" &
httpd_pid=$!
# busybox nc ends at EOF on its stdin: give the listener one that stays open
mkfifo hold
timeout 300 nc -l -p $NC_PORT <hold >up &
nc_pid=$!
exec 3>hold
# the guest's file: complete when the guest closes the connection
while kill -0 $nc_pid 2>/dev/null && kill -0 $vm_pid 2>/dev/null; do
    sleep 1
done
got_md5=$(md5sum <up | cut -d' ' -f1)
i=0
while kill -0 $vm_pid 2>/dev/null && [ $i -lt 120 ]; do
    echo "$got_md5" | timeout 10 nc 10.0.3.2 $ACK_PORT 2>/dev/null && break
    sleep 1
    i=$((i + 1))
done
wait $vm_pid
CONSOLE=$PWD/console
tr -d '\r' <console | grep -E '^NET-|TERN-INNER-RC' | sed 's/^/  /'
expect_console "^NET-DOWN $down_md5\$" "the file fetched from the outer machine differs (or never came)"
up_md5=$(tr -d '\r' <console | sed -n 's/^NET-UP-SENT \([0-9a-f]*\)$/\1/p')
[ -n "$up_md5" ] || fail "the guest never sent its file"
[ "$got_md5" = "$up_md5" ] || fail "the file the guest sent differs: $got_md5, sent $up_md5 ($(wc -c <up) bytes)"
expect_console "^NET-ACK $up_md5\$" "the guest did not hear back from the outer machine"
expect_console '^TERN-INNER-RC=0' "the guest's commands failed"
