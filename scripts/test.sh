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
# The end-to-end test of the live view drives it in a real terminal, through tmux.
if ! command -v tmux >/dev/null 2>&1; then
    echo "test: installing tmux (for the live view's end-to-end test)" >&2
    as_root apt-get update -qq >&2
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq tmux >&2
fi
unset CARGO_TARGET_DIR
exec cargo xtask test "$@"
