#!/usr/bin/env bash
# Reruns the fault scenarios of RELIABILITY.md and prints their table: for
# each, the jobs checked, how many ended in a terminal state, how many had
# one final state (unchanged when read again), and the time from the fault
# to the last job's end. The scenarios are the tests in tests/crash.rs and
# tests/faults.rs (run one at a time here, so that their times do not mix);
# the servers are installed and started as for scripts/test.sh.
set -euo pipefail
source "$(dirname "$0")/lib/common.sh"
cd "$ROOT"
need_runtime
source "$ROOT/scripts/lib/test-servers.sh"
own_build
LOG="$(mktemp)"
cargo test --test crash --test faults -- --nocapture --test-threads 1 2>&1 | tee "$LOG" >/dev/null
echo "| scenario | jobs | terminal | one final state | recovery (s) |"
echo "| --- | --- | --- | --- | --- |"
sed 's/\x1b\[[0-9;]*m//g' "$LOG" | awk -F'|' '/^RELIABILITY\|/ { printf "| %s | %s | %s | %s | %s |\n", $2, $3, $4, $5, $6 }'
