#!/usr/bin/env bash
# expect.sh STATUS REGEX [--stderr-lines N] -- COMMAND...
# Runs COMMAND (with a 120 s limit), then checks its exit status is STATUS and
# its combined output matches the extended regex REGEX. With --stderr-lines N
# stderr must have exactly N lines (bad input gets one clear line).
set -u
want_status=$1; regex=$2; shift 2
want_lines=
if [ "${1:-}" = --stderr-lines ]; then want_lines=$2; shift 2; fi
[ "${1:-}" = -- ] && shift

out=$(mktemp); err=$(mktemp)
trap 'rm -f "$out" "$err"' EXIT
timeout -k 5 "${TERN_TEST_TIMEOUT:-120}" "$@" </dev/null >"$out" 2>"$err"
status=$?
ok=1
if [ "$status" != "$want_status" ]; then
	echo "FAIL: exit status $status, expected $want_status"; ok=0
fi
if ! cat "$out" "$err" | grep -Eq -- "$regex"; then
	echo "FAIL: output does not match /$regex/"; ok=0
fi
if [ -n "$want_lines" ]; then
	n=$(wc -l <"$err")
	if [ "$n" != "$want_lines" ]; then
		echo "FAIL: $n lines on stderr, expected $want_lines"; ok=0
	fi
fi
echo "--- command: $*"
echo "--- stdout:"; cat "$out"
echo "--- stderr:"; cat "$err"
[ $ok = 1 ]
