# memory=3584M (above the 32-bit PCI hole) gives the expected MemTotal:
# e820 and ACPI describe low and high memory correctly.
# timeout: 300
. /nested/lib.sh
need_vmm

mib=3584
run_linux --timeout 240 --mem $mib --cmds 'grep MemTotal /proc/meminfo; grep -i "System RAM" /proc/iomem'
tr -d '\r' <"$CONSOLE" | sed 's/^/  | /'
expect_console 'TERN-INNER-INIT' "Linux under $NESTED_VMM never reached init"
kb=$(tr -d '\r' <"$CONSOLE" | sed -n 's/^MemTotal: *\([0-9]*\) kB.*/\1/p')
[ -n "$kb" ] || fail "no MemTotal line"
want=$((mib * 1024))
# RAM the VMM's e820 map gives: the System RAM ranges of /proc/iomem.  All
# of it but the legacy area below 1 MiB and a few pages of firmware tables.
ram=0
for r in $(tr -d '\r' <"$CONSOLE" | sed -n 's/^ *\([0-9a-f]*\)-\([0-9a-f]*\) : System RAM$/\1-\2/p'); do
    ram=$(( ram + 0x${r#*-} - 0x${r%-*} + 1 ))
done
ram=$((ram / 1024))
echo "System RAM ${ram} kB, MemTotal ${kb} kB, configured ${want} kB"
[ "$ram" -le "$want" ] || fail "e820 gives ${ram} kB of RAM, more than the configured $want kB"
[ "$ram" -ge $((want - 2048)) ] || fail "e820 gives ${ram} kB of RAM, less than the configured $want kB - 2 MiB"
high=$(tr -d '\r' <"$CONSOLE" | grep -c '^ *1[0-9a-f]\{8\}-.*System RAM')
[ "$high" -ge 1 ] || fail "no System RAM above 4 GiB in /proc/iomem (3584M must straddle the PCI hole)"
# MemTotal leaves out the kernel image, struct pages (about 1.6%), and
# other boot-time reservations: at least 90% of the configured size.
[ "$kb" -le "$want" ] || fail "MemTotal $kb kB is more than the configured $want kB"
[ "$kb" -ge $((want * 9 / 10)) ] || fail "MemTotal $kb kB is less than 90% of $mib MiB"
