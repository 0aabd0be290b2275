#!/bin/sh
# The Linux step of scripts/demo.sh, run where /dev/kvm can boot Linux: in
# the nested harness's outer machine (run.sh --bin this --exec), or directly
# on a host (TERN_DEMO_DIRECT=1, with TERN, INNER_KERNEL, INNER_INITRD set).
# Boots Debian's cloud kernel with the busybox initramfs under tern (2 vCPUs,
# 512 MiB, the boot console shown), runs a few commands at a shell prompt,
# powers off.  DEMO_SHELL=1: an interactive shell in the guest instead.
# Then the snapshot step: Linux boots again (2 vCPUs, 256 MiB, a control
# socket) and counts on its console; at 10 it is paused, saved with
# ternctl, and tern is killed with SIGKILL; the file is inspected and
# restored with `tern restore`, and the guest counts on to 40 and powers
# off. The last line is the verdict, read from the two consoles: every
# number from 1 to 40 once and in order, the restored guest not booted again.
TERN=${TERN:-tern}
INNER_KERNEL=${INNER_KERNEL:-/inner/bzImage}
INNER_INITRD=${INNER_INITRD:-/inner/initrd.cpio.gz}
cmds='for c in "uname -a" "grep processor /proc/cpuinfo" "free -m" "cat /proc/cmdline"; do
  echo "~ # $c"; sh -c "$c"; done'
cmdline="console=ttyS0 panic=-1 tern.cmd64=$(printf '%s\n' "$cmds" | base64 | tr -d '\n')"
[ "${DEMO_SHELL:-0}" = 1 ] && cmdline="$cmdline tern.shell"
echo "demo: $TERN -o kernel=$INNER_KERNEL -o initrd=$INNER_INITRD -o cpus=2 -o memory.size=512M -o cmdline='console=ttyS0 ...'"
"$TERN" -o kernel="$INNER_KERNEL" -o initrd="$INNER_INITRD" -o cpus=2 -o memory.size=512M \
    -o "cmdline=$cmdline" $( [ "${DEMO_SHELL:-0}" = 1 ] || echo -o console.input=off )
echo "demo: tern exited with status $? (0: the guest powered off)"

# --- snapshot and restore of the running Linux guest ---
case $TERN in
    */*) TERNCTL=${TERNCTL:-${TERN%/*}/ternctl} ;;
    *) TERNCTL=${TERNCTL:-ternctl} ;;
esac
T=$(mktemp -d /tmp/tern-demo-linux.XXXXXX) || exit 1
SOCK=$T/vm.sock
SNAP=$T/linux.snap
LAST=40
cr=$(printf '\r')
# The consoles, shown as they come, one prefixed line each.
show() {
    while IFS= read -r l; do printf '  %-9s| %s\n' "$1" "${l%"$cr"}"; done
    [ -z "$l" ] || printf '  %-9s| %s\n' "$1" "${l%"$cr"}"
}
pid=
# A failure ends the step, and the VM if it is still there.
die() {
    echo "demo: FAIL: $*"
    [ -z "$pid" ] || kill -9 "$pid" 2>/dev/null
    exit 1
}
counters() { cat "$@" 2>/dev/null | tr -d '\r' | sed -n 's/^counter \([0-9]*\)$/\1/p'; }

count="i=0; while [ \$i -lt $LAST ]; do i=\$((i + 1)); echo \"counter \$i\"; usleep 300000; done"
cmdline="console=ttyS0 quiet panic=-1 tern.cmd64=$(printf '%s\n' "$count" | base64 | tr -d '\n')"
echo "demo: snapshot and restore of a running Linux: booting it again under tern with a control socket;"
echo "demo: its init runs: $count"
echo "demo: $TERN -o kernel=... -o initrd=... -o cpus=2 -o memory.size=256M -o console.input=off -o control.path=$SOCK"
# tern in the background of a subshell that does not wait for it: no shell
# reports its SIGKILL into the console captured in console1.
{ "$TERN" -o kernel="$INNER_KERNEL" -o initrd="$INNER_INITRD" -o cpus=2 -o memory.size=256M \
    -o "cmdline=$cmdline" -o console.input=off -o control.path="$SOCK" </dev/null 2>&1 &
} | tee "$T/console1" | show running &
shown=$!
i=0
until counters "$T/console1" | grep -qx 10; do
    i=$((i + 1))
    if [ $i -ge 3000 ] || ! kill -0 $shown 2>/dev/null; then
        pid=$("$TERNCTL" -s "$SOCK" --json status 2>/dev/null | sed -n 's/.*"pid": *\([0-9]*\).*/\1/p')
        die "the guest never counted to 10 (tern $([ -n "$pid" ] && echo 'still runs' || echo 'has exited'))"
    fi
    sleep 0.1
done
pid=$("$TERNCTL" -s "$SOCK" --json status | sed -n 's/.*"pid": *\([0-9]*\).*/\1/p')
[ -n "$pid" ] || die "ternctl status gave no pid"
echo "demo: the counter passed 10: $TERNCTL -s $SOCK pause"
"$TERNCTL" -s "$SOCK" pause || die "ternctl pause failed"
echo "demo: $TERNCTL -s $SOCK snapshot save $SNAP"
"$TERNCTL" -s "$SOCK" --json snapshot save "$SNAP" >"$T/save.json" 2>"$T/save.err" ||
    { cat "$T/save.err"; die "ternctl snapshot save failed"; }
ms=$(sed -n 's/.*"total_ms": *\([0-9]*\).*/\1/p' "$T/save.json")
data=$(sed -n 's/.*"data_bytes": *\([0-9]*\).*/\1/p' "$T/save.json")
echo "demo: saved in ${ms:-?} ms ($(( ${data:-0} >> 20 )) MiB of RAM data; zero pages are holes); kill -9 $pid"
kill -9 "$pid"
wait $shown
n=$(counters "$T/console1" | tail -n 1)
echo "demo: tern is gone (SIGKILL); the guest had printed up to \"counter $n\" and now lives only in the snapshot file:"
echo "demo: $TERNCTL snapshot inspect $SNAP"
"$TERNCTL" snapshot inspect "$SNAP" | sed -n '/^file size:/p;/^written by:/p;/^ram:/p;/^sections/,/^$/p' |
    sed '/^$/d; s/^/  /'
echo "demo: $TERN restore $SNAP"
{ "$TERN" restore "$SNAP" -o control.path="$T/vm2.sock" </dev/null 2>&1
  echo $? >"$T/rc2"; } | tee "$T/console2" | show restored
rc=$(cat "$T/rc2")
echo "demo: the restored tern exited with status $rc (0: the guest powered off)"

# The verdict, from the consoles: 1..LAST once each and in order across the
# two runs (a line cut by the pause is completed by the restored guest), and
# the restored guest did not boot again.
want=$(seq 1 $LAST | tr '\n' ' ')
got=$(cat "$T/console1" "$T/console2" | tr -d '\r' | sed -n 's/^counter \([0-9]*\)$/\1/p' | tr '\n' ' ')
first=$(counters "$T/console2" | head -n 1)
if [ "$rc" = 0 ] && [ "$got" = "$want" ] && ! grep -q TERN-INNER-INIT "$T/console2" && [ -n "$first" ] && [ "$first" -gt 1 ]; then
    echo "demo: OK: the restored Linux carried on from counter $n to $LAST: no gap, no repeat, no reboot"
    rm -rf "$T"
else
    echo "demo: FAIL: the counter did not carry on (exit status $rc; counters seen: $got; files in $T)"
    exit 1
fi
# --- hook: later demo steps that need a Linux guest go here ---
