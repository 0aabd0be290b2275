#!/usr/bin/env bash
# Snapshot while running and continue both: the original runs on to
# "dirty: OK" and so does a copy restored from the snapshot, side by side,
# each with status 0. Then several snapshots in a row from one run, each
# restored: each copy carries on from its own pass. Last, a lazily restored
# copy (its RAM mapped from its snapshot file, not a memfd) is saved over
# the very file it maps, and that new file restores.
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

# a restored copy saved over the file it runs from
at=$(( $(first_pass_of "$T/m1.console") + 3 ))
restore_vm re "$T/m1.snap"
re=$VM_PID
wait_pass "$T/re.console" "$at"
ctl "$T/re.sock" snapshot save "$T/m1.snap" 2>/dev/null || fail "save of a restored copy over its own file"
wait_exit "$re"
[ "$STATUS" = 0 ] || fail "the restored copy saved over its own file: exit status $STATUS"
check_continued "$T/re.console" "$(first_pass_of "$T/re.console")"
restore_vm re2 "$T/m1.snap"
wait_exit "$VM_PID"
[ "$STATUS" = 0 ] || fail "restore of the file saved over itself: exit status $STATUS"
first=$(first_pass_of "$T/re2.console")
check_continued "$T/re2.console" "$first"
[ "$first" -gt "$at" ] || fail "the file saved over itself resumes at pass $first"
echo "a restored copy saved over its own file: resumed at pass $first, OK"
echo OK
