#!/usr/bin/env bash
# bench/migration.sh [BUILD_DIR] [RUNS]
# Live migration over loopback TCP of a 1 GiB dirty guest (verifying all its
# RAM every 20 passes of an 8 MiB window), tern against QEMU in the same run
# (-M microvm, the same PVH ELF; `migrate` over TCP to a `-incoming tcp:`
# QEMU with max-bandwidth unlimited, via HMP on a UNIX socket): total time,
# downtime, bytes sent, rounds, and the destination guest's next verify.
set -euo pipefail
build=${1:-build}
runs=${2:-3}
tern=$build/src/cmd/tern ternctl=$build/src/cmd/ternctl guest=$build/tests/guests/dirty.elf
for f in "$tern" "$ternctl" "$guest"; do [ -e "$f" ] || { echo "migration: $f missing (build first)" >&2; exit 1; }; done
command -v qemu-system-x86_64 >/dev/null || { echo "migration: qemu-system-x86_64 missing" >&2; exit 1; }
T=$(mktemp -d /tmp/tern-bench-mig.XXXXXX)
PIDS=()
trap 'for p in "${PIDS[@]}"; do kill -9 $p 2>/dev/null; done; rm -rf "$T"' EXIT
CMDLINE="passes=0 window=8M verify_every=20 progress=0"
verifies() { local n; n=$(grep -c "dirty: verify OK" "$1" 2>/dev/null); echo "${n:-0}"; }
wait_verify() {   # FILE MIN
	for _ in $(seq 600); do [ "$(verifies "$1")" -ge "$2" ] && return 0; sleep 0.05; done
	return 1
}
hmp() {   # SOCKET COMMAND: prints the reply
	python3 - "$1" "$2" <<'PY'
import socket, sys, time
s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); s.settimeout(5)
buf = b""
def until_prompt():
    global buf
    while not buf.endswith(b"(qemu) "):
        buf += s.recv(65536)
until_prompt(); buf = b""
s.sendall(sys.argv[2].encode() + b"\n"); until_prompt()
print(buf.decode(errors="replace"))
PY
}

tern_run() {
	rm -f "$T"/t*.log
	"$tern" -o kernel="$guest" -o memory.size=1G -o "cmdline=$CMDLINE" -o console.path="$T/tsrc.log" \
		-o control.path="$T/tsrc.sock" -o console.input=off </dev/null 2>/dev/null &
	local src=$!; PIDS+=($src)
	"$tern" receive --listen tcp:127.0.0.1:0 -o console.path="$T/tdst.log" -o control.path="$T/tdst.sock" \
		</dev/null 2>"$T/tdst.err" &
	local dst=$!; PIDS+=($dst)
	wait_verify "$T/tsrc.log" 1
	for _ in $(seq 100); do grep -q "listening on" "$T/tdst.err" && break; sleep 0.05; done
	local addr; addr=$(sed -n 's/.*listening on //p' "$T/tdst.err")
	local out; out=$("$ternctl" -s "$T/tsrc.sock" --json migrate "$addr" --downtime-limit 5 2>/dev/null)
	local ok=BAD
	wait_verify "$T/tdst.log" 1 && ! grep -q BAD "$T/tdst.log" && ok=OK
	python3 - "$out" "$ok" <<'PY'
import json, sys
o = json.loads(sys.argv[1])
print("tern  total %7.1f ms  downtime %6.2f ms  sent %6.1f MiB  rounds %d  guest %s" % (
    o["total_ms"], o["downtime_ms"], o["bytes_sent"] / 2**20, o["rounds"], sys.argv[2]))
PY
	"$ternctl" -s "$T/tdst.sock" quit >/dev/null 2>&1 || true
	"$ternctl" -s "$T/tsrc.sock" quit >/dev/null 2>&1 || true
	wait $src $dst 2>/dev/null || true
}

qemu_run() {
	rm -f "$T"/q*
	local port=$((20000 + RANDOM % 20000))
	local q=(qemu-system-x86_64 -M microvm -enable-kvm -cpu host -m 1G -nodefaults -nographic
		 -kernel "$guest" -append "$CMDLINE" -device isa-debug-exit,iobase=0x501,iosize=1)
	"${q[@]}" -serial file:"$T/qsrc.log" -monitor unix:"$T/qsrc.mon",server,nowait </dev/null >/dev/null 2>&1 &
	local src=$!; PIDS+=($src)
	"${q[@]}" -serial file:"$T/qdst.log" -monitor unix:"$T/qdst.mon",server,nowait \
		-incoming tcp:127.0.0.1:$port </dev/null >/dev/null 2>&1 &
	local dst=$!; PIDS+=($dst)
	wait_verify "$T/qsrc.log" 1
	hmp "$T/qsrc.mon" "migrate_set_parameter max-bandwidth 1T" >/dev/null
	hmp "$T/qsrc.mon" "migrate -d tcp:127.0.0.1:$port" >/dev/null
	local info=""
	for _ in $(seq 1200); do
		info=$(hmp "$T/qsrc.mon" "info migrate")
		echo "$info" | grep -qE "Migration status: *(completed|failed)" && break
		sleep 0.05
	done
	local ok=BAD
	wait_verify "$T/qdst.log" 1 && ! grep -q BAD "$T/qdst.log" && ok=OK
	echo "$info" > "$T/qinfo"
	python3 - "$T/qinfo" "$ok" <<'PY'
import re, sys
t = open(sys.argv[1]).read()
def num(pat):
    m = re.search(pat, t)
    return float(m.group(1)) if m else float("nan")
print("qemu  total %7.1f ms  downtime %6.2f ms  sent %6.1f MiB  rounds %d  guest %s  (%s)" % (
    num(r"total time: *(\d+)"), num(r"downtime: *(\d+)"), num(r"transferred ram: *(\d+)") / 1024,
    num(r"dirty sync count: *(\d+)"), sys.argv[2],
    re.search(r"Migration status: *(\w+)", t).group(1) if "Migration status" in t else "?"))
PY
	kill $src $dst 2>/dev/null || true
	wait $src $dst 2>/dev/null || true
}

echo "live migration, 1 GiB dirty guest ($CMDLINE), loopback TCP, $runs runs each, alternating"
for i in $(seq "$runs"); do
	tern_run
	qemu_run
done
