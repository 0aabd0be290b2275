# An initrd over 16 MiB works: the inner initrd plus a 20 MiB file of
# random bytes (second cpio archive) arrives byte for byte.
# timeout: 300
. /nested/lib.sh
need_vmm

mkdir -p big
dd if=/dev/urandom of=big/blob bs=1M count=20 2>/dev/null || fail "cannot make the 20 MiB file"
sum=$(md5sum big/blob | cut -d' ' -f1)
initrd_with "$INNER_INITRD" big big.initrd || fail "cannot build the initrd"
size=$(wc -c <big.initrd)
echo "initrd: $size bytes, blob md5 $sum"
[ "$size" -gt $((16 * 1024 * 1024)) ] || fail "initrd is only $size bytes"
run_linux --timeout 240 --mem 512 --initrd big.initrd --cmds 'echo "BLOB $(md5sum /blob | cut -d" " -f1)"'
tr -d '\r' <"$CONSOLE" | sed 's/^/  | /'
expect_console 'TERN-INNER-INIT' "Linux under $NESTED_VMM never reached init with a $size-byte initrd"
expect_console "^BLOB $sum\$" "the 20 MiB file arrived different (or not at all)"
