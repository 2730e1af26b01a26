#!/bin/sh
# Build an arm64 Debian root filesystem (the userland of 64-bit Raspberry Pi OS) that runs
# under qemu user-mode emulation on an x86_64 host, for the ecgedge arm64 proof.
#
# Usage: sudo deploy/pi/make_rootfs.sh [ROOT]
#   ROOT  target folder (default: $ECGEDGE_ROOTFS or ~/.cache/ecgedge/arm64-rootfs)
# Environment:
#   ECGEDGE_DEBIAN_MIRROR  Debian mirror (default: the host's Debian mirror from its apt
#                          sources, else http://deb.debian.org/debian)
#   ECGEDGE_ROOTFS_SUITE   Debian suite (default bookworm: Python 3.11, as Raspberry Pi OS)
#
# Needs root, debootstrap and qemu-user-static (apt-get install debootstrap qemu-user-static).
# Idempotent: a finished root filesystem is checked and kept; an interrupted build is redone.
#
# Why not debootstrap's second stage: without binfmt_misc the kernel cannot start an arm64
# program, so only a process started explicitly as `qemu-aarch64-static PROG` runs; the second
# stage (dpkg running maintainer scripts that start more arm64 programs) cannot work that way.
# So the first stage (--foreign) resolves and downloads the packages with their dependencies,
# and this script unpacks every one of them with the host's dpkg-deb, then does by hand the
# little configuration Python needs (users, groups, CA bundle). The result runs python3, venv
# and pip under `chroot ROOT /usr/bin/qemu-aarch64-static /usr/bin/python3 ...`; it is not a
# bootable system and dpkg inside it does not know its packages are installed.
set -eu

PACKAGES=python3,python3-venv,ca-certificates
SUITE=${ECGEDGE_ROOTFS_SUITE:-bookworm}
ROOT=${1:-${ECGEDGE_ROOTFS:-$HOME/.cache/ecgedge/arm64-rootfs}}
QEMU=qemu-aarch64-static

say() { printf 'make_rootfs: %s\n' "$*"; }
die() { printf 'make_rootfs: error: %s\n' "$*" >&2; exit 2; }

host_debian_mirror() {
    # The first Debian (non-security) URI in the host's apt sources, deb822 or one-line style.
    cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources \
        2>/dev/null | awk '
        /^[[:space:]]*#/ { next }
        /^URIs:/ { for (i = 2; i <= NF; i++) print $i; next }
        /^deb[[:space:]]/ { for (i = 2; i <= NF; i++) if ($i ~ /^(https?|file):/) { print $i; break } }
        ' | grep -E '/debian/?$' | head -n 1
}

case $ROOT in
    "" | / | /* ) ;;
    *) ROOT=$(pwd)/$ROOT ;;
esac
[ -n "$ROOT" ] && [ "$ROOT" != / ] || die "refusing to use '$ROOT' as the root filesystem folder"

[ "$(id -u)" = 0 ] || die "needs root (debootstrap and chroot): sudo $0 $*"
for tool in debootstrap "$QEMU" dpkg-deb tar chroot; do
    command -v "$tool" >/dev/null 2>&1 || die "'$tool' not found: apt-get install debootstrap qemu-user-static"
done
QEMU_PATH=$(command -v "$QEMU")
MIRROR=${ECGEDGE_DEBIAN_MIRROR:-$(host_debian_mirror || true)}
MIRROR=${MIRROR:-http://deb.debian.org/debian}
STAMP_TEXT="suite=$SUITE packages=$PACKAGES arch=arm64"

check_root() {
    # python3 with the modules the proof needs: venv (the virtualenv), ssl and ensurepip (pip).
    chroot "$1" /usr/bin/$QEMU /usr/bin/python3 -c \
        'import sys, venv, ssl, ensurepip, platform; assert platform.machine() == "aarch64", platform.machine(); print("python", sys.version.split()[0], platform.machine())'
}

if [ -f "$ROOT/.ecgedge-rootfs" ] && [ "$(cat "$ROOT/.ecgedge-rootfs")" = "$STAMP_TEXT" ]; then
    cp "$QEMU_PATH" "$ROOT/usr/bin/$QEMU"   # the host's qemu may have been upgraded
    if check_root "$ROOT"; then
        say "already built: $ROOT"
        exit 0
    fi
    say "$ROOT is stamped but python3 does not run in it; rebuilding"
fi

WORK=$ROOT.partial
rm -rf "$WORK"
mkdir -p "$(dirname "$ROOT")"
say "first stage: debootstrap --foreign arm64 $SUITE from $MIRROR into $WORK"
debootstrap --foreign --arch=arm64 --variant=minbase --include="$PACKAGES" \
    "$SUITE" "$WORK" "$MIRROR" || die "debootstrap failed (network, mirror '$MIRROR' or disk space)"

say "unpacking $(ls "$WORK"/var/cache/apt/archives/*.deb | wc -l) packages with the host's dpkg-deb"
for deb in "$WORK"/var/cache/apt/archives/*.deb; do
    # --skip-old-files keeps the merged-/usr symlinks (/bin -> usr/bin) and what the first
    # stage already unpacked, as debootstrap's own `tar -k` does.
    dpkg-deb --fsys-tarfile "$deb" | tar --skip-old-files -C "$WORK" -xf - \
        || die "could not unpack $deb (disk space?)"
done

# What maintainer scripts would have done, limited to what Python needs.
[ -s "$WORK/etc/passwd" ] || cp "$WORK/usr/share/base-passwd/passwd.master" "$WORK/etc/passwd"
[ -s "$WORK/etc/group" ] || cp "$WORK/usr/share/base-passwd/group.master" "$WORK/etc/group"
mkdir -p "$WORK/etc/ssl/certs"
find "$WORK/usr/share/ca-certificates" -name '*.crt' -type f | sort | xargs cat \
    > "$WORK/etc/ssl/certs/ca-certificates.crt"
mkdir -p "$WORK/tmp" && chmod 1777 "$WORK/tmp"
rm -f "$WORK"/var/cache/apt/archives/*.deb
cp "$QEMU_PATH" "$WORK/usr/bin/$QEMU"

say "checking python3 under $QEMU"
check_root "$WORK" || die "python3 does not run in $WORK under $QEMU"
printf '%s\n' "$STAMP_TEXT" > "$WORK/.ecgedge-rootfs"
rm -rf "$ROOT"
mv "$WORK" "$ROOT"
say "done: $ROOT ($(du -sh "$ROOT" | cut -f1))"
