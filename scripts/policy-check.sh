#!/usr/bin/env bash
# Issue 11's promise, in the simulator, on every trace of autoscaler/traces/
# at SLOs of 30, 60 and 120 s: wherever some `lag` threshold of the sweep
# keeps at most 5% of jobs over the SLO, `kumulus` does too, at fewer
# worker-seconds than the cheapest such threshold. One row per trace and SLO,
# with scale events per hour and worker-seconds against the jobs' own run
# time (the floor no policy goes below). The last column says whether the
# promise holds: "ok", "over SLO", "costlier", or "-" where no `lag`
# threshold keeps the SLO either.
#
#   scripts/policy-check.sh [--placement hash|least-backlog] [SLO ...]
#                                          (default: hash; 30 60 120)
#
# The settings are `kumulus sim`'s defaults (the README's: start-up 10 s,
# period 10 s, 1 to 20 workers); the sparse trace runs from 0 workers.
# KUMULUS_BIN=FILE uses that binary instead of building one.
set -euo pipefail
source "$(dirname "$0")/lib/common.sh"
cd "$ROOT"
if [ -z "$KUMULUS_BIN_GIVEN" ]; then
    own_build
    cargo build --quiet --bin kumulus
fi
need jq jq
PLACEMENT=hash
if [ "${1:-}" = --placement ]; then PLACEMENT="${2:?--placement: hash or least-backlog}"; shift 2; fi
SLOS=("$@"); [ ${#SLOS[@]} -gt 0 ] || SLOS=(30 60 120)

echo "| trace | SLO s | kumulus: over SLO, worker-s (x run time), events/h | cheapest lag: threshold, over SLO, worker-s, events/h | kumulus / lag worker-s | holds |"
echo "| --- | --- | --- | --- | --- | --- |"
bad=0
for f in autoscaler/traces/*.csv; do
    t="$(basename "$f" .csv)"
    extra=(--placement "$PLACEMENT"); [ "$t" = sparse ] && extra+=(--min-workers 0)
    for slo in "${SLOS[@]}"; do
        k="$("$KUMULUS_BIN" sim --trace "$f" --slo-wait-secs "$slo" --json --policy kumulus "${extra[@]}")"
        best="$(cheapest_lag "$f" "$slo" "${extra[@]}")"
        kcol="$(jq -r '"\(.slo_violation_pct*10|round/10)%, \(.worker_seconds|round) (\(.worker_seconds/.work_seconds*100|round/100)x), \(.scale_events_per_hour*10|round/10)"' <<<"$k")"
        if [ -z "$best" ]; then
            echo "| $t | $slo | $kcol | none keeps it | | - |"
            continue
        fi
        l="${best%% *}"; lj="${best#* }"
        lcol="$(jq -r --arg l "$l" '"\($l), \(.slo_violation_pct*10|round/10)%, \(.worker_seconds|round), \(.scale_events_per_hour*10|round/10)"' <<<"$lj")"
        ratio="$(jq -rn --argjson k "$k" --argjson l "$lj" '$k.worker_seconds / $l.worker_seconds * 100 | round / 100')"
        holds="$(jq -rn --argjson k "$k" --argjson l "$lj" '
            if $k.slo_violation_pct > 5 then "over SLO"
            elif $k.worker_seconds >= $l.worker_seconds then "costlier"
            else "ok" end')"
        [ "$holds" = ok ] || bad=$((bad + 1))
        echo "| $t | $slo | $kcol | $lcol | ${ratio}x | $holds |"
    done
done
say "$bad row(s) where the promise does not hold"
