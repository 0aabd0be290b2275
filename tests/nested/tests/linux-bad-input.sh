# Bad input is a clear error, not a hang or a crash: a bzImage with a
# corrupt setup header, a file that is no kernel, an initrd larger than the
# guest's memory.  The VMM must exit non-zero, soon, and say why on stderr.
# timeout: 300
. /nested/lib.sh
need_vmm

# $1: what; $2: a word the error must contain (grep -Ei); rest: run_linux
# options.  Expects a non-zero exit, without a hang, naming the culprit.
expect_error() {
    what=$1
    word=$2
    shift 2
    run_linux --timeout 60 "$@"
    tr -d '\r' <"$CONSOLE" | sed 's/^/  | /' | tail -n 5
    if tr -d '\r' <"$CONSOLE" | grep -q 'TERN-INNER-INIT'; then
        fail "$what: the guest booted anyway"
    fi
    [ "$VM_RC" != 137 ] || fail "$what: $NESTED_VMM hung (killed after 60s) instead of an error"
    [ "$VM_RC" != 0 ] || fail "$what: $NESTED_VMM exited 0"
    [ -s "$CONSOLE" ] || fail "$what: $NESTED_VMM said nothing"
    tr -d '\r' <"$CONSOLE" | grep -Eqi -- "$word" ||
        fail "$what: the error does not mention '$word'"
    echo "ok: $what -> exit $VM_RC: $(tr -d '\r' <"$CONSOLE" | grep -v '^$' | head -n 1)"
}

# 1. A bzImage whose "HdrS" setup-header magic (offset 0x202) is broken.
cp "$INNER_KERNEL" bad-magic
printf 'XXXX' | dd of=bad-magic bs=1 seek=514 conv=notrunc 2>/dev/null
expect_error "bzImage with a corrupt header magic" kernel --kernel bad-magic

# 2. A file that is not a kernel at all.
printf 'this is not a kernel\n%.0s' $(seq 1 200) >not-a-kernel
expect_error "text file as kernel" kernel --kernel not-a-kernel

# 3. An initrd that does not fit: 160 MiB into a 128 MiB guest.
dd if=/dev/zero of=huge.initrd bs=1M count=160 2>/dev/null || fail "cannot make a 160 MiB file"
expect_error "initrd larger than guest memory" initrd --mem 128 --initrd huge.initrd
