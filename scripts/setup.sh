#!/usr/bin/env bash
# Installs what building and testing async-inspect needs, and nothing when it is all there:
#   - the workspace toolchain (the one rust-toolchain.toml names; rustup does not install it by itself),
#   - the nightly that builds the eBPF programs (with rust-src, for build-std),
#   - an older stable whose default symbol mangling is still "legacy", for one test fixture,
#   - bpf-linker, which links the eBPF object.
# Idempotent; a second run takes well under two seconds. Run it, or `source` it from another script
# (the other scripts do): sourcing also leaves cargo's bin directory on PATH and defines `as_root`.
set -euo pipefail

# Keep in step with rust-toolchain.toml.
WORKSPACE_TOOLCHAIN=1.98.0
# The eBPF toolchain. probe-user/build.rs has the same constant, EBPF_TOOLCHAIN: change both together.
EBPF_TOOLCHAIN=nightly-2026-07-01
# Builds the legacy-mangled fixture (target/legacy/release/inspect-demo); rustc >= 1.98 mangles v0.
LEGACY_TOOLCHAIN=1.95.0
# 0.11 and later link against a system LLVM, which these machines do not have.
BPF_LINKER_VERSION=0.10.2

_setup_step() { echo "setup: $*" >&2; }

_cargo_bin="${CARGO_HOME:-$HOME/.cargo}/bin"
case ":$PATH:" in
*":$_cargo_bin:"*) ;;
*) export PATH="$_cargo_bin:$PATH" ;;
esac

if ! command -v rustup >/dev/null 2>&1; then
    echo "setup: rustup is not installed (looked on PATH and in $_cargo_bin); install it from https://rustup.rs and run this again" >&2
    # shellcheck disable=SC2317 # `return` when sourced, `exit` when run
    return 1 2>/dev/null || exit 1
fi

# _ensure_toolchain NAME [COMPONENT...]: installs NAME with the minimal profile and COMPONENTs,
# unless it is already installed with all of them.
_ensure_toolchain() {
    local name=$1
    shift
    local toolchain _ present=false missing=()
    while read -r toolchain _; do
        if [[ $toolchain == "$name"-* ]]; then present=true; fi
    done < <(rustup toolchain list)
    if $present; then
        local installed component line found
        installed=$(rustup component list --toolchain "$name" --installed)
        for component in "$@"; do
            found=false
            while read -r line; do
                if [[ $line == "$component" || $line == "$component"-* ]]; then found=true; fi
            done <<<"$installed"
            if ! $found; then missing+=("$component"); fi
        done
        if ((${#missing[@]} == 0)); then
            _setup_step "toolchain $name: present"
            return 0
        fi
        _setup_step "toolchain $name: adding ${missing[*]}"
    else
        _setup_step "toolchain $name: installing"
    fi
    local args=(toolchain install "$name" --profile minimal --no-self-update)
    if (($# > 0)); then
        args+=(--component "$(
            IFS=,
            echo "$*"
        )")
    fi
    rustup "${args[@]}" >&2
}

_ensure_toolchain "$WORKSPACE_TOOLCHAIN" clippy rustfmt
_ensure_toolchain "$EBPF_TOOLCHAIN" rust-src
_ensure_toolchain "$LEGACY_TOOLCHAIN"

if [[ $(bpf-linker --version 2>/dev/null || true) == "bpf-linker $BPF_LINKER_VERSION" ]]; then
    _setup_step "bpf-linker $BPF_LINKER_VERSION: present"
else
    _setup_step "bpf-linker $BPF_LINKER_VERSION: installing (builds from source, a few minutes)"
    cargo "+$WORKSPACE_TOOLCHAIN" install bpf-linker --version "$BPF_LINKER_VERSION" --locked >&2
fi

# as_root COMMAND [ARG...]: runs COMMAND as root, through sudo when this shell is not root.
# Loading eBPF programs and attaching uprobes needs root (or CAP_BPF, CAP_PERFMON, CAP_SYS_PTRACE
# and, on some kernels, CAP_SYS_ADMIN). Only the command that needs it is elevated, so that the
# build stays owned by the user who ran it.
as_root() {
    if [[ $(id -u) -eq 0 ]]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        echo "note: loading eBPF programs and attaching uprobes needs root: running $(basename "$1") through sudo" >&2
        sudo -E env PATH="$PATH" "$@"
    else
        echo "error: loading eBPF programs and attaching uprobes needs root (or CAP_BPF, CAP_PERFMON, CAP_SYS_PTRACE and, on some kernels, CAP_SYS_ADMIN), and sudo is not installed: run this as root" >&2
        return 1
    fi
}
