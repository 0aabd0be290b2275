# Helpers for the tests that run inside the outer machine (sourced by
# outer/init, by every test, and by the --shell shell).  Busybox sh.
#
# Boot the inner Linux (/inner/bzImage + /inner/initrd.cpio.gz):
#   run_tern_linux [OPTIONS] [-- TERN-ARGS...]     under tern
#   run_qemu_linux [OPTIONS] [-- QEMU-ARGS...]     under QEMU/KVM (the anchor)
#   run_inner_cmds 'CMD; CMD' [OPTIONS] [-- ARGS]  under $NESTED_VMM (tern by
#                                                  default, or qemu); returns
#                                                  the commands' exit status
# OPTIONS:
#   --timeout SECS   kill the VMM after SECS (default $VM_TIMEOUT, 120)
#   --cmds 'CMDS'    commands for the inner init (sent base64-encoded on the
#                    kernel command line as tern.cmd64=...)
#   --script FILE    a script for the inner init: appended to the initrd as
#                    /test.sh (second cpio archive)
#   --initrd FILE    use FILE instead of /inner/initrd.cpio.gz (or "none")
#   --kernel FILE    use FILE instead of /inner/bzImage
#   --append 'ARGS'  more kernel command-line arguments
#   --cmdline 'ARGS' the whole kernel command line (replaces the default)
#   --cpus N         vCPUs (default 1)
#   --mem MIB        guest memory in MiB (default 256)
#   --out FILE       where the console goes (default: a fresh file in /tmp)
#   --shell          interactive: the inner console on this terminal, and
#                    a shell in the inner guest (tern.shell); nothing captured
# After a run (not --shell):
#   $CONSOLE     file with the VMM's console output and its stderr
#   $VM_RC       the VMM's exit status (137 = killed by the timeout)
#   $VM_MARKER   seconds from VMM start to the inner "TERN-INNER-INIT"
#                marker (empty if it never came)
#   $VM_TOTAL    seconds from VMM start to VMM exit
#   $INNER_RC    exit status of the inner commands (empty if not reported)
#   $VM_GUEST_INIT  the inner kernel's uptime when init started (its own
#                clock: the part of $VM_MARKER spent in Linux, not in the VMM
#                and firmware)
#
# Checks and reporting:
#   expect_console PATTERN [WHAT]   fail unless $CONSOLE has a line matching
#                                   PATTERN (grep -E); prints the console tail
#   fail MSG / skip MSG             end the test (exit 1 / exit 77)
#   need_tern / need_qemu / need_kvm   skip or fail when missing
#   run_linux / need_vmm            the same for $NESTED_VMM (tern or qemu)
#   metric NAME VALUE UNIT          a "@@TERN-METRIC" line run.sh collects

INNER_KERNEL=${INNER_KERNEL:-/inner/bzImage}
INNER_INITRD=${INNER_INITRD:-/inner/initrd.cpio.gz}
# Serial console, quiet (every byte on the serial line is an exit, which is
# slow two levels down), and a panic ends the guest at once.
INNER_CMDLINE=${INNER_CMDLINE:-console=ttyS0 quiet panic=-1}
VM_TIMEOUT=${VM_TIMEOUT:-120}
NESTED_VMM=${NESTED_VMM:-tern}
TERN=${TERN:-tern}
QEMU=${QEMU:-qemu-system-x86_64}
QEMU_MACHINE=${QEMU_MACHINE:-pc}

