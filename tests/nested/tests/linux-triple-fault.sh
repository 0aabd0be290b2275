# A triple fault ends tern with status 2 (TERN_EXIT_TRIPLE_FAULT) and a
# register dump on stderr. The guest makes one on purpose: with reboot=t the
# kernel reboots by loading an empty IDT and raising an exception, the
# triple-fault method; `reboot -f` then does it.
# timeout: 300
. /nested/lib.sh
need_tern
need_kvm
[ "$NESTED_VMM" = tern ] || skip "checks tern's exit status and register dump"

run_tern_linux --timeout 200 --append 'reboot=t' --cmds 'echo about-to-triple-fault; reboot -f'
tr -d '\r' <"$CONSOLE" | grep -v '^\[' | sed 's/^/  | /'
expect_console 'about-to-triple-fault' "the guest never reached the reboot"
[ "$VM_RC" = 2 ] || fail "tern exited with $VM_RC after the guest's triple fault (want 2)"
expect_console 'tern: vCPU [0-9]*: the guest triple-faulted' "no triple-fault message on stderr"
expect_console '^  rip [0-9a-f]{16} rflags' "no register dump on stderr"
expect_console '^  cr0 [0-9a-f]{16} cr2' "the register dump lacks the control registers"
