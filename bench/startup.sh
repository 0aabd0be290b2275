#!/usr/bin/env bash
# bench/startup.sh [BUILD_DIR] [RUNS]
# Start-up: time from exec to the hello guest's exit, tern against QEMU
# (qemu-system-x86_64 -enable-kvm -nodefaults -kernel hello.elf, which boots
# the same PVH ELF), same RAM, same run; and tern's resident memory beyond
# guest RAM, sampled while the dirty guest runs.
set -euo pipefail
build=${1:-build}
runs=${2:-20}
tern=$build/src/cmd/tern
hello=$build/tests/guests/hello.elf
dirty=$build/tests/guests/dirty.elf
for f in "$tern" "$hello" "$dirty"; do
	[ -e "$f" ] || { echo "startup: $f missing (build first: scripts/build.sh)" >&2; exit 1; }
done
command -v qemu-system-x86_64 >/dev/null || { echo "startup: qemu-system-x86_64 missing" >&2; exit 1; }

now_ns() { date +%s%N; }

# median of the arguments (integers)
median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : int((a[NR/2]+a[NR/2+1])/2))}'; }

time_runs() {   # expected-status command...
	local want=$1; shift
	local t=()
	for _ in $(seq "$runs"); do
		local s e st
		s=$(now_ns)
		set +e; "$@" </dev/null >/dev/null 2>&1; st=$?; set -e
		e=$(now_ns)
		[ "$st" = "$want" ] || { echo "startup: '$*' exited $st, expected $want" >&2; exit 1; }
		t+=($(( (e - s) / 1000 )))
	done
	median "${t[@]}"
}

tern_us=$(time_runs 0 "$tern" -o kernel="$hello" -o memory.size=64M -o test_exit.enable=on -o console.input=off)
# QEMU's isa-debug-exit turns the guest's 0 into status (0<<1)|1 = 1
qemu_us=$(time_runs 1 qemu-system-x86_64 -enable-kvm -cpu host -m 64M -nodefaults -nographic \
	-serial stdio -device isa-debug-exit,iobase=0x501,iosize=1 -kernel "$hello")

# QEMU's fastest x86 machine type (qboot instead of SeaBIOS), for a second,
# harder anchor
microvm_us=$(time_runs 1 qemu-system-x86_64 -M microvm -enable-kvm -cpu host -m 64M -nodefaults \
	-nographic -serial stdio -device isa-debug-exit,iobase=0x501,iosize=1 -kernel "$hello")

# Resident memory beyond guest RAM: guest RAM is a memfd, counted in
# RssShmem; what tern itself holds is RssAnon + RssFile.
"$tern" -o kernel="$dirty" -o memory.size=256M -o cmdline='passes=0 window=16M' \
	-o console.path=/dev/null -o console.input=off &
pid=$!
sleep 2
read -r anon file shmem < <(awk '/^RssAnon/ {a=$2} /^RssFile/ {f=$2} /^RssShmem/ {s=$2} END {print a, f, s}' /proc/$pid/status)
kill $pid; wait $pid 2>/dev/null || true

awk -v r="$runs" -v t="$tern_us" -v q="$qemu_us" -v m="$microvm_us" 'BEGIN {
	printf "startup (median of %d, 64 MiB hello guest): tern %.1f ms; qemu (pc) %.1f ms, tern/qemu = %.4f; qemu -M microvm %.1f ms, tern/microvm = %.3f\n", r, t/1000, q/1000, t/q, m/1000, t/m }'
printf 'tern resident beyond guest RAM (256 MiB dirty guest running): %d KiB (anon %d + file %d; guest RAM touched %d KiB)\n' \
	"$((anon + file))" "$anon" "$file" "$shmem"
