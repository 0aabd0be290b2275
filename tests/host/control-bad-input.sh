#!/usr/bin/env bash
# Broken requests get error replies, one per line, and the VM keeps running:
# bad JSON, non-objects, unknown keys and commands, wrong arguments, a line
# over the 1 MiB limit, a half line, a client that leaves mid-reply.
. "$(dirname "$0")/control-lib.sh" "$@"

S=$T/vm.sock C=$T/console
start_vm "$S" "$C"

expect_error() {   # expect_error CODE REQUEST
	local out st
	out=$(ctl "$S" raw "$2")
	st=$?
	[ $st = 1 ] || fail "raw $2: exit $st, expected 1 ($out)"
	echo "$out" | grep -q "\"error\":{\"code\":\"$1\"" || fail "raw $2: $out (expected $1)"
	echo "$2 -> $out"
}
expect_error bad-request 'not json'
expect_error bad-request '{"cmd":'
expect_error bad-request '[1,2,3]'
expect_error bad-request '"status"'
expect_error bad-request '{"id":1}'
expect_error bad-request '{"id":1,"cmd":7}'
expect_error bad-request '{"id":1,"cmd":"status","args":[]}'
expect_error bad-request '{"id":1,"cmd":"status","extra":0}'
expect_error bad-request '{"cmd":"status","cmd":"quit"}'
expect_error unknown-command '{"id":1,"cmd":"reboot-the-world"}'
expect_error bad-args '{"id":1,"cmd":"pause","args":{"now":true}}'
# a snapshot into a directory that does not exist fails cleanly; the VM runs on
expect_error failed '{"id":1,"cmd":"snapshot-save","args":{"path":"/nonexistent/x"}}'
expect_error bad-args '{"id":1,"cmd":"snapshot-save","args":{"path":"relative/x"}}'

# many at once, byte for byte, with a half line at the end
out=$(printf '{"id":1,"cmd":"status"}\n\x00\xff\n{}\n\n{"id":2,"cmd":"commands"}\n{"id":3,"cmd":"sta' |
      ctl "$S" raw -) || fail "raw -: exit $?"
echo "$out"
[ "$(echo "$out" | wc -l)" = 5 ] || fail "raw -: expected 5 answers"
echo "$out" | sed -n 1p | grep -q '^{"id":1,"ok":' || fail "first answer"
echo "$out" | sed -n 2p | grep -q '"code":"bad-request"' || fail "second answer"
echo "$out" | sed -n 3p | grep -q '"code":"bad-request".*no \\"cmd\\"' || fail "third answer"
echo "$out" | sed -n 4p | grep -q '^{"id":2,"ok":{"commands":' || fail "fourth answer"
echo "$out" | sed -n 5p | grep -q '"code":"bad-request","message":"malformed JSON' || fail "fifth answer"

# a line over the limit, then a good one on the same connection
out=$( { head -c $((2 * 1024 * 1024)) /dev/zero | tr '\0' 'x'; printf '\n{"id":"after","cmd":"status"}\n'; } |
       ctl "$S" raw -) || fail "long line: exit $?"
echo "$out" | cut -c1-150
echo "$out" | sed -n 1p | grep -q '"code":"too-long"' || fail "no too-long error"
echo "$out" | sed -n 2p | grep -q '^{"id":"after","ok":' || fail "no answer after the long line"

# clients that send and leave at once, without reading
for i in $(seq 200); do
	printf '{"id":%d,"cmd":"config"}\n{"id":%d,"cmd":"status"}\n' "$i" "$i"
done >"$T/many"
for i in $(seq 20); do
	"$TERNCTL" -s "$S" raw - <"$T/many" >/dev/null 2>&1 &
	p=$!
	sleep 0.0$((i % 3))
	kill -9 "$p" 2>/dev/null
	wait "$p" 2>/dev/null
done

ctl "$S" status | grep -q '^state: *running$' || fail "the VM is not running after bad input"
grows "$C" || fail "the guest stopped printing after bad input"
kill -0 "$VM_PID" || fail "tern died"
ctl "$S" quit || fail "quit: exit $?"
wait_exit "$VM_PID"
[ "$STATUS" = 0 ] || fail "tern exited with $STATUS"
grep -q 'dropping client' "$T/tern.log" && fail "a client was dropped for not reading"
echo OK
