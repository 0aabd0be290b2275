#!/bin/sh
# Fetch what the nested harness needs, from Debian packages only, into
# tests/nested/work (git-ignored).  Idempotent: what is already there is kept.
#
#   - linux-image-cloud-amd64 and the versioned kernel package it depends on,
#     downloaded with `apt-get download` and unpacked with `dpkg -x` (never
#     installed on the host);
#   - a static busybox: the host's /bin/busybox when it is the static one
#     (package busybox-static), else busybox-static is downloaded and unpacked
#     the same way.
#
# Writes work/kernel.env (KVER, KERNEL, MODDIR, BUSYBOX) for build.sh.
#
# Usage: tests/nested/fetch.sh [--force]
#   TERN_NESTED_WORK=DIR   work directory (default: tests/nested/work)
set -eu

here=$(cd "$(dirname "$0")" && pwd)
WORK=${TERN_NESTED_WORK:-$here/work}
force=0
case ${1:-} in
    --force) force=1 ;;
    "") ;;
    -h|--help) sed -n '2,17p' "$0"; exit 0 ;;
    *) echo "fetch.sh: unknown argument '$1'" >&2; exit 2 ;;
esac

die() { echo "fetch.sh: $*" >&2; exit 1; }
log() { echo "fetch.sh: $*" >&2; }

for tool in apt-get apt-cache dpkg dpkg-deb; do
    command -v "$tool" >/dev/null 2>&1 ||
        die "'$tool' not found: the nested harness takes its kernel and busybox from Debian packages"
done

mkdir -p "$WORK/debs"
cd "$WORK"

meta=linux-image-cloud-amd64
sandbox=
[ "$(id -u)" != 0 ] || sandbox="-o APT::Sandbox::User=root"

# Once per run at most: refresh apt's lists (needs root).
updated=0
apt_update() {
    [ $updated = 0 ] || return 1
    updated=1
    log "refreshing apt's package lists (apt-get update)"
    if [ "$(id -u)" != 0 ]; then
        log "not root: cannot run apt-get update; run it as root, then retry"
        return 1
    fi
    apt-get update -qq >&2 || return 1
}

# Print the versioned kernel package that $meta depends on, e.g.
# linux-image-6.1.0-56-cloud-amd64.  Empty if apt does not know $meta.
resolve_kernel_pkg() {
    apt-cache depends "$meta" 2>/dev/null |
        sed -n 's/^ *Depends: *\(linux-image-[0-9][^ ]*-cloud-amd64\) *$/\1/p' | head -n 1
}

# apt-get download PKG... into debs/.
download() {
    # As root, apt would warn that its _apt user cannot write here.
    (cd debs && apt-get download $sandbox "$@" >&2)
}

# A previous fetch recorded the kernel it unpacked.
cached_kver=
if [ -f kernel.env ]; then
    cached_kver=$(sed -n 's/^KVER=//p' kernel.env)
fi

# --- kernel -----------------------------------------------------------------
kpkg=$(resolve_kernel_pkg)
if [ -z "$kpkg" ]; then
    if [ $force = 0 ] && [ -n "$cached_kver" ] && [ -f "kernel/$cached_kver/.unpacked" ]; then
        log "apt does not know $meta (no package lists?); using the cached kernel $cached_kver"
        kpkg=linux-image-$cached_kver
    else
        apt_update || die "apt does not know $meta and its lists could not be refreshed"
        kpkg=$(resolve_kernel_pkg)
        [ -n "$kpkg" ] || die "apt-cache depends $meta names no linux-image-*-cloud-amd64 package"
    fi
fi
kver=${kpkg#linux-image-}
kdir=kernel/$kver

if [ $force = 1 ] || [ ! -f "$kdir/.unpacked" ]; then
    if [ $force = 1 ] || ! ls debs/"${kpkg}"_*.deb >/dev/null 2>&1; then
        log "downloading $meta and $kpkg"
        if ! download "$meta" "$kpkg"; then
            # Stale lists name files the mirror no longer has; the fresh ones
            # may name a newer kernel.
            apt_update || die "apt-get download $meta $kpkg failed and the lists could not be refreshed"
            kpkg=$(resolve_kernel_pkg)
            [ -n "$kpkg" ] || die "apt-cache depends $meta names no linux-image-*-cloud-amd64 package"
            kver=${kpkg#linux-image-}
            kdir=kernel/$kver
            download "$meta" "$kpkg" || die "apt-get download $meta $kpkg failed"
        fi
    fi
    deb=$(ls -t debs/"${kpkg}"_*.deb | head -n 1)
    log "unpacking $deb into $WORK/$kdir"
    rm -rf "$kdir"
    mkdir -p "$kdir"
    dpkg -x "$deb" "$kdir"
    touch "$kdir/.unpacked"
    # Older kernels are not needed any more.
    for old in kernel/*; do
        [ "$old" = "$kdir" ] || rm -rf "$old"
    done
    for old in debs/linux-image-*.deb; do
        case $old in debs/"${kpkg}"_*|debs/"${meta}"_*) ;; *) rm -f "$old" ;; esac
    done
else
    log "kernel $kver already unpacked"
fi

kernel=$WORK/$kdir/boot/vmlinuz-$kver
moddir=$WORK/$kdir/lib/modules/$kver
[ -f "$kernel" ] || die "$kpkg has no /boot/vmlinuz-$kver"
[ -d "$moddir" ] || die "$kpkg has no /lib/modules/$kver"

# --- busybox ----------------------------------------------------------------
# Static means: ldd finds no dynamic section ("not a dynamic executable").
is_static() {
    [ -x "$1" ] && ! ldd "$1" >/dev/null 2>&1
}
busybox=
for cand in /bin/busybox /usr/bin/busybox; do
    if is_static "$cand" && dpkg -S "$cand" 2>/dev/null | grep -q '^busybox-static:'; then
        busybox=$cand
        break
    fi
done
if [ -z "$busybox" ]; then
    busybox=$WORK/busybox-static/bin/busybox
    if [ $force = 1 ] || ! is_static "$busybox"; then
        if [ $force = 1 ] || ! ls debs/busybox-static_*.deb >/dev/null 2>&1; then
            log "host has no static busybox; downloading busybox-static"
            download busybox-static || { apt_update && download busybox-static; } ||
                die "apt-get download busybox-static failed"
        fi
        rm -rf busybox-static
        dpkg -x "$(ls -t debs/busybox-static_*.deb | head -n 1)" busybox-static
    fi
    is_static "$busybox" || die "busybox-static did not give a static $busybox"
fi

cat >kernel.env.tmp <<EOF
KVER=$kver
KERNEL=$kernel
MODDIR=$moddir
BUSYBOX=$busybox
EOF
mv kernel.env.tmp kernel.env
log "ready: kernel $kver, busybox $busybox"
