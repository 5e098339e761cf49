#!/usr/bin/env bash
# Runs every check and test: formatting, clippy, then the whole workspace's
# tests (unit tests and the black-box tests that start `kumulus up`).
# Installs what the tests need when it is missing.
set -euo pipefail
source "$(dirname "$0")/lib/common.sh"
cd "$ROOT"
need_runtime

say "cargo fmt --check"
cargo fmt --all -- --check
say "cargo clippy"
cargo clippy --workspace --all-targets --quiet -- -D warnings
say "cargo test"
LOG="$(mktemp)"
trap 'rm -f "$LOG"' EXIT
set +e
cargo test --workspace --all-targets 2>&1 | tee "$LOG"
STATUS=${PIPESTATUS[0]}
set -e
# One closing line for the whole run, summed over every test binary.
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } }
     END { printf "tests: %d passed, %d failed\n", p, f }' "$LOG"
exit "$STATUS"
