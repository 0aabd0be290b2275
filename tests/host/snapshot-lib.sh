# Shared by the snapshot-*.sh host tests. Usage in a test:
#   . snapshot-lib.sh TERN TERNCTL DIRTY_GUEST SNAPSHOT_TOOL FIXTURE
# The dirty guest runs `passes=400 window=16M progress=1`: it prints
# "dirty: pass K" after each pass and "dirty: OK" after checking all of its
# RAM at the end (exit status 0 through the test-exit port). A restored
# guest must carry on from where it was saved: no "dirty: start", no
# "dirty: pass 1", and every pass up to 400 exactly once across the two
# console files.
set -u
TERN=$1 TERNCTL=$2 GUEST=$3 TOOL=$4 FIXTURE=$5
T=$(mktemp -d /tmp/tern-snapshot-test.XXXXXX)
PIDS=()
PASSES=400
STEP=1        # the guest prints every STEP-th pass (progress=STEP)
cleanup() {
	for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null; done
	rm -rf "$T"
}
trap cleanup EXIT

fail() {
	echo "FAIL: $*"
	for f in "$T"/*.log "$T"/*.console; do [ -f "$f" ] && { echo "--- $f:"; tail -5 "$f"; }; done
	exit 1
}

# start_vm NAME [-o ...]: the dirty guest in the background, console in
# $T/NAME.console, socket $T/NAME.sock; pid in VM_PID; waits for the socket.
start_vm() {
	local name=$1
	shift
	"$TERN" -o kernel="$GUEST" -o "cmdline=passes=$PASSES window=16M progress=1" -o memory.size=96M \
		-o cpus=2 -o test_exit.enable=on -o console.path="$T/$name.console" \
		-o control.path="$T/$name.sock" "$@" </dev/null >>"$T/$name.log" 2>&1 &
	VM_PID=$!
	PIDS+=("$VM_PID")
	wait_socket "$T/$name.sock" "$VM_PID"
}

# restore_vm NAME FILE [tern restore options]: in the background, as start_vm
restore_vm() {
	local name=$1 file=$2
	shift 2
	"$TERN" restore "$file" -o console.path="$T/$name.console" -o control.path="$T/$name.sock" \
		"$@" </dev/null >>"$T/$name.log" 2>&1 &
	VM_PID=$!
	PIDS+=("$VM_PID")
}

wait_socket() {
	for _ in $(seq 400); do
		"$TERNCTL" -s "$1" status >/dev/null 2>&1 && return 0
		kill -0 "$2" 2>/dev/null || fail "tern exited before answering on $1"
		sleep 0.025
	done
	fail "no answer on $1 after 10 s"
}

ctl() {
	local sock=$1
	shift
	"$TERNCTL" -t 60 -s "$sock" "$@"
}

# last_pass CONSOLE: the last "dirty: pass K" number printed (0 if none),
# from whole lines only: a VM killed mid-line leaves "dirty: pass 4" of
# "dirty: pass 45" without its newline
last_pass() {
	local k
	local drop=0
	[ -n "$(tail -c 1 "$1" 2>/dev/null)" ] && drop=1   # no newline at the end
	k=$(head -n -$drop "$1" 2>/dev/null | grep -aoE '^dirty: pass [0-9]+$' | tail -1 | awk '{print $3}')
	echo "${k:-0}"
}

# wait_pass CONSOLE K: until the guest has printed pass K or later
wait_pass() {
	for _ in $(seq 1000); do
		[ "$(last_pass "$1")" -ge "$2" ] && return 0
		sleep 0.01
	done
	fail "$1 never reached pass $2"
}

# wait_exit PID: its exit status goes to STATUS (at most 120 s)
wait_exit() {
	local pid=$1
	for _ in $(seq 2400); do
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.05
	done
	kill -0 "$pid" 2>/dev/null && fail "tern $pid still running after 120 s"
	wait "$pid"
	STATUS=$?
}

# check_finished CONSOLE: the guest printed its last pass and OK
check_finished() {
	grep -aq '^dirty: OK$' "$1" || fail "$1: no \"dirty: OK\""
	grep -aq "^dirty: pass $PASSES\$" "$1" || fail "$1: pass $PASSES missing"
	grep -aq 'BAD' "$1" && fail "$1: the guest found damage"
	return 0
}

# check_continued CONSOLE FIRST: a restored guest's console: it did not
# start over, and its passes run from FIRST (the pass after the snapshot)
# to the end without a gap or repeat
check_continued() {
	local console=$1 first=$2
	check_finished "$console"
	grep -aq '^dirty: start' "$console" && fail "$console: the restored guest started over"
	local want=$first k
	while read -r k; do
		[ "$k" = "$want" ] || fail "$console: pass $k where pass $want was due"
		want=$((want + STEP))
	done < <(grep -aoE '^dirty: pass [0-9]+$' "$console" | awk '{print $3}')
	[ "$want" = $((PASSES + STEP)) ] || fail "$console: passes end at $((want - STEP))"
}

# saved_pass FILE: the pass the guest had completed when FILE was saved,
# taken from where the restored copy starts counting (see check_continued);
# the original console had printed at most that many
first_pass_of() {
	grep -aoE '^dirty: pass [0-9]+$' "$1" | head -1 | awk '{print $3}'
}

# check_whole FILE...: the consoles, one after the other, hold one run of the
# guest: one start, every pass from 1 to the end exactly once, then OK (a
# line cut by the snapshot continues in the next file)
check_whole() {
	local all=$T/whole.txt want=1 k
	cat "$@" >"$all"
	[ "$(grep -ac '^dirty: start' "$all")" = 1 ] || fail "$*: not exactly one start"
	while read -r k; do
		[ "$k" = "$want" ] || fail "$*: pass $k where pass $want was due"
		want=$((want + 1))
	done < <(grep -aoE '^dirty: pass [0-9]+$' "$all" | awk '{print $3}')
	[ "$want" = $((PASSES + 1)) ] || fail "$*: passes end at $((want - 1))"
	grep -aq '^dirty: OK$' "$all" || fail "$*: no OK"
}
