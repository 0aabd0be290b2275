# Shared by the control-*.sh host tests. Usage in a test:
#   . control-lib.sh TERN TERNCTL DIRTY_GUEST
# The dirty guest with passes=0 progress=1 runs for ever and prints a line
# per pass, so its console file grows while the VM runs and stops growing
# while it is paused.
set -u
TERN=$1 TERNCTL=$2 GUEST=$3
T=$(mktemp -d /tmp/tern-control-test.XXXXXX)
PIDS=()
cleanup() {
	for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null; done
	rm -rf "$T"
}
trap cleanup EXIT

fail() {
	echo "FAIL: $*"
	for f in "$T"/*.log; do [ -f "$f" ] && { echo "--- $f:"; tail -20 "$f"; }; done
	exit 1
}

# start_vm SOCKET CONSOLE [-o ...]: start tern in the background (pid in
# VM_PID) and wait until it answers on its socket.
start_vm() {
	local sock=$1 console=$2
	shift 2
	"$TERN" -o kernel="$GUEST" -o "cmdline=passes=0 window=16M progress=1" -o memory.size=64M \
		-o console.path="$console" -o control.path="$sock" "$@" </dev/null >>"$T/tern.log" 2>&1 &
	VM_PID=$!
	PIDS+=("$VM_PID")
	for _ in $(seq 200); do
		"$TERNCTL" -s "$sock" status >/dev/null 2>&1 && return 0
		kill -0 "$VM_PID" 2>/dev/null || fail "tern exited before creating $sock"
		sleep 0.05
	done
	fail "no answer on $sock after 10 s"
}

# ctl SOCKET ARGS...: ternctl with a time limit
ctl() {
	local sock=$1
	shift
	"$TERNCTL" -t 20 -s "$sock" "$@"
}

size_of() { stat -c %s "$1"; }

# grows FILE: the file grows within 5 s
grows() {
	local a b
	a=$(size_of "$1")
	for _ in $(seq 100); do
		sleep 0.05
		b=$(size_of "$1")
		[ "$b" -gt "$a" ] && return 0
	done
	return 1
}

# still FILE: the file does not grow for 0.5 s
still() {
	local a b
	a=$(size_of "$1")
	sleep 0.5
	b=$(size_of "$1")
	[ "$a" = "$b" ]
}

# wait_exit PID: wait (at most 20 s); its exit status goes to STATUS (not
# in a $(subshell): only this shell can wait for its children)
wait_exit() {
	local pid=$1
	for _ in $(seq 400); do
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.05
	done
	kill -0 "$pid" 2>/dev/null && fail "tern $pid still running"
	wait "$pid"
	STATUS=$?
}
