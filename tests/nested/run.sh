#!/bin/bash
# Run nested tests: boot the outer machine (QEMU TCG with nested SVM, Debian's
# cloud kernel) once, run the given tests inside it one after the other, and
# report.  See tests/nested/README.md.
#
# Usage: tests/nested/run.sh [OPTIONS] [TEST...]
#   TEST              a name from tests/nested/tests/ (NAME.sh); default: all
#   --tern PATH       tern binary to put in the outer machine (default: $TERN,
#                     else build/src/cmd/tern when it exists)
#   --bin PATH        another binary for the outer machine's /tern/bin
#   --shell           after the tests (none by default), a shell in the outer
#                     machine on this terminal; exit it to power off
#   --exec 'CMD'      after the tests (none by default), run CMD in the outer
#                     machine on this terminal (helpers of outer/lib.sh
#                     loaded), then power off (or open the --shell); e.g.
#                     --exec 'run_tern_linux --shell' shows the inner Linux
#   --no-qemu         no QEMU in the outer machine (smaller; no anchor tests)
#   --vmm tern|qemu   the VMM the linux-* tests boot (default tern); qemu
#                     checks the tests themselves against the anchor
#   --timeout SECS    overall limit; QEMU is killed past it (default 1200)
#   --test-timeout S  default per-test limit (default 300)
#   --stall SECS      a machine silent for SECS during a test is stuck: it is
#                     killed, the test tried again in a fresh machine (up to
#                     4 tries) and the remaining tests run there (default 150)
#   --memory SIZE     outer machine memory (default 4G)
#   --smp N           outer machine vCPUs (default 2)
#   --run-dir DIR     where this run's outer initrd, console log
#                     (outer-console.log) and metrics (metrics.txt) go
#                     (default tests/nested/work/run)
#   -q, --quiet       do not echo the outer console, only the summary
#   --list            list the tests and exit
# Exit status: 0 when every test passed (or skipped), 1 otherwise.
set -uo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
WORK=${TERN_NESTED_WORK:-$here/work}
export TERN_NESTED_WORK=$WORK

die() { echo "run.sh: $*" >&2; exit 2; }

