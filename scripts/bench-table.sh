#!/usr/bin/env bash
# BENCHMARKS.md's live-against-simulated table: `scripts/bench-load.sh` on
# every shipped trace, against `kumulus up` and the one-machine cluster,
# with the `kumulus` policy and with the cheapest `lag` threshold that meets
# the SLO in the simulator (the README table's sweep), then one table row
# per run from its report.json.
#
#   scripts/bench-table.sh [SPEED]        run them all (default speed 4), then the table
#   scripts/bench-table.sh --table        only the table, from bench-load/*/report.json
#
# KUMULUS_BENCH_TARGETS="up cluster" and KUMULUS_BENCH_TRACES="burst ..."
# narrow the runs. Each run takes the trace's length divided by SPEED, plus
# the drain and (for the cluster) about 30 s to start.
set -euo pipefail
source "$(dirname "$0")/lib/common.sh"
cd "$ROOT"

table() {
    echo "| target | trace | policy | over SLO, live / sim | p95 wait s, live / sim | worker-s, live / sim | scale events, live / sim | model: overhead s, hand-over s, start-up s, rebalance s | failed or unfinished |"
    echo "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"
    for r in bench-load/*/report.json; do
        [ -e "$r" ] || continue
        jq -r --arg dir "$(basename "$(dirname "$r")")" '
          def f: (. * 10 | round) / 10;
          def ratio(k): if .ratios[k] == null then "" else " (\(.ratios[k] * 100 | round / 100)x)" end;
          ($dir | split("-")[0]) as $target
          | "| \($target) | \(.trace | split("/")[-1] | rtrimstr(".csv")) | \(.policy.policy)\(if .policy.policy == "lag" then " \(.policy.lag_threshold)" else "" end) x\(.speed)\(if .model.placement == "least-backlog" then ", by backlog" else "" end)"
          + " | \(.live.slo_violation_pct | f)% / \(.sim.slo_violation_pct | f)%"
          + " | \(.live.wait_p95_secs | f) / \(.sim.wait_p95_secs | f)\(ratio("wait_p95_secs"))"
          + " | \(.live.worker_seconds | round) / \(.sim.worker_seconds | round)\(ratio("worker_seconds"))"
          + " | \(.live.scale_events) / \(.sim.scale_events)"
          + " | \(.model.overhead_secs * 100 | round / 100), \((.model.handover_secs // 0) * 100 | round / 100), \(.model.ready_secs * 10 | round / 10) (\(.model.ready_from)), \(.model.rebalance_secs * 10 | round / 10) (\(.model.rebalance_from))"
          + " | \(([.jobs[] | select(.state != "succeeded")] | length) + .unfinished) of \(.jobs | length) |"
        ' "$r"
    done
}

if [ "${1:-}" = --table ]; then table; exit 0; fi
SPEED="${1:-4}"
# One release build, copied: every run uses the same binary (kept with the
# reports it made, so resumed runs use it too).
export KUMULUS_BENCH_BIN="$ROOT/bench-load/kumulus"
mkdir -p bench-load
if [ ! -x "$KUMULUS_BENCH_BIN" ]; then
    own_build
    cargo build --quiet --release --bin kumulus
    cp "$CARGO_TARGET_DIR/release/kumulus" "$KUMULUS_BENCH_BIN"
fi
KUMULUS_BIN="$KUMULUS_BENCH_BIN"
# The kumulus policy everywhere first, then the lag baseline; a run whose
# report is there already is kept (remove bench-load/ to run all again).
TRACES="${KUMULUS_BENCH_TRACES:-burst diurnal heavy-tailed steady step}"
for policy in kumulus lag; do
    for t in $TRACES; do
        lag=""
        if [ "$policy" = lag ]; then
            lag="$(cheapest_lag "autoscaler/traces/$t.csv" 60)"; lag="${lag%% *}"
            [ -n "$lag" ] || continue
        fi
        for target in ${KUMULUS_BENCH_TARGETS:-up cluster}; do
            [ -e "bench-load/$target-$t-$policy-x$SPEED/report.json" ] && continue
            flag=""; [ "$target" = cluster ] && flag=--cluster
            bash scripts/bench-load.sh $flag "$t" "$SPEED" "$policy" $lag
        done
    done
done
table
