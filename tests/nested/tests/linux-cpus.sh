# cpus=2 gives 2 CPUs online in the guest.
# timeout: 300
. /nested/lib.sh
need_vmm

run_linux --timeout 240 --cpus 2 --cmds 'echo online=$(cat /sys/devices/system/cpu/online) nproc=$(nproc)'
tr -d '\r' <"$CONSOLE" | sed 's/^/  | /'
expect_console 'TERN-INNER-INIT' "Linux under $NESTED_VMM never reached init"
expect_console '^online=0-1 nproc=2$' "the guest does not have CPUs 0-1 online"
expect_console '^TERN-INNER-RC=0' "the guest's commands did not finish"
# the guest powers off with both CPUs up: tern must end, with status 0
# (137 would be the harness's kill after the timeout)
[ "$VM_RC" = 0 ] || fail "$NESTED_VMM exited with $VM_RC after a 2-CPU guest powered off (want 0)"
