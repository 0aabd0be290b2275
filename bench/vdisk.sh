#!/bin/bash
# tern-img against qemu-img, side by side in one run, on the same files with
# the same access pattern, per image format:
#   randread   4 KiB reads at scattered offsets, 32 in flight   (bench)
#   seqread    1 MiB sequential reads, 4 in flight               (bench)
#   allocwrite 4 KiB writes at scattered offsets on a fresh image (bench -w)
#   rewrite    the same writes again, now over allocated clusters (bench -w)
#   to_raw     convert FMT -> raw                                 (convert)
#   from_raw   convert raw -> FMT                                 (convert)
# plus per-format extras (vdi: convert to static=on; vpc: convert to
# subformat=fixed; qcow2: from_raw_zstd, compressed convert; vmdk:
# streamOptimized convert from raw, with deflated grains, and back to raw).
#
# Scattered offsets: qemu-img bench has no random mode, so both tools use
# its stride mode: request i at (i * STEP) mod image size, STEP an odd
# multiple of 4 KiB, which visits every 4 KiB block once per pass in a
# scattered order. Both open the images through the page cache (qemu-img:
# -t writeback, its bench default; tern-img: buffered I/O) and flush at
# the end of a write run (qemu-img when it closes the image, after it
# prints its own time; tern-img before it prints). convert: tern-img always flushes the target once
# at the end (4 threads); qemu-img runs with -t writeback, which does the
# same (8 coroutines). qemu-img's own default, cache=unsafe, never flushes:
# QCONVERT_CACHE=unsafe measures that (faster, and not durable). Times are
# wall clock for the whole command (open, I/O, flush, close), best of REPS;
# each repetition runs tern-img then qemu-img (so both see the same host
# load), each after a sync (so neither pays for dirty pages left by an
# earlier step: the source image, the other tool's run).
#
# usage: bench/vdisk.sh [BUILD_DIR]        (default: build)
# environment:
#   FORMATS   formats to measure (default "raw qcow2"); a format NAME needs
#             only what the create_opts/extras functions below say about it
#   SIZE_MB   virtual size of the images (default 1024)
#   REPS      repetitions of each measurement, best kept (default 2)
#   READS WRITES  request counts (defaults 400000 and 40000)
#   QCONVERT_CACHE  qemu-img convert's -t (default writeback)
#   BENCH_DIR scratch folder (default: mktemp under /var/tmp, on disk)
# Adding a format: make sure `qemu-img create -f NAME` and tern-img know it,
# add create options to create_opts if wanted, extras to extras_NAME.
set -u
B=${1:-build}
TI=$(realpath "$B/src/cmd/img/tern-img")
QI=$(command -v qemu-img) || { echo "qemu-img not found" >&2; exit 77; }
FORMATS=${FORMATS:-"raw qcow2 vmdk vdi vpc"}
SIZE_MB=${SIZE_MB:-1024}
REPS=${REPS:-2}
READS=${READS:-400000}
WRITES=${WRITES:-40000}
QCONVERT_CACHE=${QCONVERT_CACHE:-writeback}
STEP=$((4096 * 100003))     # odd multiple of 4 KiB: scattered, each block once
W=${BENCH_DIR:-$(mktemp -d /var/tmp/vdisk-bench.XXXXXX)}
mkdir -p "$W"
trap 'rm -rf "$W"' EXIT
cd "$W" || exit 1

# ---- per-format hooks ------------------------------------------------------
create_opts() {   # fmt -> options for `create`/`convert -O`
	case $1 in
	qcow2) echo "-o cluster_size=65536" ;;
	vmdk) echo "-o subformat=monolithicSparse" ;;
	# the size as given (not rounded up to a CHS geometry), so 1 MiB reads
	# end at the end of the disk
	vpc) echo "-o force_size=on" ;;
	*) ;;
	esac
}
extras_qcow2() { echo from_raw_zstd; }
extras_vmdk() { echo from_raw_stream to_raw_stream; }
extras_vdi() { echo from_raw_static; }
extras_vpc() { echo from_raw_fixed; }

# ---- timing ---------------------------------------------------------------
now() { date +%s.%N; }
# One timed run: prep-function, sync, then the command; prints seconds or nan.
# The sync keeps dirty pages of earlier steps (the 1 GiB source, the other
# tool's last run) from being written back during this one.
timed() {   # prep cmd...
	local prep=$1 t0 t1
	shift
	$prep
	sync
	t0=$(now)
	if ! "$@" >cmd.log 2>&1; then
		echo "FAILED: $*" >&2
		cat cmd.log >&2
		echo nan
		return
	fi
	t1=$(now)
	echo "$t1 - $t0" | bc -l
}
minof() { # a b -> the smaller (nan if either is nan)
	case "$1$2" in *nan*) echo nan; return ;; esac
	if [ -z "$1" ] || [ "$(echo "$2 < $1" | bc -l)" = 1 ]; then echo "$2"; else echo "$1"; fi
}
# Best wall time of REPS runs of each tool, alternating tern-img and
# qemu-img run by run so that a change in host load hits both alike.
# The two commands are given as the arrays TCMD and QCMD; prints "t q".
duel() {   # prep_t prep_q
	local bt="" bq="" r
	for ((r = 0; r < REPS; r++)); do
		bt=$(minof "$bt" "$(timed "$1" "${TCMD[@]}")")
		bq=$(minof "$bq" "$(timed "$2" "${QCMD[@]}")")
	done
	fmt3() { case $1 in nan) echo nan ;; *) printf '%.3f' "$1" ;; esac; }
	echo "$(fmt3 "$bt") $(fmt3 "$bq")"
}
nothing() { :; }

