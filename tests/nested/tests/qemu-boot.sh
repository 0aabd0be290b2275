# Anchor and harness check: QEMU with KVM, inside the outer machine, boots the
# inner kernel and initrd; the inner init runs commands from the kernel
# command line and powers off.  Reports the time to the init marker.
# timeout: 300
. /nested/lib.sh
need_kvm
need_qemu

run_qemu_linux --timeout 240 --cmds 'echo inner-says-$((6 * 7)); grep -c ^processor /proc/cpuinfo'
cat "$CONSOLE" | tr -d '\r' | sed 's/^/  | /'
expect_console 'TERN-INNER-INIT' "the inner init never printed its marker"
expect_console 'TERN-INNER-MODULES loaded=[0-9]+ failed=-' "inner modules failed to load"
expect_console '^inner-says-42' "the commands from tern.cmd64 did not run"
[ "$INNER_RC" = 0 ] || fail "inner commands exit status '${INNER_RC:-none}'"
expect_console 'TERN-INNER-DONE'
[ "$VM_RC" = 0 ] || fail "QEMU exited with $VM_RC after the guest's poweroff -f"
metric inner_qemu_kvm_boot_to_marker "$VM_MARKER" s
metric inner_qemu_kvm_total "$VM_TOTAL" s
metric "inner_qemu_kvm_guest_uptime_at_init" "$VM_GUEST_INIT" s
