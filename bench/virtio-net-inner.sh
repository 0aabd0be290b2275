#!/bin/sh
# bench/virtio-net-inner.sh SIZE_MIB ROUNDS "BACKENDS" BOOTS -- the inner half of
# bench/virtio-net.sh.  Runs in the nested harness's outer machine (busybox
# sh, /nested/lib.sh loaded).  For each back end (user, tap) it boots the
# inner Linux under tern and under QEMU/KVM (-device virtio-net-pci with the
# same kind of back end: -netdev user, or -netdev tap without vhost), BOOTS
# times each, alternating, and in each boot moves a SIZE_MIB file ROUNDS
# times each way over TCP with busybox wget and httpd:
#   down  host -> guest: the guest fetches from the outer machine's httpd
#         (timed in the guest)
#   up    guest -> host: the outer machine fetches from the guest's httpd
#         (timed in the outer machine; through a host forward with user)
# and prints:
#   @@BENCH run <backend> <vmm> <down|up> <round> <MB/s>
#   @@BENCH median <backend> <vmm> down=<MB/s> up=<MB/s>   (over all boots)
#   @@BENCH ratio <backend> tern/qemu down=<r> up=<r>
size=${1:-16}
rounds=${2:-3}
backends=${3:-user tap}
boots=${4:-2}
. /nested/lib.sh

HTTP_PORT=8590     # the outer machine's httpd
FWD_PORT=5590      # user: localhost -> the guest's httpd (8080)
ACK_FWD=5591       # user: localhost -> the guest's "done" listener (9000)
TAP=ternb0
work=/tmp/bench-net
rm -rf $work
mkdir -p $work/www
cd $work || exit 1
dd if=/dev/zero of=www/f bs=1048576 count="$size" 2>/dev/null
bytes=$((size * 1048576))
bad=0

median() {
    printf '%s\n' "$@" | sort -n | awk '{ a[NR] = $1 } END {
        if (NR == 0) print "none"; else if (NR % 2) print a[(NR + 1) / 2];
        else printf "%.2f\n", (a[NR / 2] + a[NR / 2 + 1]) / 2 }'
}

# MB/s for $bytes in $1 centiseconds
rate() {
    awk -v b=$bytes -v cs="$1" 'BEGIN { if (cs > 0) printf "%.2f\n", b / 1048576 / (cs / 100); else print "none" }'
}

