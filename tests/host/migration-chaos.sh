#!/usr/bin/env bash
# migration-chaos.sh TERN TERNCTL DIRTY_GUEST [ROUNDS]
# Nothing is lost: one source VM (the dirty guest, verifying all its RAM
# every few passes) survives ROUNDS (default 22) migrations that are cut
# at a random moment: destination killed (SIGKILL: the connection drops
# abruptly), destination told to stop (SIGTERM), or ternctl migrate cancel.
# After each the source must be running, its guest still verifying OK, and
# the destination must have exited non-zero without ever running the guest.
# Then the other way round: the source killed mid-way, twice: the
# destination discards what it has and exits non-zero.
set -u
TERN=$1 TERNCTL=$2 GUEST=$3 ROUNDS=${4:-22}
T=$(mktemp -d /tmp/tern-migration-chaos.XXXXXX)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null; done; rm -rf "$T"; }
trap cleanup EXIT
fail() { echo "FAIL: $*"; for f in "$T"/*.log "$T"/*.err; do [ -f "$f" ] && { echo "--- $f"; tail -8 "$f"; }; done; exit 1; }
ctl() { local s=$1; shift; "$TERNCTL" -t 60 -s "$s" "$@"; }
verifies() { local n; n=$(grep -c "dirty: verify OK" "$1" 2>/dev/null); echo "${n:-0}"; }
start_src() {
	rm -f "$T/src.log"
	"$TERN" -o kernel="$GUEST" -o memory.size=256M -o "cmdline=passes=0 window=8M verify_every=10 progress=0" \
		-o console.path="$T/src.log" -o control.path="$T/src.sock" </dev/null 2>>"$T/src.err" &
	SRC=$!; PIDS+=($SRC)
	for _ in $(seq 200); do [ "$(verifies "$T/src.log")" -ge 1 ] && return; sleep 0.1; done
	fail "the source guest never verified"
}
start_dst() {
	rm -f "$T/dst.log" "$T/mig.sock" "$T/dst.err"
	"$TERN" receive --listen "unix:$T/mig.sock" -o console.path="$T/dst.log" -o control.path="$T/dst.sock" \
		</dev/null 2>"$T/dst.err" &
	DST=$!; PIDS+=($DST)
	for _ in $(seq 100); do [ -S "$T/mig.sock" ] && return; sleep 0.05; done
	fail "the destination did not listen"
}
rand_ms() { echo $(( (RANDOM % $1) + 50 )); }

start_src
for i in $(seq "$ROUNDS"); do
	start_dst
	ctl "$T/src.sock" migrate "unix:$T/mig.sock" --max-bandwidth 64M >"$T/mig.out" 2>&1 &
	M=$!
	ms=$(rand_ms 3500)
	sleep "$(awk -v m="$ms" 'BEGIN { print m / 1000 }')"
	case $((i % 3)) in
	0) what="destination killed"; kill -9 "$DST" ;;
	1) what="destination stopped (SIGTERM)"; kill -TERM "$DST" ;;
	2) what="cancelled"; ctl "$T/src.sock" migrate cancel >/dev/null 2>&1 ;;
	esac
	wait "$M" && fail "round $i: the migration succeeded although $what after $ms ms"
	wait "$DST"; st=$?
	[ "$st" != 0 ] || fail "round $i ($what): the destination exited 0"
	[ -s "$T/dst.log" ] && fail "round $i ($what): the destination ran the guest"
	n=$(verifies "$T/src.log")
	for _ in $(seq 300); do [ "$(verifies "$T/src.log")" -gt "$n" ] && break; sleep 0.1; done
	[ "$(verifies "$T/src.log")" -gt "$n" ] || fail "round $i ($what): the source guest stopped verifying"
	grep -q BAD "$T/src.log" && fail "round $i ($what): the source guest found damage"
	ctl "$T/src.sock" status | grep -q "state:   running" || fail "round $i ($what): the source is not running"
	echo "round $i: $what after $ms ms: source running, $(verifies "$T/src.log") verifies OK; destination exited $st"
done
# after all that, the source still migrates completely
start_dst
ctl "$T/src.sock" migrate "unix:$T/mig.sock" >/dev/null 2>&1 || fail "the final migration failed"
n=$(verifies "$T/dst.log")
for _ in $(seq 300); do [ "$(verifies "$T/dst.log")" -gt "$n" ] && break; sleep 0.1; done
[ "$(verifies "$T/dst.log")" -gt "$n" ] && ! grep -q BAD "$T/dst.log" || fail "the final destination does not verify"
ctl "$T/dst.sock" quit >/dev/null; ctl "$T/src.sock" quit >/dev/null
wait "$DST" "$SRC"
echo "final migration: destination verifies OK"

# the source killed mid-way
for i in 1 2; do
	start_src
	start_dst
	ctl "$T/src.sock" migrate "unix:$T/mig.sock" --max-bandwidth 64M >/dev/null 2>&1 &
	M=$!
	ms=$(rand_ms 3000)
	sleep "$(awk -v m="$ms" 'BEGIN { print m / 1000 }')"
	kill -9 "$SRC"
	wait "$M"
	wait "$DST"; st=$?
	[ "$st" != 0 ] || fail "source killed: the destination exited 0"
	[ -s "$T/dst.log" ] && fail "source killed: the destination ran the guest"
	grep -q "did not complete, nothing was started" "$T/dst.err" || fail "source killed: $(cat "$T/dst.err")"
	echo "source killed after $ms ms: destination exited $st, nothing started"
done
echo "OK"