# Centiseconds since boot.
now_cs() {
    read -r _up _ </proc/uptime
    _s=${_up%.*}
    _f=${_up#*.}
    echo $(( _s * 100 + ${_f#0} ))
}

# Centiseconds -> "S.CC".
fmt_cs() {
    printf '%d.%02d' $(($1 / 100)) $(($1 % 100))
}

fail() { echo "FAIL: $*"; exit 1; }
skip() { echo "SKIP: $*"; exit 77; }
metric() { echo "@@TERN-METRIC $1 $2 $3"; }

need_kvm() {
    [ -c /dev/kvm ] || fail "/dev/kvm is missing (kvm/kvm-amd not inserted? see the outer console)"
}
need_qemu() {
    command -v "$QEMU" >/dev/null 2>&1 || skip "no $QEMU in the outer machine (built with --no-qemu)"
}
need_tern() {
    command -v "$TERN" >/dev/null 2>&1 || skip "no tern binary in the outer machine (run.sh --tern PATH)"
}

# Print the last lines of the console, for a failing test's log.
show_console() {
    echo "---- console ($CONSOLE), last ${1:-40} lines ----"
    tail -n "${1:-40}" "$CONSOLE" | tr -d '\r'
    echo "---- end of console ----"
}

expect_console() {
    if ! tr -d '\r' <"$CONSOLE" | grep -Eq -- "$1"; then
        show_console
        fail "${2:-console has no line matching '$1'} (VMM exit status $VM_RC)"
    fi
}

# Build an initrd: $1 (an initrd) followed by a newc cpio of directory $2,
# written to $3.  Linux unpacks the concatenated archives in order; an
# uncompressed one must start at a multiple of 4 bytes (zeros between
# archives are skipped), so $1 is padded.
initrd_with() {
    cat "$1" >"$3" || return 1
    _pad=$(( (4 - $(wc -c <"$3") % 4) % 4 ))
    [ $_pad = 0 ] || dd if=/dev/zero bs=1 count=$_pad 2>/dev/null >>"$3"
    (cd "$2" && find . -mindepth 1 | sort | cpio -o -H newc 2>/dev/null) >>"$3"
}

_vm_seq=0

# run_vm VMM [OPTIONS] [-- ARGS]: the engine behind run_{tern,qemu}_linux.
run_vm() {
    _vmm=$1
    shift
    _timeout=$VM_TIMEOUT _cmds='' _script='' _initrd=$INNER_INITRD _kernel=$INNER_KERNEL
    _append='' _cmdline=$INNER_CMDLINE _cpus=1 _mem=256 _out='' _shell=0
    while [ $# -gt 0 ]; do
        case $1 in
            --timeout) _timeout=$2; shift 2 ;;
            --cmds) _cmds=$2; shift 2 ;;
            --script) _script=$2; shift 2 ;;
            --initrd) _initrd=$2; shift 2 ;;
            --kernel) _kernel=$2; shift 2 ;;
            --append) _append="$_append $2"; shift 2 ;;
            --cmdline) _cmdline=$2; shift 2 ;;
            --cpus) _cpus=$2; shift 2 ;;
            --mem) _mem=$2; shift 2 ;;
            --out) _out=$2; shift 2 ;;
            --shell) _shell=1; shift ;;
            --) shift; break ;;
            *) echo "run_vm: unknown option '$1'" >&2; return 2 ;;
        esac
    done
    _vm_seq=$((_vm_seq + 1))
    _tag=/tmp/vm.$$.$_vm_seq
    if [ -n "$_script" ]; then
        [ -f "$_script" ] || { echo "run_vm: no script '$_script'" >&2; return 2; }
        mkdir -p "$_tag.root"
        cp "$_script" "$_tag.root/test.sh"
        initrd_with "$_initrd" "$_tag.root" "$_tag.initrd" || return 2
        _initrd=$_tag.initrd
    fi
    _c="$_cmdline$_append"
    [ -n "$_cmds" ] && _c="$_c tern.cmd64=$(printf '%s\n' "$_cmds" | base64 | tr -d '\n')"
    [ $_shell = 1 ] && _c="$_c tern.shell"

    case $_vmm in
        qemu)
            set -- "$QEMU" -enable-kvm -nodefaults -no-user-config -M "$QEMU_MACHINE" \
                -cpu host -smp "$_cpus" -m "$_mem" -no-reboot \
                -kernel "$_kernel" -append "$_c" "$@"
            [ "$_initrd" = none ] || set -- "$@" -initrd "$_initrd"
            if [ $_shell = 1 ]; then
                set -- "$@" -nographic -serial mon:stdio
            else
                set -- "$@" -display none -monitor none -serial stdio
            fi ;;
        tern)
            set -- "$TERN" -o "kernel=$_kernel" -o "cmdline=$_c" -o "cpus=$_cpus" \
                -o "memory.size=${_mem}M" "$@"
            [ "$_initrd" = none ] || set -- "$@" -o "initrd=$_initrd" ;;
        *)
            echo "run_vm: unknown VMM '$_vmm' (tern or qemu)" >&2; return 2 ;;
    esac

    if [ $_shell = 1 ]; then
        echo "run_vm: $*" >&2
        "$@"
        return
    fi

    CONSOLE=${_out:-$_tag.console}
    : >"$CONSOLE"
    echo "run_vm: $*" >"$_tag.cmd"
    rm -f "$_tag.rc" "$_tag.mark"
    _t0=$(now_cs)
    # The reader stamps the moment the marker line arrives.
    { timeout -s KILL "$_timeout" "$@" </dev/null 2>&1; echo $? >"$_tag.rc"; } |
        while IFS= read -r _line; do
            case $_line in
                *TERN-INNER-INIT*) [ -f "$_tag.mark" ] || now_cs >"$_tag.mark" ;;
            esac
            printf '%s\n' "$_line"
        done >"$CONSOLE"
    _t1=$(now_cs)
    VM_RC=$(cat "$_tag.rc" 2>/dev/null || echo 255)
    VM_TOTAL=$(fmt_cs $((_t1 - _t0)))
    VM_MARKER=
    [ -f "$_tag.mark" ] && VM_MARKER=$(fmt_cs $(($(cat "$_tag.mark") - _t0)))
    INNER_RC=$(tr -d '\r' <"$CONSOLE" | sed -n 's/.*TERN-INNER-RC=\([0-9]*\).*/\1/p' | tail -n 1)
    VM_GUEST_INIT=$(tr -d '\r' <"$CONSOLE" | sed -n 's/.*TERN-INNER-INIT uptime=\([0-9.]*\).*/\1/p' | head -n 1)
    _m=none
    [ -z "$VM_MARKER" ] || _m=${VM_MARKER}s
    echo "run_vm: $_vmm exit=$VM_RC marker=$_m total=${VM_TOTAL}s inner_rc=${INNER_RC:-none} console=$CONSOLE"
    [ "$VM_RC" = 137 ] && echo "run_vm: $_vmm killed after ${_timeout}s"
    return 0
}

run_tern_linux() { run_vm tern "$@"; }
run_qemu_linux() { run_vm qemu "$@"; }
# The VMM under test for the linux-* tests: tern, or qemu to check the tests
# themselves against the anchor (run.sh --vmm qemu).
run_linux() { run_vm "$NESTED_VMM" "$@"; }
need_vmm() {
    case $NESTED_VMM in
        tern) need_tern ;;
        qemu) need_qemu ;;
        *) fail "NESTED_VMM='$NESTED_VMM': want tern or qemu" ;;
    esac
    need_kvm
}

# run_inner_cmds 'CMDS' [OPTIONS] [-- ARGS]: run CMDS in the inner guest under
# $NESTED_VMM; print its console; return the commands' status (or 125 when
# the guest never reported one).
run_inner_cmds() {
    _ic=$1
    shift
    run_vm "$NESTED_VMM" --cmds "$_ic" "$@" || return $?
    tr -d '\r' <"$CONSOLE"
    [ -n "$INNER_RC" ] || return 125
    return "$INNER_RC"
}
