#!/usr/bin/env bash
# migration-disk.sh TERN TERNCTL TERN_IMG VBLK_GUEST CASE
# Writable disks move between two tern processes on one host: the disk lock
# handover (docs/migration-protocol.md, protocol 2). The source holds an
# exclusive lock on each writable image; the destination opens them without
# it, the source lets go after HAVE_ALL, the destination takes them before
# the guest starts. The vblk guest reads disk 0 (a writable qcow2 holding
# vblk's pattern: the destination reads it through a handle opened afresh
# after the handover) and checks every buffer; disk 1 is a writable raw
# image (the io_uring engine).
# CASE: live | warm: the destination runs the guest and holds both locks;
#         the source holds none
#       refused: a third process holds a shared lock on the destination's
#         copy of disk 1: the destination cannot take it and refuses; the
#         source takes its locks back and the guest runs on there
#       killed: the same, but the destination is killed (SIGKILL) while it
#         waits for that lock, after the source let its locks go: the
#         source takes them back and the guest runs on there
set -u
TERN=$1 TERNCTL=$2 IMG=$3 GUEST=$4 CASE=$5
T=$(mktemp -d /tmp/tern-migration-disk.XXXXXX)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null; done; rm -rf "$T"; }
trap cleanup EXIT
fail() { echo "FAIL: $*"; for f in "$T"/*.log "$T"/*.err; do [ -f "$f" ] && { echo "--- $f"; tail -15 "$f"; }; done; exit 1; }
ctl() { local s=$1; shift; "$TERNCTL" -t 60 -s "$s" "$@"; }
verifies() { local n; n=$(grep -c "vblk: verify OK" "$1" 2>/dev/null); echo "${n:-0}"; }
# locked FILE: some process holds a lock on it that excludes a writer
locked() { ! flock -n -x "$1" true; }
wait_verifies() { # LOG N: up to 30 s for N more verifies
	local n0; n0=$(verifies "$1")
	for _ in $(seq 300); do
		grep -q BAD "$1" && return 1
		[ "$(verifies "$1")" -ge $((n0 + $2)) ] && return 0
		sleep 0.1
	done
	return 1
}

# 8 MiB of vblk's pattern: word k of sector s is (s << 16) | (k << 8) | 0xa5
python3 - "$T/pattern.raw" <<'PY' || fail "cannot write the disk image"
import struct, sys
with open(sys.argv[1], 'wb') as f:
    for s in range(16384):
        f.write(struct.pack('<64Q', *[(s << 16) | (k << 8) | 0xa5 for k in range(64)]))
PY
"$IMG" convert -O qcow2 "$T/pattern.raw" "$T/disk0.qcow2" >/dev/null || fail "tern-img convert"
truncate -s 4M "$T/disk1.raw"

"$TERN" -o kernel="$GUEST" -o memory.size=256M -o "cmdline=passes=0 bufs=32 verify_every=50" \
	-o disk.0.path="$T/disk0.qcow2" -o disk.0.format=qcow2 -o disk.1.path="$T/disk1.raw" \
	-o console.path="$T/src.log" -o control.path="$T/src.sock" </dev/null 2>"$T/src.err" &
SRC=$!; PIDS+=($SRC)
dst_args=()
if [ "$CASE" = refused ] || [ "$CASE" = killed ]; then
	cp "$T/disk1.raw" "$T/other.raw"
	# one process: the lock belongs to the descriptor sleep inherits
	(exec 9<"$T/other.raw"; flock -s 9; exec sleep 600) >/dev/null 2>&1 &
	PIDS+=($!)
	for _ in $(seq 50); do flock -n -x "$T/other.raw" true || break; sleep 0.1; done
	dst_args=(-o disk.1.path="$T/other.raw")
fi
"$TERN" receive --listen "unix:$T/mig.sock" -o console.path="$T/dst.log" -o control.path="$T/dst.sock" \
	"${dst_args[@]}" </dev/null 2>"$T/dst.err" &
DST=$!; PIDS+=($DST)
for _ in $(seq 200); do grep -q "listening on" "$T/dst.err" 2>/dev/null && [ "$(verifies "$T/src.log")" -ge 2 ] && break; sleep 0.1; done
ADDR=$(sed -n 's/.*listening on //p' "$T/dst.err")
[ -n "$ADDR" ] || fail "the destination did not listen"
[ "$(verifies "$T/src.log")" -ge 2 ] || fail "the source guest never verified"
locked "$T/disk0.qcow2" && locked "$T/disk1.raw" || fail "the source does not lock its disks"

case $CASE in
live|refused|killed) args=(--mode live) ;;
warm) args=(--mode warm) ;;
*) fail "unknown case $CASE" ;;
esac
if [ "$CASE" = killed ]; then
	ctl "$T/src.sock" --json migrate "$ADDR" "${args[@]}" >"$T/mig.out" 2>&1 &
	M=$!
	# the source released its locks (disk 1: the destination took disk 0
	# at once): the destination is in its 3 s of retries for other.raw
	for _ in $(seq 600); do locked "$T/disk1.raw" || break; sleep 0.02; done
	locked "$T/disk1.raw" && fail "the source never released disk 1"
	kill -9 $DST
	wait $M; st=$?
	out=$(cat "$T/mig.out")
else
	out=$(ctl "$T/src.sock" --json migrate "$ADDR" "${args[@]}"); st=$?
fi
echo "migrate: $out"
if [ "$CASE" = killed ]; then
	[ $st != 0 ] || fail "the migration completed though the destination was killed"
	ctl "$T/src.sock" status | grep -q "state:   running" || fail "the source is not running"
	wait_verifies "$T/src.log" 2 || fail "the source guest does not carry on"
	locked "$T/disk0.qcow2" || fail "the source did not take disk 0's lock back"
	locked "$T/disk1.raw" || fail "the source did not take disk 1's lock back"
	ctl "$T/src.sock" quit >/dev/null
	wait $SRC
	echo "OK: destination killed after the source let go; the source took its disks back"
	exit 0
fi

if [ "$CASE" = refused ]; then
	[ $st != 0 ] || fail "the migration completed though the destination could not lock its disk"
	echo "$out" | grep -q "in use" || fail "the error does not say the image is in use: $out"
	wait $DST; dst=$?
	[ $dst = 1 ] || fail "destination exit status $dst, expected 1"
	grep -q "nothing was started" "$T/dst.err" || fail "the destination does not say nothing was started"
	[ -s "$T/dst.log" ] && fail "the destination guest printed something"
	ctl "$T/src.sock" status | grep -q "state:   running" || fail "the source is not running"
	wait_verifies "$T/src.log" 2 || fail "the source guest does not carry on"
	locked "$T/disk0.qcow2" || fail "the source did not take disk 0's lock back"
	locked "$T/disk1.raw" || fail "the source did not take disk 1's lock back"
	# and a later migration to a destination that can have the disks works
	"$TERN" receive --listen "unix:$T/mig2.sock" -o console.path="$T/dst2.log" \
		-o control.path="$T/dst2.sock" </dev/null 2>"$T/dst2.err" &
	DST=$!; PIDS+=($DST)
	for _ in $(seq 100); do grep -q "listening on" "$T/dst2.err" 2>/dev/null && break; sleep 0.1; done
	out=$(ctl "$T/src.sock" --json migrate "unix:$T/mig2.sock" --mode live) ||
		fail "the second migration failed: $out"
	wait_verifies "$T/dst2.log" 2 || fail "the guest does not verify on the second destination"
	ctl "$T/dst2.sock" quit >/dev/null
	wait $DST; st=$?
	[ $st = 0 ] || fail "second destination exit status $st"
	ctl "$T/src.sock" quit >/dev/null
	wait $SRC
	echo "OK: refused, the source kept its disks and migrated later"
	exit 0
fi

[ $st = 0 ] || fail "migrate failed: $out"
wait_verifies "$T/dst.log" 2 || fail "the destination guest does not verify after the migration"
ctl "$T/dst.sock" status | grep -q "state:   running" || fail "the destination is not running"
# the destination owns the disks now; the source (paused for good) holds no lock
ctl "$T/src.sock" quit >/dev/null
wait $SRC
locked "$T/disk0.qcow2" || fail "nobody locks disk 0 while the destination runs"
locked "$T/disk1.raw" || fail "nobody locks disk 1 while the destination runs"
ctl "$T/dst.sock" quit >/dev/null
wait $DST; st=$?
[ $st = 0 ] || fail "destination exit status $st"
locked "$T/disk0.qcow2" && fail "disk 0 is still locked after both ended"
if command -v qemu-img >/dev/null; then
	qemu-img check -q "$T/disk0.qcow2" || fail "qemu-img check finds disk 0 damaged"
	qemu-img compare -q "$T/disk0.qcow2" "$T/pattern.raw" || fail "disk 0 no longer holds the pattern"
fi
echo "OK: $CASE"
