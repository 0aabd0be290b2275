#!/usr/bin/env bash
# tern restore and the saved machine's disk (disk.0.path, a raw image the
# dirty guest does not use; the virtio-blk device is there all the same):
#   - the image has gone: exit status 1, one line on stderr naming
#     disk.0.path and the path, the guest never runs, no image is created;
#   - -o disk.0.path= an image of a different size: refused the same way;
#   - -o disk.0.path= another image of the same size: restored (paused, the
#     configuration shows the new path), the guest carries on to OK.
. "$(dirname "$0")/snapshot-lib.sh" "$@"

# bad REGEX [restore options]: $T/a.snap refused in one line, status 1
bad() {
	local regex=$1 out st lines
	shift
	rm -f "$T/bad.console"
	out=$("$TERN" restore "$T/a.snap" -o console.path="$T/bad.console" -o control.path="$T/bad.sock" \
		"$@" 2>&1 >/dev/null </dev/null)
	st=$?
	lines=$(printf '%s\n' "$out" | wc -l)
	[ $st = 1 ] || fail "exit status $st, expected 1 ($out)"
	[ "$lines" = 1 ] || fail "$lines lines on stderr: $out"
	echo "$out" | grep -Eq -- "$regex" || fail "\"$out\" does not match /$regex/"
	[ -s "$T/bad.console" ] && fail "the guest ran: $(head -c 200 "$T/bad.console")"
	echo "refused: $out"
}

truncate -s 8M "$T/disk.raw" || fail "cannot make an image"
start_vm orig -o disk.0.path="$T/disk.raw"
wait_pass "$T/orig.console" 10
ctl "$T/orig.sock" pause >/dev/null || fail "pause failed"
ctl "$T/orig.sock" snapshot save "$T/a.snap" 2>"$T/save.log" || fail "save: $(cat "$T/save.log")"
kill -9 "$VM_PID"
wait "$VM_PID" 2>/dev/null
"$TERNCTL" snapshot inspect "$T/a.snap" | grep -q "^  disk.0.path=$T/disk.raw$" ||
	fail "the snapshot's configuration does not name the disk"

# the image has gone
mv "$T/disk.raw" "$T/moved.raw"
bad "^tern: disk\.0\.path: cannot open image \"$T/disk\.raw\": No such file or directory \(a restored or incoming machine needs its disk, or another image of the same size named with -o disk\.0\.path=FILE\)$"
[ -e "$T/disk.raw" ] && fail "the failed restore created $T/disk.raw"
bad "^tern: disk\.0\.path: cannot open image \"$T/none\.raw\": No such file or directory" \
	-o disk.0.path="$T/none.raw"

# another image, of the wrong size
truncate -s 16M "$T/big.raw"
bad "^tern: $T/a\.snap: blk\.0: the image of disk\.0\.path has 16777216 bytes, the saved machine's disk had 8388608: a restored or incoming machine needs an image of the same size$" \
	-o disk.0.path="$T/big.raw"
truncate -s 4M "$T/small.raw"
bad "^tern: $T/a\.snap: blk\.0: the image of disk\.0\.path has 4194304 bytes, the saved machine's disk had 8388608: a restored or incoming machine needs an image of the same size$" \
	-o disk.0.path="$T/small.raw"

# another image of the same size: restored, and the guest carries on
cp "$T/moved.raw" "$T/same.raw"
restore_vm same "$T/a.snap" -o disk.0.path="$T/same.raw" --paused
wait_socket "$T/same.sock" "$VM_PID"
ctl "$T/same.sock" config | grep -q "^disk.0.path=$T/same.raw$" ||
	fail "the restored VM's configuration does not name the new image: $(ctl "$T/same.sock" config)"
ctl "$T/same.sock" resume >/dev/null || fail "resume failed"
wait_exit "$VM_PID"
[ "$STATUS" = 0 ] || fail "restore onto $T/same.raw: exit status $STATUS ($(cat "$T/same.log"))"
check_continued "$T/same.console" "$(first_pass_of "$T/same.console")"
[ "$(first_pass_of "$T/same.console")" -gt 10 ] || fail "the restored guest started over"
echo "restored onto another image of the same size: OK"
echo OK
