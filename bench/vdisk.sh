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
# -t writeback, its bench default; tern-img: buffered I/O) and flush once at
# the end of a write run. convert: tern-img always flushes the target once
# at the end (4 threads); qemu-img runs with -t writeback, which does the
# same (8 coroutines). qemu-img's own default, cache=unsafe, never flushes:
# QCONVERT_CACHE=unsafe measures that (faster, and not durable). Times are
# wall clock for the whole command (open, I/O, flush, close), best of REPS.
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
# best wall time of REPS runs of: prep-function, then the command
besttime() {   # prep cmd...
	local prep=$1 best="" t0 t1 t
	shift
	for ((r = 0; r < REPS; r++)); do
		$prep
		t0=$(now)
		if ! "$@" >cmd.log 2>&1; then
			echo "FAILED: $*" >&2
			cat cmd.log >&2
			echo "nan"
			return
		fi
		t1=$(now)
		t=$(echo "$t1 - $t0" | bc -l)
		if [ -z "$best" ] || [ "$(echo "$t < $best" | bc -l)" = 1 ]; then best=$t; fi
	done
	printf '%.3f\n' "$best"
}
nothing() { :; }

ROWS=()
row() {   # fmt what tern qemu
	local ratio=nan
	case "$3$4" in *nan*) ;; *) ratio=$(printf '%.2f' "$(echo "$3 / $4" | bc -l)") ;; esac
	ROWS+=("| $1 | $2 | $3 | $4 | $ratio |")
	printf '%-6s %-16s tern %8s s   qemu-img %8s s   ratio %s\n' "$1" "$2" "$3" "$4" "$ratio"
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
	local n=$READS
	row "$1" randread-4k \
		"$(besttime nothing "$TI" bench -f "$1" -c $n -d 32 -s 4096 -S $STEP "data.$1")" \
		"$(besttime nothing "$QI" bench -f "$1" -t writeback -c $n -d 32 -s 4096 -S $STEP "data.$1")"
}
m_seqread() {
	local n=$((SIZE_MB * 2))
	row "$1" seqread-1m \
		"$(besttime nothing "$TI" bench -f "$1" -c $n -d 4 -s 1M "data.$1")" \
		"$(besttime nothing "$QI" bench -f "$1" -t writeback -c $n -d 4 -s 1M "data.$1")"
}
fresh_t() { rm -f "t.$FMT"; "$QI" create -q -f "$FMT" $(create_opts "$FMT") "t.$FMT" ${SIZE_MB}M; }
fresh_q() { rm -f "q.$FMT"; "$QI" create -q -f "$FMT" $(create_opts "$FMT") "q.$FMT" ${SIZE_MB}M; }
m_allocwrite() {
	FMT=$1
	row "$1" allocwrite-4k \
		"$(besttime fresh_t "$TI" bench -w -f "$1" -c $WRITES -d 32 -s 4096 -S $STEP "t.$1")" \
		"$(besttime fresh_q "$QI" bench -w -f "$1" -t writeback -c $WRITES -d 32 -s 4096 -S $STEP "q.$1")"
}
m_rewrite() {   # after m_allocwrite: the same offsets, now allocated
	row "$1" rewrite-4k \
		"$(besttime nothing "$TI" bench -w -f "$1" -c $WRITES -d 32 -s 4096 -S $STEP "t.$1")" \
		"$(besttime nothing "$QI" bench -w -f "$1" -t writeback -c $WRITES -d 32 -s 4096 -S $STEP "q.$1")"
}
rm_out() { rm -f out.*; }
m_to_raw() {
	row "$1" convert-to-raw \
		"$(besttime rm_out "$TI" convert -f "$1" -O raw "data.$1" out.raw)" \
		"$(besttime rm_out "$QI" convert -t "$QCONVERT_CACHE" -f "$1" -O raw "data.$1" out.raw)"
}
m_from_raw() {
	# shellcheck disable=SC2046
	row "$1" convert-from-raw \
		"$(besttime rm_out "$TI" convert -f raw -O "$1" $(create_opts "$1") src.raw "out.$1")" \
		"$(besttime rm_out "$QI" convert -t "$QCONVERT_CACHE" -f raw -O "$1" $(create_opts "$1") src.raw "out.$1")"
}
m_from_raw_zstd() {
	row "$1" convert-zstd \
		"$(besttime rm_out "$TI" convert -c -f raw -O "$1" -o compression_type=zstd src.raw "out.$1")" \
		"$(besttime rm_out "$QI" convert -t "$QCONVERT_CACHE" -c -f raw -O "$1" -o compression_type=zstd src.raw "out.$1")"
}
m_from_raw_stream() {
	row "$1" convert-stream \
		"$(besttime rm_out "$TI" convert -f raw -O vmdk -o subformat=streamOptimized src.raw "out.$1")" \
		"$(besttime rm_out "$QI" convert -t "$QCONVERT_CACHE" -f raw -O vmdk -o subformat=streamOptimized src.raw "out.$1")"
}
m_to_raw_stream() {
	"$QI" convert -f raw -O vmdk -o subformat=streamOptimized src.raw stream.vmdk
	row "$1" stream-to-raw \
		"$(besttime rm_out "$TI" convert -f vmdk -O raw stream.vmdk out.raw)" \
		"$(besttime rm_out "$QI" convert -t "$QCONVERT_CACHE" -f vmdk -O raw stream.vmdk out.raw)"
	rm -f stream.vmdk
}
m_from_raw_static() {   # vdi static=on: every block allocated
	row "$1" convert-static \
		"$(besttime rm_out "$TI" convert -f raw -O vdi -o static=on src.raw "out.$1")" \
		"$(besttime rm_out "$QI" convert -t "$QCONVERT_CACHE" -f raw -O vdi -o static=on src.raw "out.$1")"
}
m_from_raw_fixed() {   # vpc subformat=fixed: raw data and a footer
	row "$1" convert-fixed \
		"$(besttime rm_out "$TI" convert -f raw -O vpc -o subformat=fixed,force_size=on src.raw "out.$1")" \
		"$(besttime rm_out "$QI" convert -t "$QCONVERT_CACHE" -f raw -O vpc -o subformat=fixed,force_size=on src.raw "out.$1")"
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
