#!/usr/bin/env bash
# Builds async-inspect and the bundled demo (installing the toolchains on first run), then probes the
# demo from its first instruction to its exit.
#
#   scripts/demo.sh [PROBE OPTION...] [-- DEMO ARG...]
#
# Options go to `async-inspect probe`, e.g. `scripts/demo.sh --json report.json`; arguments after
# `--` go to the demo, e.g. `scripts/demo.sh -- --ticks 10 --current-thread`.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=scripts/setup.sh
source "$root/scripts/setup.sh"

probe_args=()
demo_args=()
while (($# > 0)); do
    if [[ $1 == -- ]]; then
        shift
        demo_args=("$@")
        break
    fi
    probe_args+=("$1")
    shift
done

echo "demo: building async-inspect and inspect-demo" >&2
(
    cd "$root"
    unset CARGO_TARGET_DIR
    cargo build --release -p probe-user
    cargo build --profile release-debuginfo -p inspect-demo
)

# Run from the caller's directory, so that a relative `--json FILE` lands where they expect.
as_root "$root/target/release/async-inspect" probe "${probe_args[@]}" -- \
    "$root/target/release-debuginfo/inspect-demo" "${demo_args[@]}"
