#!/bin/sh
# Install this ecgedge pack on the device: sh install.sh [--prefix DIR] [--offline] [--systemd ...]
#
# This POSIX sh front finds a Python 3 interpreter and hands over to install.py (next to this
# file, standard library only), which checks the platform, the hashes of every file in the pack
# and the free space, builds a virtualenv in a new release folder, installs the wheels, runs
# `ecgedge device selftest`, and only then points PREFIX/current at the new release. A failure
# at any step removes the new release and leaves the previous installation untouched.
# `sh install.sh --help` lists the options.
#
# Environment:
#   ECGEDGE_PYTHON       the interpreter to install with (default: python3 on PATH)
#   ECGEDGE_EXEC_PREFIX  a command put in front of every program the installer starts, e.g.
#                        /usr/bin/qemu-aarch64-static in an arm64 chroot on an x86_64 host
#                        without binfmt_misc (the ecgedge arm64 proof); empty on a real device
set -eu

# Shell built-ins only up to the exec below: under emulation without binfmt_misc this shell
# cannot start other arm64 programs (dirname, uname, ...), only ECGEDGE_EXEC_PREFIX can.
case $0 in
    */*) here=${0%/*} ;;
    *) here=. ;;
esac
here=$(cd "$here" && pwd)
python=${ECGEDGE_PYTHON:-}
if [ -z "$python" ]; then
    if command -v python3 >/dev/null 2>&1; then
        python=$(command -v python3)
    else
        echo "install.sh: error: python3 not found; install it first (Debian / Raspberry Pi OS: sudo apt install python3 python3-venv)" >&2
        exit 2
    fi
fi
if [ ! -f "$here/install.py" ] || [ ! -f "$here/pack.json" ]; then
    echo "install.sh: error: $here is not an unpacked ecgedge pack (install.py or pack.json missing); unpack the whole archive: tar -xzf PACK.tar.gz" >&2
    exit 2
fi
# ECGEDGE_EXEC_PREFIX is meant to split into words (a command and its options).
# shellcheck disable=SC2086
exec ${ECGEDGE_EXEC_PREFIX:-} "$python" "$here/install.py" "$@"