ROWS=()
row() {   # fmt what "tern qemu" (as duel prints them)
	local t q ratio=nan
	read -r t q <<<"$3"
	case "$t$q" in *nan*) ;; *) ratio=$(printf '%.2f' "$(echo "$t / $q" | bc -l)") ;; esac
	ROWS+=("| $1 | $2 | $t | $q | $ratio |")
	printf '%-6s %-16s tern %8s s   qemu-img %8s s   ratio %s   (load %s)\n' "$1" "$2" "$t" "$q" "$ratio" \
		"$(cut -d' ' -f1-3 /proc/loadavg)"
}

# ---- inputs ---------------------------------------------------------------
# half random, a quarter text, a quarter zeroes (so zero detection matters)
make_source() {
	head -c $((SIZE_MB / 2))M /dev/urandom > src.raw
	base64 src.raw | head -c $((SIZE_MB / 4))M >> src.raw
	truncate -s ${SIZE_MB}M src.raw
}
data_image() {   # fmt -> data.FMT (same file for both tools' reads)
	# shellcheck disable=SC2046
	"$QI" convert -t "$QCONVERT_CACHE" -f raw -O "$1" $(create_opts "$1") src.raw "data.$1"
}

# ---- measurements (one function each; $1 = format) -------------------------
m_randread() {
	TCMD=("$TI" bench -f "$1" -c "$READS" -d 32 -s 4096 -S $STEP "data.$1")
	QCMD=("$QI" bench -f "$1" -t writeback -c "$READS" -d 32 -s 4096 -S $STEP "data.$1")
	row "$1" randread-4k "$(duel nothing nothing)"
}
m_seqread() {
	local n=$((SIZE_MB * 2))
	TCMD=("$TI" bench -f "$1" -c $n -d 4 -s 1M "data.$1")
	QCMD=("$QI" bench -f "$1" -t writeback -c $n -d 4 -s 1M "data.$1")
	row "$1" seqread-1m "$(duel nothing nothing)"
}
fresh_t() { rm -f "t.$FMT"; "$QI" create -q -f "$FMT" $(create_opts "$FMT") "t.$FMT" ${SIZE_MB}M; }
fresh_q() { rm -f "q.$FMT"; "$QI" create -q -f "$FMT" $(create_opts "$FMT") "q.$FMT" ${SIZE_MB}M; }
m_allocwrite() {
	FMT=$1
	TCMD=("$TI" bench -w -f "$1" -c "$WRITES" -d 32 -s 4096 -S $STEP "t.$1")
	QCMD=("$QI" bench -w -f "$1" -t writeback -c "$WRITES" -d 32 -s 4096 -S $STEP "q.$1")
	row "$1" allocwrite-4k "$(duel fresh_t fresh_q)"
}
m_rewrite() {   # after m_allocwrite: the same offsets, now allocated
	TCMD=("$TI" bench -w -f "$1" -c "$WRITES" -d 32 -s 4096 -S $STEP "t.$1")
	QCMD=("$QI" bench -w -f "$1" -t writeback -c "$WRITES" -d 32 -s 4096 -S $STEP "q.$1")
	row "$1" rewrite-4k "$(duel nothing nothing)"
}
rm_out() { rm -f out.*; }
convert_row() {   # fmt name convert-args... (the same for both tools)
	local f=$1 name=$2
	shift 2
	TCMD=("$TI" convert "$@")
	QCMD=("$QI" convert -t "$QCONVERT_CACHE" "$@")
	row "$f" "$name" "$(duel rm_out rm_out)"
}
m_to_raw() { convert_row "$1" convert-to-raw -f "$1" -O raw "data.$1" out.raw; }
# shellcheck disable=SC2046
m_from_raw() { convert_row "$1" convert-from-raw -f raw -O "$1" $(create_opts "$1") src.raw "out.$1"; }
m_from_raw_zstd() { convert_row "$1" convert-zstd -c -f raw -O "$1" -o compression_type=zstd src.raw "out.$1"; }
m_from_raw_stream() {
	convert_row "$1" convert-stream -f raw -O vmdk -o subformat=streamOptimized src.raw "out.$1"
}
m_to_raw_stream() {
	"$QI" convert -f raw -O vmdk -o subformat=streamOptimized src.raw stream.vmdk
	convert_row "$1" stream-to-raw -f vmdk -O raw stream.vmdk out.raw
	rm -f stream.vmdk
}
m_from_raw_static() {   # vdi static=on: every block allocated
	convert_row "$1" convert-static -f raw -O vdi -o static=on src.raw "out.$1"
}
m_from_raw_fixed() {   # vpc subformat=fixed: raw data and a footer
	convert_row "$1" convert-fixed -f raw -O vpc -o subformat=fixed,force_size=on src.raw "out.$1"
}
MEASURES="randread seqread allocwrite rewrite to_raw from_raw"

# ---- run --------------------------------------------------------------------
echo "vdisk bench: formats '$FORMATS', ${SIZE_MB} MiB images, reps $REPS, in $W"
echo "tern-img: $TI; $("$QI" --version | head -1); qemu-img convert -t $QCONVERT_CACHE"
make_source
for f in $FORMATS; do
	data_image "$f" || { echo "cannot make a $f image" >&2; continue; }
	extra=""
	if declare -F "extras_$f" >/dev/null; then extra=$("extras_$f"); fi
	for m in $MEASURES $extra; do
		"m_$m" "$f"
	done
	rm -f "data.$f" "t.$f" "q.$f" out.*
done
echo
echo "| format | measurement | tern-img (s) | qemu-img (s) | tern / qemu |"
echo "|---|---|---|---|---|"
printf '%s\n' "${ROWS[@]}"
