#!/usr/bin/env bash
# The socket file: a second tern on a live socket is refused; ternctl on a
# missing, stale or wrong path says so clearly (exit 3); a stale socket left
# by a killed tern is replaced; -n NAME and the default directory.
. "$(dirname "$0")/control-lib.sh" "$@"

S=$T/vm.sock C=$T/console
start_vm "$S" "$C"
first=$VM_PID

# a second tern on the same path: exit 1, one clear line
out=$("$TERN" -o kernel="$GUEST" -o console.path="$T/console2" -o control.path="$S" </dev/null 2>&1)
st=$?
echo "$out"
[ $st = 1 ] || fail "second tern: exit $st, expected 1"
[ "$out" = "tern: control.path: another tern is already listening on $S" ] || fail "second tern said: $out"
ctl "$S" status | grep -q '^state: *running$' || fail "the first VM is not running any more"

# ternctl on a path where nothing is
out=$("$TERNCTL" -s "$T/none.sock" status 2>&1)
st=$?
echo "$out"
[ $st = 3 ] || fail "missing socket: exit $st, expected 3"
[ "$out" = "ternctl: no VM is listening on $T/none.sock (is tern running with control.path=$T/none.sock?)" ] ||
	fail "missing socket: $out"
out=$(XDG_RUNTIME_DIR=$T/xdg "$TERNCTL" -n nosuchvm status 2>&1)
[ $? = 3 ] || fail "-n nosuchvm: exit status"
[ "$out" = "ternctl: no VM is listening on $T/xdg/tern/nosuchvm.sock (is tern running with name=nosuchvm?)" ] ||
	fail "-n nosuchvm: $out"
out=$("$TERNCTL" -s "$C" status 2>&1)
[ $? = 3 ] || fail "not a socket: exit status"
echo "$out" | grep -q 'ternctl: .*console' || fail "not a socket: $out"

# kill -9 leaves a stale socket: ternctl says so; a new tern replaces it
kill -9 "$first"
wait "$first" 2>/dev/null
[ -S "$S" ] || fail "expected a stale socket after kill -9"
out=$("$TERNCTL" -s "$S" status 2>&1)
st=$?
echo "$out"
[ $st = 3 ] || fail "stale socket: exit $st, expected 3"
echo "$out" | grep -q "nothing listens on $S any more" || fail "stale socket: $out"
start_vm "$S" "$C"
ctl "$S" status | grep -q '^state: *running$' || fail "the VM on the replaced socket is not running"
ctl "$S" quit || fail "quit"
wait_exit "$VM_PID"
[ "$STATUS" = 0 ] || fail "exit status after quit: $STATUS"

# name=NAME without control.path: $XDG_RUNTIME_DIR/tern/NAME.sock; ternctl -n
# finds it, and so does plain ternctl when it is the only one there
export XDG_RUNTIME_DIR=$T/xdg
mkdir -p "$XDG_RUNTIME_DIR"
"$TERN" -o kernel="$GUEST" -o "cmdline=passes=0 window=16M progress=1" -o memory.size=64M \
	-o console.path="$C" -o name=web </dev/null >>"$T/tern.log" 2>&1 &
VM_PID=$!
PIDS+=("$VM_PID")
for _ in $(seq 200); do "$TERNCTL" -n web status >/dev/null 2>&1 && break; sleep 0.05; done
[ -S "$T/xdg/tern/web.sock" ] || fail "no socket at \$XDG_RUNTIME_DIR/tern/web.sock"
"$TERNCTL" -t 20 -n web status | grep -q '^name: *web$' || fail "ternctl -n web status"
"$TERNCTL" -t 20 status | grep -q '^name: *web$' || fail "ternctl status (the only VM)"
"$TERNCTL" -t 20 -n web quit || fail "ternctl -n web quit"
wait_exit "$VM_PID"
[ "$STATUS" = 0 ] || fail "exit status after quit: $STATUS"
out=$("$TERNCTL" status 2>&1)
[ $? = 3 ] || fail "no VM left: exit status"
echo "$out" | grep -q "no VM found in $T/xdg/tern" || fail "no VM left: $out"

# without name or control.path, tern makes no socket (parallel test runs)
"$TERN" -o kernel="$GUEST" -o "cmdline=passes=0 window=16M progress=1" -o memory.size=64M \
	-o console.path="$C" </dev/null >>"$T/tern.log" 2>&1 &
VM_PID=$!
PIDS+=("$VM_PID")
sleep 1
kill -0 "$VM_PID" || fail "tern without a socket did not run"
[ -z "$(ls "$T/xdg/tern")" ] || fail "tern made a socket without name or control.path"
kill -TERM "$VM_PID"
wait_exit "$VM_PID"
[ "$STATUS" = $((128 + 15)) ] || fail "SIGTERM exit status: $STATUS"
echo OK
