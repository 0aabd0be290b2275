#!/bin/sh
# bench/linux-boot-inner.sh RUNS MEM_MIB CPUS -- the inner half of
# bench/linux-boot.sh.  Runs in the nested harness's outer machine (busybox
# sh, /nested/lib.sh loaded): boots the inner Linux RUNS times under tern and
# RUNS times under QEMU/KVM, alternating, and prints one line per boot and
# the medians:
#   @@BENCH run <vmm> <n> marker=<s> total=<s> guest_init=<s> rc=<status> [host=<s>]
#   @@BENCH median <vmm> marker=<s> total=<s> guest_init=<s> [host=<s>]
#   @@BENCH ratio tern/qemu marker=<r> guest_only=<r>
# host= is tern's own start-up (TERN_LOG=debug: until its vCPUs start);
# guest_only is what the ratio would be if that took no time at all: the
# guest kernel's run under tern (marker - host) against QEMU's marker.
runs=${1:-5}
mem=${2:-256}
cpus=${3:-1}
. /nested/lib.sh
export TERN_LOG=debug   # tern's start-up steps, timed (QEMU ignores it)

# Median of the arguments (decimal seconds).
median() {
    printf '%s\n' "$@" | sort -n | awk '{ a[NR] = $1 } END {
        if (NR == 0) print "none"; else if (NR % 2) print a[(NR + 1) / 2];
        else printf "%.2f\n", (a[NR / 2] + a[NR / 2 + 1]) / 2 }'
}

tm='' tt='' tg='' th='' tk='' qm='' qt='' qg='' bad=0
i=1
while [ $i -le "$runs" ]; do
    for vmm in tern qemu; do
        run_vm $vmm --timeout 180 --mem "$mem" --cpus "$cpus" --cmds true >/dev/null
        host=
        [ $vmm = tern ] && host=$(tr -d '\r' <"$CONSOLE" |
            sed -n 's/^tern: \([0-9.]*\) ms: vm: debug: .* started.*/\1/p' | head -n 1)
        [ -n "$host" ] && host=$(awk -v ms="$host" 'BEGIN { printf "%.2f", ms / 1000 }')
        echo "@@BENCH run $vmm $i marker=${VM_MARKER:-none} total=$VM_TOTAL guest_init=${VM_GUEST_INIT:-none} rc=$VM_RC${host:+ host=$host}"
        if [ -z "$VM_MARKER" ] || [ "$VM_RC" != 0 ]; then
            bad=1
            tail -n 20 "$CONSOLE"
            continue
        fi
        case $vmm in
            tern) tm="$tm $VM_MARKER" tt="$tt $VM_TOTAL" tg="$tg $VM_GUEST_INIT"
                  [ -n "$host" ] && th="$th $host" &&
                      tk="$tk $(awk -v m="$VM_MARKER" -v h="$host" 'BEGIN { printf "%.2f", m - h }')" ;;
            qemu) qm="$qm $VM_MARKER" qt="$qt $VM_TOTAL" qg="$qg $VM_GUEST_INIT" ;;
        esac
    done
    i=$((i + 1))
done
mt=$(median $tm)
mq=$(median $qm)
mk=$(median $tk)
echo "@@BENCH median tern marker=$mt total=$(median $tt) guest_init=$(median $tg) host=$(median $th) guest=$mk"
echo "@@BENCH median qemu marker=$mq total=$(median $qt) guest_init=$(median $qg)"
awk -v t="$mt" -v q="$mq" -v k="$mk" 'BEGIN { if (t + 0 > 0 && q + 0 > 0)
    printf "@@BENCH ratio tern/qemu marker=%.3f guest_only=%.3f\n", t / q, k / q }'
echo "@@BENCH done bad=$bad"
