#!/usr/bin/env bash
# Snapshot the dirty guest mid-workload with `ternctl snapshot save`, kill -9
# tern, then restore the file lazily and eagerly: each copy carries on from
# the pass it was saved at, without a gap or repeat, and ends "dirty: OK"
# with status 0.
. "$(dirname "$0")/snapshot-lib.sh" "$@"

start_vm orig
wait_pass "$T/orig.console" 20
out=$(ctl "$T/orig.sock" --json snapshot save "$T/a.snap" 2>"$T/save.log") || fail "save: $(cat "$T/save.log")"
echo "save: $out"
echo "$out" | grep -q '"ram_bytes":100663296' || fail "the reply lacks ram_bytes"
grep -q 'snapshot: 100%' "$T/save.log" || fail "no progress shown: $(cat "$T/save.log")"
kill -9 "$VM_PID"
wait "$VM_PID" 2>/dev/null
done_before=$(last_pass "$T/orig.console")
[ "$done_before" -lt "$PASSES" ] || fail "the original finished before it was killed"

restore_vm lazy "$T/a.snap"
wait_exit "$VM_PID"
[ "$STATUS" = 0 ] || fail "lazy restore: exit status $STATUS"
first=$(first_pass_of "$T/lazy.console")
check_continued "$T/lazy.console" "$first"
# (+2: the snapshot may cut a "dirty: pass K" line, which then ends in the
# restored console and is not counted there)
[ "$first" -le $((done_before + 2)) ] || fail "the restored guest starts at pass $first, after the $done_before the original had printed"
[ "$first" -ge 21 ] || fail "the snapshot was taken at pass $((first - 1)), before pass 20"

restore_vm eager "$T/a.snap" -o snapshot.eager=on
wait_exit "$VM_PID"
[ "$STATUS" = 0 ] || fail "eager restore: exit status $STATUS"
check_continued "$T/eager.console" "$first"
echo "restored lazily and eagerly from pass $((first - 1)): both OK"
echo OK
