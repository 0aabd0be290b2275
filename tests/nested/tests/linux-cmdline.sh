# The kernel command line arrives intact (quotes, commas, '=' in values,
# and a long one).
# timeout: 300
. /nested/lib.sh
need_vmm

pad=$(printf 'x%.0s' $(seq 1 400))
extra="tern.check=a,b=c dquote=\"two words\" pad=$pad last=end"
run_linux --timeout 240 --append "$extra" --cmds 'echo "CMDLINE<$(cat /proc/cmdline)>"'
tr -d '\r' <"$CONSOLE" | sed 's/^/  | /' | cut -c1-200
expect_console 'TERN-INNER-INIT' "Linux under $NESTED_VMM never reached init"
got=$(tr -d '\r' <"$CONSOLE" | sed -n 's/^CMDLINE<\(.*\)>$/\1/p')
[ -n "$got" ] || fail "the guest did not print its /proc/cmdline"
case $got in
    *" $extra "*) ;;
    *) fail "the command line changed on the way: got '$got'" ;;
esac
echo "command line of ${#got} bytes arrived intact"
