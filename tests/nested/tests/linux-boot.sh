# Linux boots to init and prints the marker; commands from the kernel
# command line run; `poweroff -f` ends the VMM with status 0.
# VMM: $NESTED_VMM (tern; run.sh --vmm qemu checks this test against QEMU).
# timeout: 300
. /nested/lib.sh
need_vmm

run_linux --timeout 240 --cmds 'echo inner-ok-$((6 * 7))'
tr -d '\r' <"$CONSOLE" | sed 's/^/  | /'
expect_console 'TERN-INNER-INIT' "Linux under $NESTED_VMM never reached init"
expect_console '^inner-ok-42' "the commands from the kernel command line did not run"
[ "$INNER_RC" = 0 ] || fail "inner commands exit status '${INNER_RC:-none}'"
expect_console 'TERN-INNER-DONE'
[ "$VM_RC" = 0 ] || fail "$NESTED_VMM exited with $VM_RC after the guest's poweroff -f (want 0)"
metric "inner_${NESTED_VMM}_boot_to_marker" "$VM_MARKER" s
metric "inner_${NESTED_VMM}_total" "$VM_TOTAL" s
metric "inner_${NESTED_VMM}_guest_uptime_at_init" "$VM_GUEST_INIT" s
