# Shared by the scripts: where cargo builds, and installing what is missing.
# shellcheck shell=bash

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
# A build cache outside the clone, reused by later clones; never required.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/kumulus/target}"
KUMULUS_BIN="$CARGO_TARGET_DIR/debug/kumulus"

say() { printf '==> %s\n' "$*" >&2; }

# need COMMAND DEBIAN-PACKAGE...: installs the packages when COMMAND is missing.
need() {
    local cmd="$1"; shift
    command -v "$cmd" >/dev/null 2>&1 && return 0
    say "installing $* (for $cmd)"
    if [ "$(id -u)" -ne 0 ]; then
        echo "$cmd is missing; install $* (as root: apt-get install $*)" >&2
        return 1
    fi
    if [ -z "${APT_UPDATED:-}" ]; then
        DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
        APT_UPDATED=1
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >&2
}

# What jobs and the scripts themselves need on the machine.
need_runtime() {
    need cargo cargo || { echo "install Rust (https://rustup.rs) first" >&2; return 1; }
    need git git
    need node nodejs
    need npm npm
    need curl curl
    need jq jq
    need bwrap bubblewrap   # the jobs' sandbox
}
