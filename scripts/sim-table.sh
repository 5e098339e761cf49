#!/usr/bin/env bash
# The README's table of the three policies on the shipped traces: each
# policy's p95 wait, share of jobs over the SLO and worker-seconds, and for
# `lag` the cheapest threshold (of a sweep) that meets the SLO.
# Usage: scripts/sim-table.sh [SLO_SECS]   (default 60)
set -euo pipefail
source "$(dirname "$0")/lib/common.sh"
cd "$ROOT"
SLO="${1:-60}"
own_build
cargo build --quiet --bin kumulus
sim() { "$KUMULUS_BIN" sim --slo-wait-secs "$SLO" --json "$@"; }
row() { jq -r '"p95 \(.wait_p95_secs*10|floor/10) s, \(.slo_violation_pct*10|floor/10)% over, \(.worker_seconds|floor) worker-s"'; }
echo "| trace | seed | lag (cheapest threshold meeting the SLO) | kumulus |"
echo "| --- | --- | --- | --- |"
for f in autoscaler/traces/*.csv; do
    t="$(basename "$f" .csv)"
    seed="$(sim --trace "$f" --policy seed | row)"
    best="$(cheapest_lag "$f" "$SLO")"
    if [ -n "$best" ]; then best="threshold ${best%% *}: $(row <<<"${best#* }")"; fi
    kum="$(sim --trace "$f" --policy kumulus | row)"
    echo "| $t | $seed | ${best:-none meets it} | $kum |"
done
