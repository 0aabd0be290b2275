#!/usr/bin/env bash
# ternctl status / pause / resume / config / commands / quit against a
# running dirty guest; the socket's mode and directory; --json.
. "$(dirname "$0")/control-lib.sh" "$@"

S=$T/run/sub/vm.sock C=$T/console
start_vm "$S" "$C" -o name=ctl-basic

[ "$(stat -c %a "$S")" = 600 ] || fail "socket mode $(stat -c %a "$S"), expected 600"
[ "$(stat -c %a "$T/run/sub")" = 700 ] || fail "directory mode $(stat -c %a "$T/run/sub"), expected 700"

out=$(ctl "$S" status) || fail "status: exit $?"
echo "$out"
echo "$out" | grep -q '^state: *running$' || fail "status does not say running"
echo "$out" | grep -q '^name: *ctl-basic$' || fail "status does not give the name"
echo "$out" | grep -q '^memory: *64.0 MiB$' || fail "status does not give the memory size"
out=$(ctl "$S" --json status) || fail "status --json: exit $?"
echo "$out" | grep -q '"state":"running"' || fail "status --json: $out"
out=$(ctl "$S" status --json) || fail "status --json after the command: exit $?"
echo "$out" | grep -q '"memory_bytes":67108864' || fail "status --json: $out"
grows "$C" || fail "the guest prints nothing while running"

ctl "$S" pause || fail "pause: exit $?"
ctl "$S" status | grep -q '^state: *paused$' || fail "status does not say paused after pause"
still "$C" || fail "the guest still prints while paused"
ctl "$S" pause || fail "a second pause: exit $?"
ctl "$S" resume || fail "resume: exit $?"
ctl "$S" status | grep -q '^state: *running$' || fail "status does not say running after resume"
grows "$C" || fail "the guest does not print again after resume"

ctl "$S" config | grep -qx 'memory.size=64M' || fail "config lacks memory.size=64M"
ctl "$S" --json config | grep -q '"name":"ctl-basic"' || fail "config --json lacks the name"
ctl "$S" commands | grep -q '^  quit ' || fail "commands lacks quit"
out=$(ctl "$S" raw '{"id":"r1","cmd":"status"}') || fail "raw status: exit $?"
echo "$out" | grep -q '^{"id":"r1","ok":{"name":"ctl-basic","state":"running"' || fail "raw status: $out"

ctl "$S" quit || fail "quit: exit $?"
# ternctl quit returns once tern has closed the socket
[ -e "$S" ] && fail "the socket is still there after quit"
wait_exit "$VM_PID"
[ "$STATUS" = 0 ] || fail "tern exited with $STATUS after quit, expected 0"
echo OK
