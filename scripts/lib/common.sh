# Shared by the scripts: where cargo builds, and installing what is missing.
# shellcheck shell=bash

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
# A build cache outside the clone, reused by later clones; never required.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/kumulus/target}"
# KUMULUS_BIN from the caller: that binary, and nothing is built for it.
if [ -n "${KUMULUS_BIN:-}" ]; then KUMULUS_BIN_GIVEN=1; else KUMULUS_BIN_GIVEN=""; fi
KUMULUS_BIN="${KUMULUS_BIN:-$CARGO_TARGET_DIR/debug/kumulus}"

say() { printf '==> %s\n' "$*" >&2; }

# The cache may hold another clone's build of these crates (cargo keys a
# workspace's crates by their path inside it, not by the clone's place),
# which cargo would take as fresh. When the last build in the cache came
# from another clone, the sources are touched so that cargo rebuilds this
# clone's own crates (the dependencies stay cached).
own_build() {
    local mark="$CARGO_TARGET_DIR/.kumulus-clone"
    mkdir -p "$CARGO_TARGET_DIR"
    if [ "$(cat "$mark" 2>/dev/null)" != "$ROOT" ]; then
        find "$ROOT" -path "$ROOT/target" -prune -o -path "$ROOT/.git" -prune -o \
            \( -name '*.rs' -o -name 'Cargo.toml' \) -print0 | xargs -0 touch
        printf '%s\n' "$ROOT" >"$mark"
    fi
}

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

# cheapest_lag TRACE_FILE SLO_SECS [SIM FLAGS...]: the `lag` threshold of a
# sweep (1 to 40) with the fewest worker-seconds that keeps at most 5% of
# jobs over the SLO in `kumulus sim`, printed as "THRESHOLD SIM_JSON";
# nothing when none does.
cheapest_lag() {
    local trace="$1" slo="$2"; shift 2
    local best="" best_ws="" out v w l
    for l in 1 2 3 4 5 6 8 10 12 15 20 25 30 40; do
        out="$("$KUMULUS_BIN" sim --trace "$trace" --slo-wait-secs "$slo" --json --policy lag --lag-threshold "$l" "$@")"
        v="$(jq -r .slo_violation_pct <<<"$out")"; w="$(jq -r '.worker_seconds|floor' <<<"$out")"
        if awk "BEGIN{exit !($v <= 5.0)}" && { [ -z "$best_ws" ] || [ "$w" -lt "$best_ws" ]; }; then
            best="$l $out"; best_ws="$w"
        fi
    done
    [ -z "$best" ] || printf '%s\n' "$best"
}
