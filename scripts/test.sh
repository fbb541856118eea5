#!/usr/bin/env bash
# Runs every test, including the end-to-end ones that load real eBPF programs into the kernel
# (installing the toolchains on first run). Arguments go to `cargo xtask test`, which passes them to
# `cargo test`, e.g. `scripts/test.sh -p probe-user -- --nocapture`.
#
# Tests that load eBPF programs need root: when this is not run as root, the test binaries (and only
# they; the build stays the user's) run through sudo.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=scripts/setup.sh
source "$root/scripts/setup.sh"
cd "$root"
# The end-to-end test of the live view drives it in a real terminal, through tmux; the one of
# older kernels boots Debian 12's own kernel (6.1) in qemu with a busybox initramfs.
missing=()
command -v tmux >/dev/null 2>&1 || missing+=(tmux)
command -v qemu-system-x86_64 >/dev/null 2>&1 || missing+=(qemu-system-x86)
[[ -x /bin/busybox ]] || missing+=(busybox-static)
updated=false
if ((${#missing[@]} > 0)); then
    echo "test: installing ${missing[*]} (for the live view's and the old kernel's end-to-end tests)" >&2
    as_root apt-get update -qq >&2
    updated=true
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
fi
vm="$root/target/vm"
if ! compgen -G "$vm/vmlinuz-6.1*" >/dev/null; then
    $updated || as_root apt-get update -qq >&2
    package=$(apt-cache search --names-only '^linux-image-6\.1\.0-[0-9]+-cloud-amd64-unsigned$' |
        awk '{print $1}' | sort -V | tail -1)
    if [[ -z $package ]]; then
        echo "test: no Linux 6.1 kernel package (linux-image-6.1.0-N-cloud-amd64-unsigned) in this machine's apt sources (Debian 12's): the old-kernel test needs one" >&2
        exit 1
    fi
    echo "test: fetching $package for the old-kernel test" >&2
    mkdir -p "$vm/package"
    (cd "$vm/package" && apt-get download -qq "$package" 2>/dev/null && dpkg-deb -x ./*.deb .)
    cp "$vm"/package/boot/vmlinuz-* "$vm/"
    rm -rf "$vm/package"
fi
unset CARGO_TARGET_DIR
exec cargo xtask test "$@"
