# A guest reboot follows on_reboot: `reboot -f` (ACPI reset register) ends
# tern with status 0 under on_reboot=exit (one boot), and under
# on_reboot=restart tern rebuilds the machine and boots again: the first boot
# marks a virtio disk and reboots, the second finds the mark and powers off.
# tern only (QEMU runs with -no-reboot here).
# timeout: 300
. /nested/lib.sh
need_tern
need_kvm
[ "$NESTED_VMM" = tern ] || skip "on_reboot is a tern setting"

count() { tr -d '\r' <"$CONSOLE" | grep -c 'TERN-INNER-INIT'; }

run_tern_linux --timeout 120 --cmds 'echo rebooting; reboot -f' -- -o on_reboot=exit
tr -d '\r' <"$CONSOLE" | grep -v '^\[' | sed 's/^/  exit| /'
[ "$(count)" = 1 ] || fail "on_reboot=exit: $(count) boots, want 1"
[ "$VM_RC" = 0 ] || fail "on_reboot=exit: tern exited with $VM_RC after the guest's reboot (want 0)"

dd if=/dev/zero of=disk.img bs=1M count=1 2>/dev/null
run_tern_linux --timeout 200 --cmds '
n=$(dd if=/dev/vda bs=1 count=1 2>/dev/null | od -An -tu1 | tr -d " ")
echo "boot-mark=$n"
if [ "$n" = 0 ]; then
    printf "\001" | dd of=/dev/vda bs=1 count=1 conv=notrunc,fsync 2>/dev/null
    echo rebooting; reboot -f
fi' -- -o on_reboot=restart -o disk.0.path=disk.img
tr -d '\r' <"$CONSOLE" | grep -v '^\[' | sed 's/^/  restart| /'
[ "$(count)" = 2 ] || fail "on_reboot=restart: $(count) boots, want 2 (a reboot, then a power-off)"
expect_console '^boot-mark=0$' "the first boot did not see a clean disk"
expect_console '^boot-mark=1$' "the second boot did not see the first boot's mark"
expect_console 'on_reboot=restart boots it again' "tern did not say it restarted"
[ "$VM_RC" = 0 ] || fail "on_reboot=restart: tern exited with $VM_RC after the second boot's poweroff -f (want 0)"
metric inner_tern_reboot_total "$VM_TOTAL" s