# guest_script BACKEND: the inner guest's commands
guest_script() {
    if [ "$1" = user ]; then
        host=10.0.2.2
        netup='ip link set eth0 up
cat >/tmp/dhcp.sh <<EOS
#!/bin/sh
[ "\$1" = bound ] || exit 0
ip addr add "\$ip/\$mask" dev "\$interface"
ip route add default via "\$router" dev "\$interface"
EOS
chmod +x /tmp/dhcp.sh
udhcpc -i eth0 -n -q -t 10 -T 2 -s /tmp/dhcp.sh >/dev/null 2>&1 || { echo NET-NO-DHCP; exit 1; }'
    else
        host=10.0.3.1
        netup='ip addr add 10.0.3.2/24 dev eth0
ip link set eth0 up
i=0
until ping -c 1 -W 1 10.0.3.1 >/dev/null 2>&1; do
    i=$((i + 1)); [ $i -lt 120 ] || { echo NET-NO-PEER; exit 1; }; sleep 1
done'
    fi
    cat <<EOF
$netup
cs() { read -r u _ </proc/uptime; f=\${u#*.}; echo \$(( \${u%.*} * 100 + \${f#0} )); }
mkdir -p /tmp/www
dd if=/dev/zero of=/tmp/www/f bs=1048576 count=$size 2>/dev/null
httpd -p 8080 -h /tmp/www
r=1
while [ \$r -le $rounds ]; do
    t0=\$(cs)
    wget -q -O /dev/null http://$host:$HTTP_PORT/f || echo NET-WGET-FAILED
    t1=\$(cs)
    echo "NET-DOWN \$r \$((t1 - t0))"
    r=\$((r + 1))
done
mkfifo /tmp/hold
timeout 600 nc -l -p 9000 </tmp/hold >/tmp/done &
exec 3>/tmp/hold
echo NET-SERVING
wait \$!
echo NET-DONE
EOF
}

# one_boot BACKEND VMM: prints the @@BENCH run lines, collects medians
one_boot() {
    be=$1 vmm=$2
    guest_script "$be" >guest.sh
    httpd_pid=
    case $be/$vmm in
        user/tern) set -- -o net.0.backend=user \
                      -o "net.0.hostfwd=tcp:127.0.0.1:$FWD_PORT-:8080,tcp:127.0.0.1:$ACK_FWD-:9000" ;;
        user/qemu) set -- -netdev "user,id=n0,hostfwd=tcp:127.0.0.1:$FWD_PORT-:8080,hostfwd=tcp:127.0.0.1:$ACK_FWD-:9000" \
                      -device virtio-net-pci,netdev=n0 ;;
        tap/tern) set -- -o net.0.backend=tap -o net.0.tap=$TAP ;;
        tap/qemu) set -- -netdev tap,id=n0,ifname=$TAP,script=no,downscript=no,vhost=off \
                     -device virtio-net-pci,netdev=n0 ;;
    esac
    if [ "$be" = user ]; then
        httpd -f -p 127.0.0.1:$HTTP_PORT -h $work/www &
        httpd_pid=$!
        up_url=http://127.0.0.1:$FWD_PORT/f
        ack_addr="127.0.0.1 $ACK_FWD"
    else
        up_url=http://10.0.3.2:8080/f
        ack_addr="10.0.3.2 9000"
    fi
    rm -f console
    run_vm "$vmm" --timeout 900 --mem 512 --script guest.sh --out $work/console -- "$@" >/dev/null &
    vm_pid=$!
    if [ "$be" = tap ]; then
        i=0
        until ip link show $TAP >/dev/null 2>&1 || [ $i -ge 600 ]; do sleep 0.2; i=$((i + 1)); done
        ip addr add 10.0.3.1/24 dev $TAP
        ip link set $TAP up
        httpd -f -p 10.0.3.1:$HTTP_PORT -h $work/www &
        httpd_pid=$!
    fi
    i=0
    until grep -q NET-SERVING console 2>/dev/null || ! kill -0 $vm_pid 2>/dev/null || [ $i -ge 1800 ]; do
        sleep 0.5
        i=$((i + 1))
    done
    ups=
    if grep -q NET-SERVING console; then
        r=1
        while [ $r -le "$rounds" ]; do
            t0=$(now_cs)
            wget -q -O /dev/null "$up_url" || echo "@@BENCH wget from the guest failed ($be $vmm)"
            t1=$(now_cs)
            v=$(rate $((t1 - t0)))
            echo "@@BENCH run $be $vmm up $r $v"
            ups="$ups $v"
            r=$((r + 1))
        done
        i=0
        until echo done | timeout 10 nc $ack_addr 2>/dev/null || [ $i -ge 30 ]; do sleep 1; i=$((i + 1)); done
    fi
    wait $vm_pid
    [ -n "$httpd_pid" ] && kill $httpd_pid 2>/dev/null
    downs=
    for cs in $(tr -d '\r' <console | sed -n 's/^NET-DOWN [0-9]* \([0-9]*\)$/\1/p'); do
        v=$(rate "$cs")
        downs="$downs $v"
        echo "@@BENCH run $be $vmm down - $v"
    done
    if [ -z "$downs" ] || [ -z "$ups" ] || grep -q NET-WGET-FAILED console; then
        bad=1
        echo "@@BENCH failed $be $vmm; console tail:"
        tail -n 15 console | tr -d '\r' | sed 's/^/@@BENCH   /'
    fi
    eval "all_${be}_${vmm}_down=\"\$all_${be}_${vmm}_down $downs\" all_${be}_${vmm}_up=\"\$all_${be}_${vmm}_up $ups\""
}

for be in $backends; do
    b=1
    while [ $b -le "$boots" ]; do
        for vmm in tern qemu; do
            one_boot "$be" "$vmm"
        done
        b=$((b + 1))
    done
    for vmm in tern qemu; do
        eval "md=\$(median \$all_${be}_${vmm}_down) mu=\$(median \$all_${be}_${vmm}_up)"
        echo "@@BENCH median $be $vmm down=$md up=$mu"
        eval "m_${be}_${vmm}_down=$md m_${be}_${vmm}_up=$mu"
    done
    eval "td=\$m_${be}_tern_down tu=\$m_${be}_tern_up qd=\$m_${be}_qemu_down qu=\$m_${be}_qemu_up"
    awk -v b="$be" -v td="$td" -v tu="$tu" -v qd="$qd" -v qu="$qu" 'BEGIN {
        printf "@@BENCH ratio %s tern/qemu down=%s up=%s\n", b,
            (qd + 0 > 0 && td + 0 > 0) ? sprintf("%.2f", td / qd) : "none",
            (qu + 0 > 0 && tu + 0 > 0) ? sprintf("%.2f", tu / qu) : "none" }'
done
echo "@@BENCH done bad=$bad size=${size}MiB rounds=$rounds boots=$boots"
