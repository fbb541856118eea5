#!/usr/bin/env bash
# Measures what probing costs, on the workloads below, and prints the figures (it never passes or fails):
#
#   scripts/bench.sh server [--rounds N] [--seconds S] [--clients N] [--fanout N]
#                           [--variants plain,probe,exact,floor,console]
#       a request/response tokio server (inspect-server) under closed-loop loopback load
#       (inspect-load): CPU per request plain, probed (default, --exact, --floor) and built with
#       console-subscriber (demo-console/, built into target/console), as a Markdown table.
#       --variants runs only those named, in that order (e.g. plain,probe for longer rounds).
#   scripts/bench.sh yield [--runs N] [--tasks N] [--yields N]
#       the demo's poll-heavy workload (tasks that only yield): slowdown probed and recording.
#   scripts/bench.sh [SERVER OR YIELD OPTION...]
#       both, server first.
#   scripts/bench.sh memory [--crowd N]
#       the collector's memory (VmRSS, steady and peak) with N parked tasks (default 100000).
#   scripts/bench.sh steady [--pairs N] [--phase-seconds S] [--control]
#       the default probe left attached to one server under one unbroken load: phases without
#       and with it, priced in CPU per request over 100-ms slices, split into its windows and
#       gaps. --control attaches nothing in the probed phases: the measure's noise here.
#
# The probe needs root: when this is not run as root, only the probe goes through sudo.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=scripts/setup.sh
source "$root/scripts/setup.sh"
cd "$root"
unset CARGO_TARGET_DIR
exec cargo xtask bench "$@"