tern=${TERN:-}
bins=()
shell=0
exec_cmd=
with_qemu=1
vmm=tern
overall=1200
test_timeout=300
stall=150
memory=4G
smp=2
rundir=$WORK/run
quiet=0
tests=()
while [ $# -gt 0 ]; do
    case $1 in
        --tern) tern=${2:?--tern needs a path}; shift 2 ;;
        --bin) bins+=(--bin "${2:?--bin needs a path}"); shift 2 ;;
        --shell) shell=1; shift ;;
        --exec) exec_cmd=${2:?--exec needs a command}; shift 2 ;;
        --no-qemu) with_qemu=0; shift ;;
        --vmm) vmm=${2:?--vmm needs tern or qemu}; shift 2
               case $vmm in tern|qemu) ;; *) die "--vmm: want tern or qemu, not '$vmm'" ;; esac ;;
        --timeout) overall=${2:?}; shift 2 ;;
        --test-timeout) test_timeout=${2:?}; shift 2 ;;
        --stall) stall=${2:?}; shift 2 ;;
        --memory) memory=${2:?}; shift 2 ;;
        --smp) smp=${2:?}; shift 2 ;;
        --run-dir) rundir=${2:?}; shift 2 ;;
        -q|--quiet) quiet=1; shift ;;
        --list) for t in "$here"/tests/*.sh; do basename "$t" .sh; done; exit 0 ;;
        -h|--help) sed -n '2,27p' "$0"; exit 0 ;;
        -*) die "unknown option '$1' (see --help)" ;;
        *) tests+=("${1%.sh}"); shift ;;
    esac
done

interactive=0
[ $shell = 0 ] && [ -z "$exec_cmd" ] || interactive=1
if [ ${#tests[@]} = 0 ] && [ $interactive = 0 ]; then
    for t in "$here"/tests/*.sh; do tests+=("$(basename "$t" .sh)"); done
fi
for t in ${tests[@]+"${tests[@]}"}; do
    [ -f "$here/tests/$t.sh" ] || die "no test '$t' (tests/nested/tests/$t.sh); --list shows them"
done

if [ -z "$tern" ] && [ -x "$repo/build/src/cmd/tern" ]; then
    tern=$repo/build/src/cmd/tern
fi
buildargs=()
if [ -n "$tern" ]; then
    [ -x "$tern" ] || die "tern binary '$tern' not found or not executable"
    tern=$(cd "$(dirname "$tern")" && pwd)/$(basename "$tern")
    buildargs+=(--tern "$tern")
else
    echo "run.sh: no tern binary (pass --tern PATH); tern tests will be skipped" >&2
fi
[ $with_qemu = 1 ] || buildargs+=(--no-qemu)

command -v qemu-system-x86_64 >/dev/null || die "qemu-system-x86_64 not found (package qemu-system-x86)"

mkdir -p "$WORK"
"$here/fetch.sh" || die "fetch.sh failed"
. "$WORK/kernel.env"

mkdir -p "$rundir" || die "cannot create $rundir"
rundir=$(cd "$rundir" && pwd)
initrd=$rundir/outer.cpio
log=$rundir/outer-console.log
metrics=$rundir/metrics.txt
t0=$(date +%s.%N)
"$here/build.sh" --out "$initrd" ${buildargs[@]+"${buildargs[@]}"} ${bins[@]+"${bins[@]}"} \
    --set "TESTS='${tests[*]-}'" --set "TEST_TIMEOUT=$test_timeout" --set "NESTED_SHELL=$shell" --set "NESTED_VMM=$vmm" \
    --set "NESTED_EXEC64=$(printf '%s' "$exec_cmd" | base64 -w0)" ||
    die "build.sh failed"
build_time=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.2f", b - a }')

qemu=(qemu-system-x86_64 -accel tcg,thread=multi -cpu EPYC,+svm,+npt
      -machine q35 -smp "$smp" -m "$memory"
      -nodefaults -no-user-config -no-reboot
      -kernel "$KERNEL" -initrd "$initrd")
# quiet: the outer console carries the protocol; panic=-1: a panic ends QEMU.
append="console=ttyS0 quiet panic=-1"

if [ $interactive = 1 ]; then
    echo "run.sh: this host's KVM cannot boot Linux directly: running in the nested harness (QEMU TCG outer machine, ready in about 10 s; Ctrl-A X kills it)" >&2
    exec "${qemu[@]}" -append "$append" -nographic -serial mon:stdio \
        2> >(grep --line-buffered -v "TCG doesn't support requested feature" >&2)
fi

# Seconds (1/100) since $1 (date +%s.%N), and a comparison, without bc.
since() { awk -v a="$1" -v b="$(date +%s.%N)" 'BEGIN { printf "%.2f", b - a }'; }
past() { awk -v a="$1" -v b="$2" 'BEGIN { exit !(a > b) }'; }

# stuck_report QEMU_PID CONSOLE_LOG: what a stuck outer machine was doing,
# into $rundir/stuck-N.txt (summary on stderr): the QEMU threads' CPU use
# (a TCG thread at 100% loops; all idle means every outer CPU waits), the
# outer CPUs' registers from QEMU's monitor, and the QEMU threads' stacks
# when gdb is there.
stuck_report() {
    local qpid=$1 blog=$2 n=1
    while [ -e "$rundir/stuck-$n.txt" ]; do n=$((n + 1)); done
    local out=$rundir/stuck-$n.txt
    {
        echo "== last console lines"; tail -n 5 "$blog" | tr -d '\r'
        echo "== QEMU threads, two samples 2 s apart"
        ps -L -o tid,pcpu,stat,time,wchan:24,comm -p "$qpid"; sleep 2
        ps -L -o tid,pcpu,stat,time,wchan:24,comm -p "$qpid"
        echo "== monitor"
        timeout 20 python3 - "$rundir/outer-monitor.sock" <<'PY'
import re, socket, sys
s = socket.socket(socket.AF_UNIX); s.settimeout(8); s.connect(sys.argv[1])
def cmd(c):
    buf = b""
    if c:
        s.sendall(c.encode() + b"\n")
    while not buf.endswith(b"(qemu) "):
        d = s.recv(65536)
        if not d:
            break
        buf += d
    text = re.sub(r"\x1b\[[0-9;]*[A-Za-z]", "", buf.decode(errors="replace"))
    print("\n".join(text.splitlines()[1:]))
cmd("")
for c in ("info cpus", "info registers -a", "x/6i $pc", "info lapic", "info pic"):
    try:
        print("--", c); cmd(c)
    except Exception as e:
        print("(no answer: %s)" % e)
PY
        if command -v gdb >/dev/null; then
            echo "== QEMU thread stacks"
            timeout 60 gdb -p "$qpid" -batch -ex "thread apply all bt 12" 2>/dev/null | grep -E '^(Thread|#)'
        fi
    } >"$out" 2>&1
    echo "run.sh: what the stuck machine was doing: $out" >&2
    sed -n '/== QEMU threads/,/== monitor/p' "$out" | head -n 12 >&2
    grep -E '^(RIP|EIP)=|^CPU#' "$out" | head -n 8 >&2
}

# boot_outer LOG LIMIT TEST...: boot the outer machine for TESTS, echo its
# console, and stop it past LIMIT seconds or when it is stuck: a test is
# running and the console stayed silent for $stall seconds (the outer init
# prints a heartbeat every 30 s while a test runs, so silence means the
# machine itself no longer runs, which its own per-test timeout cannot cure).
# Sets qrc, and bootstate=done|timeout|stuck.
boot_outer() {
    local blog=$1 limit=$2
    shift 2
    local list
    list=$(IFS=,; echo "$*")
    : >"$blog"
    echo "run.sh: booting the outer machine for: $* (log: $blog)" >&2
    local bstart seen=0 size last_size=-1 quiet_since
    bstart=$(date +%s.%N)
    quiet_since=$bstart
    rm -f "$rundir/outer-monitor.sock"
    "${qemu[@]}" -append "$append tern.tests=$list" -display none -serial "file:$blog" \
        -monitor "unix:$rundir/outer-monitor.sock,server=on,wait=off" </dev/null \
        2> >(grep --line-buffered -v "TCG doesn't support requested feature" >&2) &
    qpid=$!
    bootstate=done
    stuck_why=
    while :; do
        if [ -z "$ready_at" ] && grep -q '@@TERN-NESTED READY' "$blog"; then
            ready_at=$(since "$start")
        fi
        if [ $quiet = 0 ]; then
            n=$(wc -l <"$blog")
            if [ "$n" -gt "$seen" ]; then
                sed -n "$((seen + 1)),${n}p" "$blog" | tr -d '\r'
                seen=$n
            fi
        fi
        kill -0 $qpid 2>/dev/null || break
        size=$(stat -c %s "$blog")
        if [ "$size" != "$last_size" ]; then
            last_size=$size
            quiet_since=$(date +%s.%N)
        elif past "$(since "$quiet_since")" "$stall" &&
             [ "$(grep -ao '@@TERN-TEST [^ ]* [A-Z]*' "$blog" | tail -n 1 | cut -d' ' -f3)" = BEGIN ]; then
            bootstate=stuck
        elif past "$(since "$quiet_since")" "$((2 * stall))"; then
            bootstate=stuck     # silent between tests, or before the first
        fi
        # The outer kernel's soft-lockup watchdog keeps the console busy
        # (a line per CPU every ~28 s) while its CPUs are stuck and nothing
        # else runs: four such lines (about a minute) mean stuck too.
        if [ "$(grep -ac 'watchdog: BUG: soft lockup' "$blog")" -ge 4 ]; then
            bootstate=stuck
            stuck_why="reported soft lockups of its CPUs"
        fi
        if past "$(since "$bstart")" "$limit"; then
            bootstate=timeout
        fi
        if [ $bootstate != done ]; then
            if [ $bootstate = stuck ]; then
                echo "run.sh: the outer machine ${stuck_why:-printed nothing for ${stall}s during a test}: stuck; killing QEMU" >&2
                stuck_report $qpid "$blog"
            else
                echo "run.sh: overall timeout (${overall}s): killing QEMU" >&2
            fi
            kill $qpid 2>/dev/null
            sleep 1
            kill -9 $qpid 2>/dev/null
            break
        fi
        sleep 0.5
    done
    wait $qpid 2>/dev/null
    qrc=$?
    if [ $quiet = 0 ]; then
        sed -n "$((seen + 1)),\$p" "$blog" | tr -d '\r'
    fi
}

start=$(date +%s.%N)
ready_at=
declare -A result detail tried
for t in "${tests[@]}"; do result[$t]=; tried[$t]=0; done
todo=("${tests[@]}")
logs=()
boots=0
timedout=0
idle_retry=0
# A test that was running when the machine got stuck is tried again in a
# fresh machine after the others (up to 4 tries in all); whatever the last
# try says stands.
while [ ${#todo[@]} -gt 0 ]; do
    left=$(awk -v o="$overall" -v e="$(since "$start")" 'BEGIN { printf "%d", o - e }')
    if [ "$left" -le 30 ]; then
        timedout=1
        break
    fi
    boots=$((boots + 1))
    log=$rundir/outer-console.log
    [ $boots = 1 ] || log=$rundir/outer-console.$boots.log
    logs+=("$log")
    boot_outer "$log" "$left" "${todo[@]}"
    [ $bootstate = timeout ] && timedout=1
    # the outer kernel dying the way it gets stuck (recursive page faults
    # until the stack guard: tests/nested/README.md) is the same failure
    if [ $bootstate = done ] && grep -aq 'Kernel panic - not syncing' "$log"; then
        echo "run.sh: the outer machine's kernel panicked" >&2
        bootstate=stuck
    fi
    began=
    while IFS= read -r line; do
        line=${line#*@@TERN-TEST }
        set -- $line
        name=$1 what=$2
        case $what in
            BEGIN) began=$name; tried[$name]=$(( ${tried[$name]:-0} + 1 )) ;;
            PASS|FAIL|SKIP) result[$name]=$what; shift 2; detail[$name]="$*"; began=
                if [ "${tried[$name]}" -ge 2 ]; then
                    detail[$name]="${detail[$name]} (try ${tried[$name]}: an outer machine got stuck or panicked during the earlier one(s))"
                fi ;;
        esac
    done < <(tr -d '\r' <"$log" | grep -ao '@@TERN-TEST .*')
    [ $bootstate = timeout ] && break
    next=()
    for t in "${todo[@]}"; do
        [ -z "${result[$t]}" ] && [ "$t" != "$began" ] && next+=("$t")
    done
    if [ -n "$began" ]; then
        if [ $bootstate = stuck ] && [ "${tried[$began]}" -lt 4 ]; then
            echo "run.sh: $began was running when the outer machine got stuck or panicked; trying it again in a fresh machine" >&2
            next+=("$began")
        else
            result[$began]=FAIL
            detail[$began]="the outer machine got stuck or died during it (try ${tried[$began]}; see the outer console log)"
        fi
    fi
    # a machine that died before starting anything would die again; one
    # that got stuck before it gets one more chance
    if [ ${#next[@]} = ${#todo[@]} ] && [ -z "$began" ]; then
        [ $bootstate = stuck ] && [ $idle_retry = 0 ] || break
        idle_retry=1
    fi
    todo=("${next[@]+"${next[@]}"}")
done
total=$(since "$start")

# --- results ----------------------------------------------------------------
clean=$(cat "${logs[@]}" | tr -d '\r')
{
    [ -z "$ready_at" ] || echo "outer_start_to_ready $ready_at s"
    echo "outer_run_total $total s"
    grep -ao '@@TERN-METRIC .*' <<<"$clean" | while read -r _ m v u; do
        echo "$m $v $u"
    done
} >"$metrics"

pass=0 failn=0 skipn=0
echo
echo "=== nested tests ==="
for t in "${tests[@]}"; do
    r=${result[$t]:-}
    case $r in
        PASS) pass=$((pass + 1)) ;;
        SKIP) skipn=$((skipn + 1)) ;;
        FAIL) failn=$((failn + 1)) ;;
        *) failn=$((failn + 1)); r=FAIL; detail[$t]="never started" ;;
    esac
    printf '%-4s %-24s %s\n' "$r" "$t" "${detail[$t]:-}"
done
done_line=$(grep -o '@@TERN-NESTED DONE.*' <<<"$clean" | tail -n 1)
boot_line=$(grep -o '@@TERN-NESTED BOOTED.*' <<<"$clean" | tail -n 1)
ready_line=$(grep -o '@@TERN-NESTED READY.*' <<<"$clean" | tail -n 1)
echo "outer machine: initrd $(du -h "$initrd" | cut -f1) built in ${build_time}s;" \
     "ready ${ready_at:-never}s after start (guest: ${boot_line#@@TERN-NESTED BOOTED }, ${ready_line#@@TERN-NESTED READY });" \
     "total ${total}s; $boots boot(s); last QEMU exit ${qrc:-none}"
if [ -s "$metrics" ]; then
    echo "metrics ($metrics):"
    sed 's/^/  /' "$metrics"
fi
if [ -z "$done_line" ]; then
    echo "run.sh: the outer machine never reported DONE$( [ $timedout = 1 ] && echo " (overall timeout ${overall}s)")" >&2
    [ $failn -gt 0 ] || failn=1
fi
echo "$pass passed, $failn failed, $skipn skipped"
[ $failn = 0 ]
