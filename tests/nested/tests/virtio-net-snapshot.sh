# virtio-net across a snapshot (tern only): a guest on user-mode networking
# gets its address by DHCP and fetches a file; tern saves it to a snapshot
# and exits; `tern restore` brings it back (a fresh slirp), and the restored
# guest, still configured, fetches another file from the outer machine and
# receives one through a host forward.  Checksums match.
# timeout: 420
. /nested/lib.sh
[ "$NESTED_VMM" = tern ] || skip "tern only (snapshot and restore)"
need_vmm

FWD_PORT=5584
HTTP_PORT=8584
SNAP=$PWD/net.snap
SOCK=$PWD/vm.sock

mkdir -p www
dd if=/dev/urandom of=www/a bs=1024 count=256 2>/dev/null
dd if=/dev/urandom of=www/b bs=1024 count=256 2>/dev/null
dd if=/dev/urandom of=up bs=1024 count=128 2>/dev/null
a_md5=$(md5sum <www/a | cut -d' ' -f1)
b_md5=$(md5sum <www/b | cut -d' ' -f1)
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
EOS
chmod +x /tmp/dhcp.sh
udhcpc -i eth0 -n -q -t 10 -T 2 -s /tmp/dhcp.sh >/dev/null 2>&1 || { echo NET-DHCP-FAILED; exit 1; }
wget -q -O /tmp/a http://10.0.2.2:$HTTP_PORT/a || { echo NET-WGET-A-FAILED; exit 1; }
echo "NET-A \$(md5sum </tmp/a | cut -d' ' -f1)"
echo NET-SNAPSHOT-NOW
# /go exists only once the outer machine has restored the snapshot
i=0
until wget -q -O /tmp/go http://10.0.2.2:$HTTP_PORT/go 2>/dev/null; do
    i=\$((i + 1))
    [ \$i -lt 600 ] || { echo NET-NO-GO; exit 1; }
    sleep 1
done
echo "NET-RESTORED after \$i tries"
wget -q -O /tmp/b http://10.0.2.2:$HTTP_PORT/b || { echo NET-WGET-B-FAILED; exit 1; }
echo "NET-B \$(md5sum </tmp/b | cut -d' ' -f1)"
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
echo "NET-UP \$(md5sum </tmp/up | cut -d' ' -f1)"
EOF

run_linux --timeout 300 --script guest.sh --out "$PWD/console1" -- -o net.0.backend=user \
    -o "net.0.hostfwd=tcp::$FWD_PORT-:8080" -o "control.path=$SOCK" &
vm_pid=$!
i=0
until grep -q NET-SNAPSHOT-NOW console1 2>/dev/null; do
    i=$((i + 1))
    if [ $i -ge 600 ] || ! kill -0 $vm_pid 2>/dev/null; then
        wait $vm_pid
        CONSOLE=$PWD/console1
        show_console
        fail "the guest never got ready for the snapshot"
    fi
    sleep 0.5
done
sleep 2   # let it poll for /go a few times: connections in flight
ternctl -s "$SOCK" snapshot save "$SNAP" --exit || fail "ternctl snapshot save failed"
wait $vm_pid
CONSOLE=$PWD/console1
expect_console "^NET-A $a_md5" "the first file differs (or never came)"
: >www/go

timeout 300 tern restore "$SNAP" >console2 2>&1 &
rpid=$!
sent=0
i=0
while kill -0 $rpid 2>/dev/null && [ $i -lt 300 ]; do
    if [ $sent -lt 5 ] && grep -q NET-LISTENING console2 && ! grep -q NET-UP console2; then
        timeout 30 nc 127.0.0.1 $FWD_PORT <up && sent=$((sent + 1))
        sleep 3
    fi
    sleep 1
    i=$((i + 1))
done
wait $rpid
rc=$?
CONSOLE=$PWD/console2
tr -d '\r' <console2 | grep -E '^NET-|TERN-INNER-RC' | sed 's/^/  /'
expect_console '^NET-RESTORED' "the restored guest never reached the outer machine"
expect_console "^NET-B $b_md5" "the file fetched after the restore differs (or never came)"
expect_console "^NET-UP $up_md5" "the file sent through the forward after the restore differs"
expect_console '^TERN-INNER-RC=0' "the restored guest's commands failed"
[ $rc = 0 ] || fail "tern restore exited with status $rc"
