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
unset CARGO_TARGET_DIR
exec cargo xtask test "$@"
