#!/bin/sh
# The Linux step of scripts/demo.sh, run where /dev/kvm can boot Linux: in
# the nested harness's outer machine (run.sh --bin this --exec), or directly
# on a host (TERN_DEMO_DIRECT=1, with TERN, INNER_KERNEL, INNER_INITRD set).
# Boots Debian's cloud kernel with the busybox initramfs under tern (2 vCPUs,
# 512 MiB, the boot console shown), runs a few commands at a shell prompt,
# powers off.  DEMO_SHELL=1: an interactive shell in the guest instead.
TERN=${TERN:-tern}
INNER_KERNEL=${INNER_KERNEL:-/inner/bzImage}
INNER_INITRD=${INNER_INITRD:-/inner/initrd.cpio.gz}
cmds='for c in "uname -a" "grep processor /proc/cpuinfo" "free -m" "cat /proc/cmdline"; do
  echo "~ # $c"; sh -c "$c"; done'
cmdline="console=ttyS0 panic=-1 tern.cmd64=$(printf '%s\n' "$cmds" | base64 | tr -d '\n')"
[ "${DEMO_SHELL:-0}" = 1 ] && cmdline="$cmdline tern.shell"
echo "demo: $TERN -o kernel=$INNER_KERNEL -o initrd=$INNER_INITRD -o cpus=2 -o memory.size=512M -o cmdline='console=ttyS0 ...'"
"$TERN" -o kernel="$INNER_KERNEL" -o initrd="$INNER_INITRD" -o cpus=2 -o memory.size=512M \
    -o "cmdline=$cmdline" $( [ "${DEMO_SHELL:-0}" = 1 ] || echo -o console.input=off )
echo "demo: tern exited with status $? (0: the guest powered off)"
# --- hook: later demo steps that need a Linux guest go here ---
