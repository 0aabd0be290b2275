#!/usr/bin/env bash
# migration-vblk.sh TERN TERNCTL VBLK_GUEST CASE
# Pages written by a device, not by a vCPU: the vblk guest keeps virtio-blk
# reading 64 KiB blocks of a read-only disk into 32 buffers (2 MiB) and
# checks each buffer against the sector it asked for. KVM's dirty log does
# not see those writes; tern's own log of device writes must (virtqueue
# layer, src/virtio). Two tern processes over loopback share the disk (read-
# only: both may hold it); the destination guest must verify OK after the
# move. Without the device log the destination gets stale buffers (BAD) or a
# stale used ring (the guest waits for ever: no verify, FAIL).
# CASE: live (capped at 32 MiB/s, so that the first round lasts long enough
# for the guest to refill every buffer after it was sent, however loaded
# the host) | live-fast (no cap) | warm
set -u
TERN=$1 TERNCTL=$2 GUEST=$3 CASE=$4
T=$(mktemp -d /tmp/tern-migration-vblk.XXXXXX)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null; done; rm -rf "$T"; }
trap cleanup EXIT
fail() { echo "FAIL: $*"; for f in "$T"/*.log "$T"/*.err; do [ -f "$f" ] && { echo "--- $f"; tail -15 "$f"; }; done; exit 1; }
ctl() { local s=$1; shift; "$TERNCTL" -t 60 -s "$s" "$@"; }
verifies() { local n; n=$(grep -c "vblk: verify OK" "$1" 2>/dev/null); echo "${n:-0}"; }

# 8 MiB disk: word k of sector s is (s << 16) | (k << 8) | 0xa5 (vblk.c)
python3 - "$T/disk.raw" <<'PY' || fail "cannot write the disk image"
import struct, sys
with open(sys.argv[1], 'wb') as f:
    for s in range(16384):
        f.write(struct.pack('<64Q', *[(s << 16) | (k << 8) | 0xa5 for k in range(64)]))
PY

"$TERN" -o kernel="$GUEST" -o memory.size=256M -o "cmdline=passes=0 bufs=32 verify_every=50" \
	-o disk.0.path="$T/disk.raw" -o disk.0.readonly=true \
	-o console.path="$T/src.log" -o control.path="$T/src.sock" </dev/null 2>"$T/src.err" &
SRC=$!; PIDS+=($SRC)
"$TERN" receive --listen "unix:$T/mig.sock" -o console.path="$T/dst.log" -o control.path="$T/dst.sock" \
	</dev/null 2>"$T/dst.err" &
DST=$!; PIDS+=($DST)
for _ in $(seq 200); do grep -q "listening on" "$T/dst.err" 2>/dev/null && [ "$(verifies "$T/src.log")" -ge 2 ] && break; sleep 0.1; done
ADDR=$(sed -n 's/.*listening on //p' "$T/dst.err")
[ -n "$ADDR" ] || fail "the destination did not listen"
[ "$(verifies "$T/src.log")" -ge 2 ] || fail "the source guest never verified"

case $CASE in
live) args=(--mode live --max-bandwidth 32M) ;;
live-fast) args=(--mode live) ;;
warm) args=(--mode warm) ;;
*) fail "unknown case $CASE" ;;
esac
out=$(ctl "$T/src.sock" --json migrate "$ADDR" "${args[@]}") || fail "migrate failed: $out"
echo "migrate: $out"
rounds=$(echo "$out" | sed -n 's/.*"rounds": *\([0-9]*\).*/\1/p')
# the destination guest keeps reading and checks every buffer again
n0=$(verifies "$T/dst.log")
for _ in $(seq 300); do
	grep -q BAD "$T/dst.log" && break
	[ "$(verifies "$T/dst.log")" -gt $((n0 + 1)) ] && break
	sleep 0.1
done
grep -q BAD "$T/dst.log" && fail "the destination guest found a buffer the migration lost"
if [ "$(verifies "$T/dst.log")" -le $((n0 + 1)) ]; then
	# diagnosis: a pause and resume makes the device look at its queues
	# again; a guest that goes on then was waiting for a lost notification
	ctl "$T/dst.sock" pause >/dev/null; ctl "$T/dst.sock" resume >/dev/null; sleep 2
	fail "no verify on the destination after the migration (a lost used ring leaves the guest" \
		"waiting); verifies after a pause and resume: $(verifies "$T/dst.log")"
fi
ctl "$T/dst.sock" status | grep -q "state:   running" || fail "the destination is not running"
ctl "$T/dst.sock" quit >/dev/null
ctl "$T/src.sock" quit >/dev/null
wait $DST; st=$?
[ $st = 0 ] || fail "destination exit status $st"
echo "OK: $CASE (${rounds:-?} rounds)"
