#!/usr/bin/env bash
# migration.sh TERN TERNCTL DIRTY_GUEST CASE
# Two tern processes over loopback: the dirty guest (verifying all its RAM
# every few passes) migrates from one to the other; the destination guest
# must verify OK after the move, the source must stay paused and refuse to
# resume. CASE: warm | live | live-cap | live-tight | live-zstd | tcp
set -u
TERN=$1 TERNCTL=$2 GUEST=$3 CASE=$4
T=$(mktemp -d /tmp/tern-migration.XXXXXX)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null; done; rm -rf "$T"; }
trap cleanup EXIT
fail() { echo "FAIL: $*"; for f in "$T"/*.log "$T"/*.err; do [ -f "$f" ] && { echo "--- $f"; tail -15 "$f"; }; done; exit 1; }
ctl() { local s=$1; shift; "$TERNCTL" -t 60 -s "$s" "$@"; }
verifies() { local n; n=$(grep -c "dirty: verify OK" "$1" 2>/dev/null); echo "${n:-0}"; }

"$TERN" -o kernel="$GUEST" -o memory.size=256M -o "cmdline=passes=0 window=8M verify_every=20 progress=0" \
	-o console.path="$T/src.log" -o control.path="$T/src.sock" </dev/null 2>"$T/src.err" &
SRC=$!; PIDS+=($SRC)
if [ "$CASE" = tcp ]; then LISTEN=tcp:127.0.0.1:0; else LISTEN=unix:$T/mig.sock; fi
"$TERN" receive --listen "$LISTEN" -o console.path="$T/dst.log" -o control.path="$T/dst.sock" </dev/null 2>"$T/dst.err" &
DST=$!; PIDS+=($DST)
for _ in $(seq 200); do grep -q "listening on" "$T/dst.err" 2>/dev/null && [ "$(verifies "$T/src.log")" -ge 1 ] && break; sleep 0.1; done
ADDR=$(sed -n 's/.*listening on //p' "$T/dst.err")
[ -n "$ADDR" ] || fail "the destination did not listen"
[ "$(verifies "$T/src.log")" -ge 1 ] || fail "the source guest never verified"

args=()
case $CASE in
warm) args=(--mode warm) ;;
live|tcp) args=(--mode live) ;;
live-cap) args=(--mode live --max-bandwidth 64M) ;;
live-tight) args=(--mode live --downtime-limit 5) ;;
live-zstd) args=(--mode live --compress) ;;
*) fail "unknown case $CASE" ;;
esac
start=$(date +%s%N)
out=$(ctl "$T/src.sock" --json migrate "$ADDR" "${args[@]}") || fail "migrate failed: $out"
ms=$(( ($(date +%s%N) - start) / 1000000 ))
echo "migrate: $out"
# the destination runs the guest, which verifies all of its RAM again
n0=$(verifies "$T/dst.log")
for _ in $(seq 300); do [ "$(verifies "$T/dst.log")" -gt "$n0" ] && break; sleep 0.1; done
[ "$(verifies "$T/dst.log")" -gt "$n0" ] || fail "no verify on the destination after the migration"
grep -q BAD "$T/dst.log" && fail "the destination guest found damage"
ctl "$T/dst.sock" status | grep -q "state:   running" || fail "the destination is not running"
# the source: paused for good
ctl "$T/src.sock" status | grep -q "state:   paused" || fail "the source is not paused"
ctl "$T/src.sock" resume 2>"$T/resume.err" && fail "the source resumed"
grep -q "migrated to" "$T/resume.err" || fail "resume refused without saying why: $(cat "$T/resume.err")"
ctl "$T/src.sock" migrate status | grep -q "state: *completed" || fail "migrate status does not say completed"
ctl "$T/src.sock" migrate "$ADDR" 2>/dev/null && fail "a second migration of a migrated guest started"
if [ "$CASE" = live-cap ]; then
	# the receiver measures the most bytes in any second: 64 MiB plus
	# what the socket buffers may bunch up
	max=$(sed -n 's/.*at most \([0-9]*\) in any second.*/\1/p' "$T/dst.err")
	[ -n "$max" ] && [ "$max" -le $((64 * 1048576 + 8 * 1048576)) ] || fail "bandwidth cap: $max bytes in one second"
	sent=$(echo "$out" | sed -n 's/.*"max_window_bytes": *\([0-9]*\).*/\1/p')
	[ "$sent" -le $((64 * 1048576)) ] || fail "the sender counted $sent bytes in one second"
	[ "$ms" -ge 3000 ] || fail "256 MiB at 64 MiB/s took only $ms ms"
fi
if [ "$CASE" = live-tight ]; then
	dt=$(echo "$out" | sed -n 's/.*"downtime_ms": *\([0-9.]*\).*/\1/p')
	echo "downtime $dt ms (limit 5 ms; a target, reported)"
fi
ctl "$T/dst.sock" quit >/dev/null
ctl "$T/src.sock" quit >/dev/null
wait $DST; st=$?
[ $st = 0 ] || fail "destination exit status $st"
echo "OK: $CASE in $ms ms"
