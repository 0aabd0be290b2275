#!/usr/bin/env bash
# Snapshot while running and continue both: the original runs on to
# "dirty: OK" and so does a copy restored from the snapshot, side by side,
# each with status 0. Then several snapshots in a row from one run, each
# restored: each copy carries on from its own pass.
. "$(dirname "$0")/snapshot-lib.sh" "$@"

start_vm orig
orig=$VM_PID
wait_pass "$T/orig.console" 20
ctl "$T/orig.sock" snapshot save "$T/a.snap" 2>/dev/null || fail "save"
ctl "$T/orig.sock" status | grep -q '^state: *running$' || fail "the VM does not run after the save"
restore_vm copy "$T/a.snap"
copy=$VM_PID
wait_exit "$orig"
[ "$STATUS" = 0 ] || fail "original: exit status $STATUS after the snapshot"
check_finished "$T/orig.console"
wait_exit "$copy"
[ "$STATUS" = 0 ] || fail "restored copy: exit status $STATUS"
check_continued "$T/copy.console" "$(first_pass_of "$T/copy.console")"
echo "original and restored copy: both OK"

# several in a row
start_vm multi
multi=$VM_PID
for k in 1 2 3; do
	wait_pass "$T/multi.console" $((k * 40))
	ctl "$T/multi.sock" snapshot save "$T/m$k.snap" 2>/dev/null || fail "save $k"
done
wait_exit "$multi"
[ "$STATUS" = 0 ] || fail "the run with three snapshots: exit status $STATUS"
check_finished "$T/multi.console"
prev=0
for k in 1 2 3; do
	restore_vm "m$k" "$T/m$k.snap"
	wait_exit "$VM_PID"
	[ "$STATUS" = 0 ] || fail "restore of snapshot $k: exit status $STATUS"
	first=$(first_pass_of "$T/m$k.console")
	check_continued "$T/m$k.console" "$first"
	[ "$first" -gt $((k * 40)) ] && [ "$first" -gt "$prev" ] ||
		fail "snapshot $k resumes at pass $first (previous $prev)"
	echo "snapshot $k: resumed at pass $first, OK"
	prev=$first
done
echo OK
