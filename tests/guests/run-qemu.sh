#!/bin/sh
# Run a test guest under QEMU, the reference implementation of the boot ABI
# tern follows (PVH entry, COM1 on stdout, exit port 0x501).
#
# usage: run-qemu.sh [-m SIZE] [-smp N] [-M microvm|pc] [-tcg] [-t SECONDS] GUEST [ARG...]
#   GUEST      a name (hello, memcheck, dirty, smp, timer), looked up in
#              $GUEST_DIR, else $BUILDDIR/tests/guests, else <repo>/build/tests/guests;
#              or a path to an .elf
#   ARG...     the guest command line, e.g. passes=3 window=16M
#   -m SIZE    guest RAM [256M]
#   -smp N     vCPUs [N from a cpus=N argument, else 1]
#   -M TYPE    microvm [default: no firmware, starts in milliseconds] or pc
#              (SeaBIOS and QEMU's PVH option ROM, slow to start on nested KVM)
#   -tcg       software emulation instead of KVM
#   -t SECONDS time limit [600]
# Extra QEMU options can be given in $QEMU_ARGS; the QEMU binary in $QEMU.
#
# Exit status: the guest's own (0 OK, 1 BAD, 3 CPU exception, 4 bad boot info
# or command line), 124 time limit, 125 the VM ended without writing the exit
# port (triple fault, reset), 126 QEMU failed to start.
set -u

mem=256M smp= machine=microvm accel=kvm cpu=host limit=600
while [ $# -gt 0 ]; do
	case $1 in
	-m) mem=$2; shift 2 ;;
	-smp) smp=$2; shift 2 ;;
	-M) machine=$2; shift 2 ;;
	-tcg) accel=tcg cpu=max; shift ;;
	-t) limit=$2; shift 2 ;;
	-h|--help) sed -n '2,/^set -u/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
	-*) echo "run-qemu.sh: unknown option $1" >&2; exit 126 ;;
	*) break ;;
	esac
done
if [ $# -lt 1 ]; then
	echo "usage: run-qemu.sh [-m SIZE] [-smp N] [-M microvm|pc] [-tcg] [-t SECONDS] GUEST [ARG...]" >&2
	exit 126
fi
guest=$1
shift

case $guest in
*/*|*.elf) elf=$guest ;;
*)
	here=$(cd "$(dirname "$0")" && pwd)
	if [ -n "${GUEST_DIR:-}" ]; then dir=$GUEST_DIR
	elif [ -n "${BUILDDIR:-}" ]; then dir=$BUILDDIR/tests/guests
	else dir=$here/../../build/tests/guests
	fi
	elf=$dir/$guest.elf ;;
esac
if [ ! -f "$elf" ]; then
	echo "run-qemu.sh: no guest image $elf (build it, or set GUEST_DIR/BUILDDIR)" >&2
	exit 126
fi

if [ -z "$smp" ]; then
	smp=1
	for a in "$@"; do
		case $a in cpus=*) smp=${a#cpus=} ;; esac
	done
fi

err=$(mktemp)
trap 'rm -f "$err"' EXIT
# shellcheck disable=SC2086 # QEMU_ARGS is a list of words
timeout "$limit" "${QEMU:-qemu-system-x86_64}" -M "$machine" -accel "$accel" -cpu "$cpu" \
	-m "$mem" -smp "$smp" -nodefaults -nographic -no-reboot -serial stdio \
	-device isa-debug-exit,iobase=0x501,iosize=1 \
	-kernel "$elf" -append "$*" ${QEMU_ARGS:-} 2>"$err"
rc=$?
cat "$err" >&2
case $rc in
124) echo "run-qemu.sh: time limit of ${limit}s reached" >&2; exit 124 ;;
0) echo "run-qemu.sh: the VM stopped without writing the exit port" >&2; exit 125 ;;
esac
# isa-debug-exit ends QEMU with (status << 1) | 1; QEMU's own failures are 1 too,
# but come with a message.
if [ "$rc" -eq 1 ] && grep -q . "$err"; then
	exit 126
fi
if [ $((rc & 1)) -eq 1 ] && [ "$rc" -lt 256 ]; then
	exit $((rc >> 1))
fi
exit 126
