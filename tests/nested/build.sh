#!/bin/bash
# Build the initramfs images of the nested harness.
#
#   inner initrd   busybox, the virtio modules, inner/init
#                  -> work/inner.cpio.gz  (cached)
#   outer base     busybox, irqbypass/kvm/kvm-amd, the inner kernel and inner
#                  initrd, and (unless --no-qemu) qemu-system-x86_64 with its
#                  libraries and firmware -> work/outer-base[-noqemu].cpio (cached)
#   outer overlay  outer/init, outer/lib.sh, tests/*.sh, the binaries given
#                  with --bin/--tern and their libraries, a config file
#                  -> rebuilt every time
# The outer initrd (--out) is the base and the overlay concatenated: Linux
# unpacks concatenated cpio archives one after the other.
#
# Usage: build.sh --out FILE [--tern PATH] [--bin PATH]... [--no-qemu]
#                 [--set NAME=VALUE]...
#   --tern PATH       tern binary (also put ternctl/tern-img from the same
#                     directory if they exist); installed in /tern/bin
#   --bin PATH        any other binary for /tern/bin (with its libraries)
#   --no-qemu         leave QEMU out of the outer machine (no anchor tests)
#   --set NAME=VALUE  a line for /nested/config (read by outer/init)
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
WORK=${TERN_NESTED_WORK:-$here/work}

die() { echo "build.sh: $*" >&2; exit 1; }
log() { echo "build.sh: $*" >&2; }

out=
bins=()
with_qemu=1
settings=()
while [ $# -gt 0 ]; do
    case $1 in
        --out) out=${2:?--out needs a file}; shift 2 ;;
        --tern)
            t=${2:?--tern needs a path}; shift 2
            [ -x "$t" ] || die "tern binary '$t' not found or not executable (build it first: meson compile -C BUILDDIR)"
            bins+=("$t")
            # the companions, from the same build (tern-img lives in img/)
            for extra in ternctl tern-img img/tern-img; do
                [ -x "$(dirname "$t")/$extra" ] && bins+=("$(dirname "$t")/$extra")
            done ;;
        --bin)
            b=${2:?--bin needs a path}; shift 2
            [ -x "$b" ] || die "binary '$b' not found or not executable"
            bins+=("$b") ;;
        --no-qemu) with_qemu=0; shift ;;
        --set) settings+=("${2:?--set needs NAME=VALUE}"); shift 2 ;;
        -h|--help) sed -n '2,24p' "$0"; exit 0 ;;
        *) die "unknown argument '$1' (see --help)" ;;
    esac
done
[ -n "$out" ] || die "--out FILE is required"

for tool in cpio gzip find ldd sort md5sum; do
    command -v $tool >/dev/null || die "'$tool' not found (Debian packages: cpio, gzip, findutils, libc-bin, coreutils)"
done

[ -f "$WORK/kernel.env" ] || "$here/fetch.sh" || die "fetch.sh failed"
# shellcheck disable=SC1091
. "$WORK/kernel.env"
[ -f "$KERNEL" ] && [ -d "$MODDIR" ] && [ -x "$BUSYBOX" ] ||
    die "work/kernel.env names files that are gone; run tests/nested/fetch.sh --force"

# --- helpers ----------------------------------------------------------------

# Busybox and its applet links under $1.
install_busybox() {
    local root=$1 a
    mkdir -p "$root/bin" "$root/sbin" "$root/usr/bin" "$root/usr/sbin"
    cp "$BUSYBOX" "$root/bin/busybox"
    for a in $("$BUSYBOX" --list); do
        [ "$a" = busybox ] || ln -sf busybox "$root/bin/$a"
    done
}

# All module files of the kernel, once.
modlist=$(find "$MODDIR/kernel" -name '*.ko*')

# Print the file of module $1 (name with - or _), empty if the kernel has none.
module_file() {
    local n1=${1//-/_} n2=${1//_/-}
    grep -E "/($n1|$n2)\.ko(\.xz|\.zst|\.gz)?$" <<<"$modlist" | head -n 1
}

# Uncompressed contents of module file $1 on stdout.
module_cat() {
    case $1 in
        *.ko.xz)  command -v xz >/dev/null || die "'xz' not found (package xz-utils) to decompress $1"
                  xz -dc "$1" ;;
        *.ko.zst) command -v zstd >/dev/null || die "'zstd' not found (package zstd) to decompress $1"
                  zstd -qdc "$1" ;;
        *.ko.gz)  gzip -dc "$1" ;;
        *)        cat "$1" ;;
    esac
}

