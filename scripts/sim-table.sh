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
    best=""; best_ws=""
    for l in 1 2 3 4 5 6 8 10 12 15 20 25 30 40; do
        out="$(sim --trace "$f" --policy lag --lag-threshold "$l")"
        v="$(jq -r .slo_violation_pct <<<"$out")"; w="$(jq -r '.worker_seconds|floor' <<<"$out")"
        if awk "BEGIN{exit !($v <= 5.0)}" && { [ -z "$best_ws" ] || [ "$w" -lt "$best_ws" ]; }; then
            best="threshold $l: $(row <<<"$out")"; best_ws="$w"
        fi
    done
    kum="$(sim --trace "$f" --policy kumulus | row)"
    echo "| $t | $seed | ${best:-none meets it} | $kum |"
done
