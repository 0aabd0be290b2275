# tern boots the inner Linux to its init marker and powers off with status 0.
# (Skips when the outer machine has no tern binary.)
# timeout: 300
. /nested/lib.sh
need_kvm
need_tern

run_tern_linux --timeout 240 --cmds 'echo tern-inner-ok'
cat "$CONSOLE" | tr -d '\r' | sed 's/^/  | /'
expect_console 'TERN-INNER-INIT' "Linux under tern never reached init"
expect_console '^tern-inner-ok' "the commands from the kernel command line did not run"
[ "$INNER_RC" = 0 ] || fail "inner commands exit status '${INNER_RC:-none}'"
[ "$VM_RC" = 0 ] || fail "tern exited with $VM_RC after the guest's poweroff -f (want 0)"
metric inner_tern_boot_to_marker "$VM_MARKER" s