# Add module $2 and, first, the modules it depends on (from its .modinfo
# "depends=" field) to $1/lib/modules, appending names to $1/lib/modules/order
# in load order.  Modules built into the kernel are skipped.
add_module() {
    local root=$1 name=$2 f deps d
    grep -qx "$name" "$root/lib/modules/order" 2>/dev/null && return 0
    f=$(module_file "$name")
    if [ -z "$f" ]; then
        if grep -qE "/(${name//-/_}|${name//_/-})\.ko$" "$MODDIR/modules.builtin" 2>/dev/null; then
            return 0
        fi
        log "warning: module $name is not in kernel $KVER; left out"
        return 0
    fi
    deps=$(module_cat "$f" | tr '\0' '\n' | sed -n 's/^depends=//p' | head -n 1 | tr ',' ' ')
    for d in $deps; do
        add_module "$root" "$d"
    done
    mkdir -p "$root/lib/modules"
    module_cat "$f" >"$root/lib/modules/$name.ko"
    echo "$name" >>"$root/lib/modules/order"
}

# Copy binary $2 to $1$3 and the shared libraries ldd resolves for it
# (including the dynamic loader) to the same paths under $1.
add_binary() {
    local root=$1 bin=$2 dest=$3 lib
    mkdir -p "$root$(dirname "$dest")"
    cp -L "$bin" "$root$dest"
    chmod 755 "$root$dest"
    if ldd "$bin" >/dev/null 2>&1; then
        ldd "$bin" | grep -q 'not found' && die "$bin: libraries not found: $(ldd "$bin" | grep 'not found' | tr -s ' \t' ' ')"
        for lib in $(ldd "$bin" | sed -n 's/.*=> \(\/[^ ]*\).*/\1/p; s/^[[:space:]]*\(\/[^ ]*\) (0x.*/\1/p'); do
            [ -e "$root$lib" ] && continue
            mkdir -p "$root$(dirname "$lib")"
            cp -L "$lib" "$root$lib"
        done
    fi
}

# cpio (newc, owned by root) of directory $1 into file $2.
make_cpio() {
    (cd "$1" && find . -mindepth 1 | LC_ALL=C sort | cpio -o -H newc -R 0:0 --quiet) >"$2"
}

inputs_key() {
    { echo "$KVER $BUSYBOX $*"; cat "$here/build.sh" "$here/inner/init"; } | md5sum | cut -d' ' -f1
}

# --- inner initrd -------------------------------------------------------------
inner_modules="virtio virtio_ring virtio_pci_modern_dev virtio_pci_legacy_dev virtio_pci
    virtio_blk failover net_failover virtio_net virtio-rng virtio_console virtio_balloon"

inner=$WORK/inner.cpio.gz
key=$(inputs_key inner)
if [ ! -f "$inner" ] || [ "$(cat "$inner.key" 2>/dev/null)" != "$key" ]; then
    log "building the inner initrd"
    root=$WORK/inner-root.$$
    rm -rf "$root"
    mkdir -p "$root"/{proc,sys,dev,tmp,run,root,etc}
    install_busybox "$root"
    for m in $inner_modules; do add_module "$root" "$m"; done
    cp "$here/inner/init" "$root/init"
    chmod 755 "$root/init"
    make_cpio "$root" "$WORK/inner.cpio.$$"
    log "inner modules: $(tr '\n' ' ' <"$root/lib/modules/order")"
    gzip -9n <"$WORK/inner.cpio.$$" >"$inner.tmp.$$"
    rm -f "$WORK/inner.cpio.$$"
    rm -rf "$root"
    mv "$inner.tmp.$$" "$inner"
    echo "$key" >"$inner.key"
    log "inner initrd: $inner ($(du -h "$inner" | cut -f1))"
fi

# --- outer base -------------------------------------------------------------
qemu_bin=$(command -v qemu-system-x86_64 || true)
if [ $with_qemu = 1 ]; then
    [ -n "$qemu_bin" ] || die "qemu-system-x86_64 not found (package qemu-system-x86)"
    base=$WORK/outer-base.cpio
    qkey=$(ls -lL --time-style=+%s "$qemu_bin")
