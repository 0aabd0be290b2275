# virtio-net with the user-mode back end (libslirp): the guest gets its
# address by DHCP (udhcpc), fetches a file from an HTTP server on the outer
# machine through the gateway 10.0.2.2 (the outer machine's loopback), and
# receives a file the outer machine sends to localhost:5580, which a host
# forward takes to the guest's port 8080, and fetches a file from the
# guest's HTTP server through a second forward (the guest sending whole
# frames of up to the MTU).  Checksums match every way.
# Under tern the link's MTU is 65520, offered by virtio-net (net.N.mtu).
# timeout: 420
. /nested/lib.sh
need_vmm

FWD_PORT=5580
SERVE_PORT=5581
HTTP_PORT=8580

mkdir -p www
dd if=/dev/urandom of=www/blob bs=1024 count=512 2>/dev/null
dd if=/dev/urandom of=up bs=1024 count=256 2>/dev/null
down_md5=$(md5sum <www/blob | cut -d' ' -f1)
up_md5=$(md5sum <up | cut -d' ' -f1)
httpd -f -p 127.0.0.1:$HTTP_PORT -h "$PWD/www" &
httpd_pid=$!
trap 'kill $httpd_pid 2>/dev/null' EXIT

cat >guest.sh <<EOF
ip link set eth0 up
cat >/tmp/dhcp.sh <<'EOS'
#!/bin/sh
[ "\$1" = bound ] || exit 0
ip addr add "\$ip/\$mask" dev "\$interface"
ip route add default via "\$router" dev "\$interface"
echo "NET-DHCP ip=\$ip mask=\$mask router=\$router dns=\$dns"
EOS
chmod +x /tmp/dhcp.sh
udhcpc -i eth0 -n -q -t 10 -T 2 -s /tmp/dhcp.sh || { echo NET-DHCP-FAILED; exit 1; }
echo "NET-MAC \$(cat /sys/class/net/eth0/address)"
echo "NET-FEATURES \$(cat /sys/class/net/eth0/device/features 2>/dev/null)"
echo "NET-MTU \$(cat /sys/class/net/eth0/mtu)"
wget -q -O /tmp/blob http://10.0.2.2:$HTTP_PORT/blob || { echo NET-WGET-FAILED; exit 1; }
echo "NET-DOWN \$(md5sum </tmp/blob | cut -d' ' -f1)"
mkdir -p /tmp/www
dd if=/dev/urandom of=/tmp/www/f bs=1024 count=768 2>/dev/null
echo "NET-SERVE \$(md5sum </tmp/www/f | cut -d' ' -f1)"
httpd -p 8081 -h /tmp/www
# busybox nc ends at EOF on its stdin: give the listener one that stays open
mkfifo /tmp/hold
nc -l -p 8080 </tmp/hold >/tmp/up &
exec 3>/tmp/hold
sleep 1
echo NET-LISTENING
i=0
while [ \$i -lt 120 ]; do
    [ "\$(md5sum </tmp/up | cut -d' ' -f1)" = $up_md5 ] && break
    sleep 1
    i=\$((i + 1))
done
echo "NET-UP \$(md5sum </tmp/up | cut -d' ' -f1) \$(wc -c </tmp/up)"
EOF

case $NESTED_VMM in
    tern) set -- -o net.0.backend=user -o "net.0.hostfwd=tcp::$FWD_PORT-:8080,tcp::$SERVE_PORT-:8081" ;;
    qemu) set -- -netdev "user,id=n0,hostfwd=tcp::$FWD_PORT-:8080,hostfwd=tcp::$SERVE_PORT-:8081" \
              -device virtio-net-pci,netdev=n0 ;;
esac
run_linux --timeout 360 --script guest.sh --out "$PWD/console" -- "$@" &
vm_pid=$!

# Send once the guest listens; again if a try went nowhere (slirp takes the
# connection even when nothing listens in the guest yet).
sent=0
fetched=
i=0
while kill -0 $vm_pid 2>/dev/null && [ $i -lt 300 ]; do
    if [ $sent -lt 5 ] && grep -q NET-LISTENING console 2>/dev/null &&
       ! grep -q NET-UP console 2>/dev/null; then
        [ -n "$fetched" ] || { timeout 60 wget -q -O served http://127.0.0.1:$SERVE_PORT/f &&
            fetched=$(md5sum <served | cut -d' ' -f1); }
        timeout 30 nc 127.0.0.1 $FWD_PORT <up && sent=$((sent + 1))
        sleep 3
    fi
    sleep 1
    i=$((i + 1))
done
wait $vm_pid
CONSOLE=$PWD/console
tr -d '\r' <console | grep -E '^NET-|TERN-INNER-RC' | sed 's/^/  /'
expect_console '^NET-DHCP ip=10\.0\.2\.15 mask=24 router=10\.0\.2\.2 dns=10\.0\.2\.3' \
    "the guest did not get 10.0.2.15/24 with router 10.0.2.2 and DNS 10.0.2.3 by DHCP"
expect_console "^NET-DOWN $down_md5\$" "the file fetched from the outer machine differs (or never came)"
expect_console "^NET-UP $up_md5 262144\$" "the file sent through the host forward differs (or never came)"
expect_console '^TERN-INNER-RC=0' "the guest's commands failed"
served=$(tr -d '\r' <console | sed -n 's/^NET-SERVE \([0-9a-f]*\)$/\1/p')
[ -n "$served" ] && [ "$fetched" = "$served" ] ||
    fail "the file fetched from the guest's HTTP server through the forward differs (or never came): '$fetched', want '$served'"
if [ "$NESTED_VMM" = tern ]; then
    expect_console '^NET-MTU 65520$' "the guest's eth0 did not take the 65520-byte MTU virtio-net offers"
fi
echo "sent through the forward $sent time(s)"
