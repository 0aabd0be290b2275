#!/usr/bin/env bash
# tern restore on bad files: truncated at many points, a flipped byte in
# each part of the state, wrong magic, RAM shorter than declared, no such
# file, a directory, a configuration whose console.path cannot be opened:
# exit status 1, exactly one line on stderr naming the file and what is
# wrong, and the guest never runs (its console stays empty).
. "$(dirname "$0")/snapshot-lib.sh" "$@"

cp "$FIXTURE" "$T/good.snap"
state_len=$("$TERNCTL" snapshot inspect --json "$T/good.snap" | python3 -c 'import json,sys; print(json.load(sys.stdin)["header"]["ram_offset"])')
size=$(stat -c %s "$T/good.snap")
toc=$("$TERNCTL" snapshot inspect --json "$T/good.snap" | python3 -c 'import json,sys; print(json.load(sys.stdin)["header"]["toc_offset"])')
n=0

# bad FILE REGEX [restore options]: refused as it should be
bad() {
	local file=$1 regex=$2 out st lines
	shift 2
	rm -f "$T/bad.console"
	out=$("$TERN" restore "$file" -o console.path="$T/bad.console" -o control.path="$T/bad.sock" "$@" 2>&1 >/dev/null </dev/null)
	st=$?
	lines=$(printf '%s\n' "$out" | wc -l)
	[ $st = 1 ] || fail "$file: exit status $st, expected 1 ($out)"
	[ "$lines" = 1 ] || fail "$file: $lines lines on stderr: $out"
	echo "$out" | grep -Eq -- "$regex" || fail "$file: \"$out\" does not match /$regex/"
	[ -s "$T/bad.console" ] && fail "$file: the guest ran"
	n=$((n + 1))
	echo "refused: $out"
}

# flip FILE OFFSET: xor one byte with 0x20
flip() {
	local b
	b=$(od -An -tu1 -j "$2" -N1 "$1" | tr -d ' ')
	printf "$(printf '\\%03o' $((b ^ 0x20)))" | dd of="$1" bs=1 seek="$2" conv=notrunc status=none
}

for cut in 0 7 100 511 600 4096 5000 $((toc + 10)) $((state_len - 1)); do
	head -c "$cut" "$T/good.snap" >"$T/cut.snap"
	bad "$T/cut.snap" "^tern: $T/cut.snap: .*(too short|truncated)"
done
for cut in $state_len $((state_len + 8192)) $((size - 4096)); do
	head -c "$cut" "$T/good.snap" >"$T/cut.snap"
	bad "$T/cut.snap" "^tern: $T/cut.snap: RAM is shorter than declared: the file has $cut bytes, RAM should end at byte $size$"
done
for off in 1 9 30 60 80 200 505 700 4100 6000 9000 20000 $((toc + 3)) $((toc + 100)) $((state_len - 5)); do
	cp "$T/good.snap" "$T/flip.snap"
	flip "$T/flip.snap" "$off"
	bad "$T/flip.snap" "^tern: $T/flip.snap: .*(magic|checksum mismatch|not zero|format version)"
done
cp "$T/good.snap" "$T/magic.snap"
printf 'QFI\xfb' | dd of="$T/magic.snap" bs=1 conv=notrunc status=none
bad "$T/magic.snap" "^tern: $T/magic.snap: not a tern snapshot \(bad magic\)$"
bad "$T/none.snap" "^tern: $T/none.snap: No such file or directory$"
bad "$T" "^tern: $T: not a regular file$"
bad "$T/good.snap" "^tern: console.path: cannot open \"$T/no/such/dir/console\": No such file or directory$" \
	-o console.path="$T/no/such/dir/console"
bad "$T/good.snap" "^tern: memory.size: the snapshot holds 17 MiB of RAM; it cannot be restored with a different size$" \
	-o memory.size=64M
bad "$T/good.snap" "^tern: memroy.size: unknown setting" -o memroy.size=17M
echo "$n bad files refused, each with one line and status 1"
echo OK
