#!/usr/bin/env bash
# Measures what probing costs the demo's poll-heavy workload, and how many events the probe absorbs.
#
#   scripts/bench.sh [--runs N] [--tasks N] [--yields N]
#
# The probe needs root: when this is not run as root, only the probed runs go through sudo.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=scripts/setup.sh
source "$root/scripts/setup.sh"
cd "$root"
unset CARGO_TARGET_DIR
exec cargo xtask bench "$@"
