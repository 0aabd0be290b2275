#!/bin/sh
# bench/virtio-blk-inner.sh ROUNDS "FORMATS" -- the inner half of
# bench/virtio-blk.sh.  Runs in the nested harness's outer machine (busybox
# sh, /nested/lib.sh loaded): for each image format and round, boots the
# inner Linux once under tern and once under QEMU/KVM (alternating, each on a
# fresh 1 GiB image in the outer machine's tmpfs) and runs the same busybox
# disk workload in the guest:
#   seqwrite   dd 256 x 1 MiB, O_DIRECT, then fsync
#   seqread    dd 256 x 1 MiB, O_DIRECT
#   write4k    dd 4096 x 4 KiB, O_DIRECT (one request at a time)
#   read4k     dd 4096 x 4 KiB, O_DIRECT
#   randread   256 dd processes, each one 4 KiB O_DIRECT read at a random
#              offset in the first 256 MiB (includes process start-up)
#   randwrite  the same, writing
# Prints:
#   @@BENCH run <vmm> <fmt> <round> <test> bytes=<n> ops=<n> cs=<centiseconds>
#   @@BENCH median <fmt> <test> tern=<MB/s or op/s> qemu=<...> unit=<u> ratio=<tern/qemu>
#   @@BENCH done bad=<0|1>
rounds=${1:-3}
formats=${2:-raw}
. /nested/lib.sh

cat >guest.sh <<'EOF'
now() { read -r u _ </proc/uptime; s=${u%.*}; f=${u#*.}; echo $((s * 100 + ${f#0})); }
run() {   # name bytes ops command...
    name=$1 bytes=$2 ops=$3
    shift 3
    t0=$(now)
    "$@" || { echo "@@R $name failed"; return; }
    t1=$(now)
    echo "@@R $name bytes=$bytes ops=$ops cs=$((t1 - t0))"
}
randloop() {   # read|write
    i=0
    while [ $i -lt 256 ]; do
        b=$((RANDOM * 2))
        if [ "$1" = read ]; then
            dd if=/dev/vda of=/dev/null bs=4k count=1 skip=$b iflag=direct 2>/dev/null || return 1
        else
            dd if=/dev/zero of=/dev/vda bs=4k count=1 seek=$b oflag=direct 2>/dev/null || return 1
        fi
        i=$((i + 1))
    done
}
run seqwrite 268435456 256 dd if=/dev/zero of=/dev/vda bs=1M count=256 oflag=direct conv=fsync 2>/dev/null
run seqread 268435456 256 dd if=/dev/vda of=/dev/null bs=1M count=256 iflag=direct 2>/dev/null
run write4k 16777216 4096 dd if=/dev/zero of=/dev/vda bs=4k count=4096 seek=8192 oflag=direct 2>/dev/null
run read4k 16777216 4096 dd if=/dev/vda of=/dev/null bs=4k count=4096 iflag=direct 2>/dev/null
run randread 1048576 256 randloop read
run randwrite 1048576 256 randloop write
EOF

bad=0
results=results.txt
: >$results
for fmt in $formats; do
    r=1
    while [ $r -le "$rounds" ]; do
        for vmm in tern qemu; do
            rm -f disk.img
            case $fmt in
                raw) truncate -s 1G disk.img ;;
                *) if command -v tern-img >/dev/null 2>&1; then
                       tern-img create -f "$fmt" disk.img 1G >/dev/null
                   else
                       qemu-img create -f "$fmt" disk.img 1G >/dev/null
                   fi ;;
            esac
            case $vmm in
                tern) set -- -o "disk.0.path=$PWD/disk.img" -o "disk.0.format=$fmt" ;;
                qemu) set -- -drive "file=$PWD/disk.img,format=$fmt,if=none,id=d0" \
                             -device virtio-blk-pci,drive=d0 ;;
            esac
            run_vm $vmm --timeout 600 --mem 256 --cpus 1 --script guest.sh -- "$@" >/dev/null
            if [ "$VM_RC" != 0 ] || ! grep -q '^@@R randwrite bytes' "$CONSOLE"; then
                echo "@@BENCH failed $vmm $fmt round $r (exit $VM_RC)"
                tr -d '\r' <"$CONSOLE" | tail -n 20
                bad=1
            fi
            tr -d '\r' <"$CONSOLE" | sed -n 's/^@@R \([a-z0-9]*\) \(bytes=.*\)/\1 \2/p' |
                while read -r t rest; do
                    echo "@@BENCH run $vmm $fmt $r $t $rest"
                    echo "$vmm $fmt $t $rest" >>$results
                done
        done
        r=$((r + 1))
    done
done

# Medians per format and test: MB/s for the sequential tests, op/s for the
# others; ratio tern/qemu (higher is better for tern).
for fmt in $formats; do
    for t in seqwrite seqread write4k read4k randread randwrite; do
        awk -v fmt="$fmt" -v t="$t" '
            function med(a, n,   i, j, x) {
                for (i = 2; i <= n; i++) { x = a[i]; for (j = i - 1; j >= 1 && a[j] > x; j--) a[j + 1] = a[j]; a[j + 1] = x }
                return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
            }
            $2 == fmt && $3 == t {
                split($4, b, "="); split($5, o, "="); split($6, c, "=")
                if (c[2] <= 0) c[2] = 1
                if (t ~ /^seq/) v = b[2] / 1048576 / (c[2] / 100); else v = o[2] / (c[2] / 100)
                if ($1 == "tern") tv[++nt] = v; else qv[++nq] = v
            }
            END {
                if (!nt || !nq) { printf "@@BENCH median %s %s missing\n", fmt, t; exit }
                mt = med(tv, nt); mq = med(qv, nq)
                unit = "op/s"
                if (t ~ /^seq/) unit = "MB/s"
                ratio = 0
                if (mq > 0) ratio = mt / mq
                printf "@@BENCH median %s %s tern=%.1f qemu=%.1f unit=%s ratio=%.2f\n", fmt, t, mt, mq, unit, ratio
            }' $results
    done
done
echo "@@BENCH done bad=$bad"