else
    base=$WORK/outer-base-noqemu.cpio
    qkey=none
fi
key=$(inputs_key "outer $qkey qemu-img $(cat "$inner.key")")
if [ ! -f "$base" ] || [ "$(cat "$base.key" 2>/dev/null)" != "$key" ]; then
    log "building the outer base ($( [ $with_qemu = 1 ] && echo 'with' || echo 'without') QEMU)"
    root=$WORK/outer-root.$$
    rm -rf "$root"
    mkdir -p "$root"/{proc,sys,dev,tmp,run,root,etc,inner,nested,tern/bin}
    install_busybox "$root"
    # tun: the virtio-net tests make taps in the outer machine
    for m in irqbypass kvm kvm-amd tun; do add_module "$root" "$m"; done
    for m in irqbypass kvm kvm_amd; do
        grep -qx "${m}" "$root/lib/modules/order" || grep -qx "${m//_/-}" "$root/lib/modules/order" ||
            die "module $m not found in $MODDIR"
    done
    cp "$KERNEL" "$root/inner/bzImage"
    cp "$inner" "$root/inner/initrd.cpio.gz"
    if [ $with_qemu = 1 ]; then
        add_binary "$root" "$qemu_bin" /usr/bin/qemu-system-x86_64
        # qemu-img: the oracle the qcow2 disk tests check images with
        if qimg=$(command -v qemu-img); then
            add_binary "$root" "$qimg" /usr/bin/qemu-img
        else
            log "warning: qemu-img not found (package qemu-utils): the qcow2 disk tests will skip"
        fi
        # Firmware for -nodefaults direct kernel boot (pc and q35): SeaBIOS
        # or qboot, the linuxboot/PVH option ROMs, the vAPIC ROM, and the
        # virtio-net boot ROM QEMU loads for virtio-net-pci.
        for fw in seabios/bios-256k.bin seabios/bios.bin qemu/linuxboot_dma.bin qemu/linuxboot.bin \
                  qemu/pvh.bin qemu/kvmvapic.bin qemu/qboot.rom qemu/multiboot_dma.bin; do
            if [ -e "/usr/share/$fw" ]; then
                mkdir -p "$root/usr/share/$(dirname "$fw")"
                cp -L "/usr/share/$fw" "$root/usr/share/$fw"
            else
                log "warning: QEMU firmware /usr/share/$fw not found"
            fi
        done
        for rom in /usr/lib/ipxe/qemu/efi-virtio.rom /usr/lib/ipxe/qemu/efi-e1000.rom; do
            [ -e "$rom" ] || continue
            mkdir -p "$root$(dirname "$rom")"
            cp -L "$rom" "$root$rom"
        done
    fi
    make_cpio "$root" "$base.tmp.$$"
    rm -rf "$root"
    mv "$base.tmp.$$" "$base"
    echo "$key" >"$base.key"
    log "outer base: $base ($(du -h "$base" | cut -f1))"
fi

# --- outer overlay ------------------------------------------------------------
mkdir -p "$(dirname "$out")"
root=$out.overlay
rm -rf "$root"
mkdir -p "$root"/{nested/tests,tern/bin}
cp "$here/outer/init" "$root/init"
chmod 755 "$root/init"
cp "$here/outer/lib.sh" "$root/nested/lib.sh"
for t in "$here"/tests/*.sh; do
    [ -e "$t" ] && cp "$t" "$root/nested/tests/"
done
for b in ${bins[@]+"${bins[@]}"}; do
    add_binary "$root" "$b" "/tern/bin/$(basename "$b")"
done
{
    echo "# written by tests/nested/build.sh"
    echo "KVER=$KVER"
    echo "WITH_QEMU=$with_qemu"
    for s in ${settings[@]+"${settings[@]}"}; do echo "$s"; done
} >"$root/nested/config"
make_cpio "$root" "$out.overlay.cpio"
rm -rf "$root"
cat "$base" "$out.overlay.cpio" >"$out.tmp"
rm -f "$out.overlay.cpio"
mv "$out.tmp" "$out"
log "outer initrd: $out ($(du -h "$out" | cut -f1); inner initrd $(du -h "$inner" | cut -f1))"
