#!/usr/bin/env bash
# The snapshot-save command's behaviour around it: --exit ends tern with
# status 0 once the file is complete (and the file restores); a VM paused by
# "ternctl pause" stays paused across a save; a second save while one runs
# is refused with "busy"; bad paths get clear errors and the VM runs on;
# "tern restore --paused" waits for "ternctl resume".
. "$(dirname "$0")/snapshot-lib.sh" "$@"

# --exit
start_vm ex
wait_pass "$T/ex.console" 20
out=$(ctl "$T/ex.sock" --json snapshot save --exit "$T/ex.snap" 2>/dev/null) || fail "save --exit"
echo "$out" | grep -q '"exit":true' || fail "save --exit reply: $out"
wait_exit "$VM_PID"
[ "$STATUS" = 0 ] || fail "tern exited $STATUS after save --exit, expected 0"
at=$(last_pass "$T/ex.console")
grep -aq '^dirty: OK$' "$T/ex.console" && fail "the guest ran to its end after save --exit"
restore_vm ex2 "$T/ex.snap"
wait_exit "$VM_PID"
[ "$STATUS" = 0 ] || fail "restore after --exit: status $STATUS"
# nothing ran between the save and the exit: the two consoles together are
# exactly one run
check_whole "$T/ex.console" "$T/ex2.console"
echo "save --exit: tern ended 0 at pass $at; original + restored copy = one whole run"

# a user's pause survives a save; busy; bad paths
start_vm p
wait_pass "$T/p.console" 10
ctl "$T/p.sock" pause || fail "pause"
ctl "$T/p.sock" snapshot save "$T/p.snap" 2>/dev/null || fail "save of a paused VM"
ctl "$T/p.sock" status | grep -q '^state: *paused$' || fail "a paused VM runs after a save"
a=$(stat -c %s "$T/p.console"); sleep 0.3; b=$(stat -c %s "$T/p.console")
[ "$a" = "$b" ] || fail "the guest prints while it should be paused"
ctl "$T/p.sock" resume || fail "resume"
ctl "$T/p.sock" status | grep -q '^state: *running$' || fail "not running after resume"

printf '%s\n%s\n' '{"id":1,"cmd":"snapshot-save","args":{"path":"'"$T"'/b1.snap"}}' \
	'{"id":2,"cmd":"snapshot-save","args":{"path":"'"$T"'/b2.snap"}}' | ctl "$T/p.sock" raw - >"$T/busy.out"
grep -q '"id":1,"ok"' "$T/busy.out" || fail "first of two saves: $(cat "$T/busy.out")"
grep -q '"id":2,"error":{"code":"busy","message":"a snapshot is already being saved"}' "$T/busy.out" ||
	fail "second of two saves: $(cat "$T/busy.out")"
grep -q '"event":"state","data":{"state":"paused"}' "$T/busy.out" || fail "no paused event"
grep -q '"event":"progress","data":{"op":"snapshot-save","id":1' "$T/busy.out" || fail "no progress event"
[ -e "$T/b2.snap" ] && fail "the refused save wrote a file"

out=$(ctl "$T/p.sock" raw '{"id":3,"cmd":"snapshot-save","args":{"path":"rel.snap"}}')
echo "$out" | grep -q '"code":"bad-args","message":"path: \\"rel.snap\\" is not absolute' || fail "relative path: $out"
out=$(ctl "$T/p.sock" snapshot save "$T/no/such/dir/x.snap" 2>&1)
[ $? = 1 ] || fail "save into a missing directory: exit status"
echo "$out" | grep -q "ternctl: snapshot: cannot create $T/no/such/dir/x.snap.tmp-[0-9]*: No such file or directory" ||
	fail "save into a missing directory: $out"
ctl "$T/p.sock" status | grep -q '^state: *running$' || fail "not running after a failed save"
ls "$T" | grep -q tmp- && fail "a temporary file was left behind"
ctl "$T/p.sock" quit || fail "quit"
wait_exit "$VM_PID"

# restore --paused, then resume
restore_vm rp "$T/p.snap" --paused
rp=$VM_PID
wait_socket "$T/rp.sock" "$rp"
ctl "$T/rp.sock" status | grep -q '^state: *paused$' || fail "restore --paused does not say paused"
sleep 0.3
[ -s "$T/rp.console" ] && fail "restore --paused ran the guest"
ctl "$T/rp.sock" resume || fail "resume after restore --paused"
wait_exit "$rp"
[ "$STATUS" = 0 ] || fail "restore --paused + resume: status $STATUS"
check_continued "$T/rp.console" "$(first_pass_of "$T/rp.console")"
echo "restore --paused waited for resume, then OK"
echo OK
