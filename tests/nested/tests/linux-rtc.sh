# The guest's RTC is within a minute of the host's clock (the host being the
# outer machine, whose own clock came from QEMU's RTC).
# timeout: 300
. /nested/lib.sh
need_vmm

run_linux --timeout 240 --cmds 'echo "RTC $(cat /sys/class/rtc/rtc0/since_epoch)"; echo "SYS $(date +%s)"'
now=$(date +%s)
tr -d '\r' <"$CONSOLE" | sed 's/^/  | /'
expect_console 'TERN-INNER-INIT' "Linux under $NESTED_VMM never reached init"
expect_console '^RTC [0-9]+$' "the guest has no /sys/class/rtc/rtc0 (no CMOS RTC?)"
rtc=$(tr -d '\r' <"$CONSOLE" | sed -n 's/^RTC \([0-9]*\)$/\1/p')
total=${VM_TOTAL%.*}
# The RTC was read during the run, at most $total s before $now.
d=$((now - rtc))
echo "host now $now, guest RTC $rtc, difference ${d}s, VM ran ${VM_TOTAL}s"
[ $d -ge -60 ] && [ $d -le $((60 + total)) ] || fail "guest RTC is ${d}s off the host's clock"
