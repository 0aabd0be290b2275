# cpus=2 gives 2 CPUs online in the guest.
# timeout: 300
. /nested/lib.sh
need_vmm

run_linux --timeout 240 --cpus 2 --cmds 'echo online=$(cat /sys/devices/system/cpu/online) nproc=$(nproc)'
tr -d '\r' <"$CONSOLE" | sed 's/^/  | /'
expect_console 'TERN-INNER-INIT' "Linux under $NESTED_VMM never reached init"
expect_console '^online=0-1 nproc=2$' "the guest does not have CPUs 0-1 online"
