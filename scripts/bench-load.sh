#!/usr/bin/env bash
# Live elasticity against the simulator: `kumulus up` with the autoscaler,
# loaded by `kumulus load` with a shipped trace, compressed; the report puts
# the live figures beside `kumulus sim`'s for the same trace and settings.
#
#   scripts/bench-load.sh TRACE SPEED POLICY [LAG_THRESHOLD]
#   e.g. scripts/bench-load.sh step 6 kumulus
#
# The settings are the README table's, divided by SPEED where they are
# times (SLO 60 s, period 10 s), with 1 to 20 workers of one slot each and
# no start-up time (in-process slots start at once). The report goes to
# bench-load/<trace>-<policy>-x<speed>/ (report.md is the row to read).
set -euo pipefail
source "$(dirname "$0")/lib/common.sh"
cd "$ROOT"
need_runtime
TRACE="${1:?trace: burst, diurnal, heavy-tailed, steady or step}"
SPEED="${2:?speed, e.g. 6}"
POLICY="${3:?policy: kumulus, lag or seed}"
LAG="${4:-5}"
# KUMULUS_BENCH_PROFILE=debug reuses the test build instead of a release one.
PROFILE="${KUMULUS_BENCH_PROFILE:-release}"
own_build
if [ "$PROFILE" = release ]; then cargo build --quiet --release --bin kumulus; else cargo build --quiet --bin kumulus; fi
BIN="$CARGO_TARGET_DIR/$PROFILE/kumulus"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/kumulus-load.XXXXXX")"
trap 'kill "${PID:-0}" 2>/dev/null || true; wait "${PID:-0}" 2>/dev/null || true; rm -rf "$WORK"' EXIT

# Times divided by SPEED; the period is whole seconds (at least 1).
SLO=$(awk -v s="$SPEED" 'BEGIN { printf "%.3f", 60 / s }')
PERIOD=$(awk -v s="$SPEED" 'BEGIN { p = int(10 / s + 0.5); if (p < 1) p = 1; print p }')
STAB=$(awk -v s="$SPEED" 'BEGIN { printf "%.3f", 30 / s }')
COOL=$(awk -v s="$SPEED" 'BEGIN { printf "%.3f", 300 / s }')
cat >"$WORK/k.toml" <<TOML
[worker]
slots = 1
[autoscaler]
policy = "$POLICY"
period_secs = $PERIOD
slo_wait_secs = $SLO
startup_secs = 0
min_workers = 1
max_workers = 20
lag_threshold = $LAG
stabilization_secs = $STAB
cooldown_secs = $COOL
TOML
"$BIN" up --config "$WORK/k.toml" --data-dir "$WORK/data" --listen 127.0.0.1:0 >"$WORK/up.out" 2>"$WORK/up.log" &
PID=$!
for _ in $(seq 100); do grep -q 'listening on' "$WORK/up.out" 2>/dev/null && break; sleep 0.1; done
URL="$(sed -n 's/.*listening on //p' "$WORK/up.out")"
OUT="bench-load/$TRACE-$POLICY-x$SPEED"
"$BIN" load --url "$URL" --user demo:demo --trace "autoscaler/traces/$TRACE.csv" \
    --speed "$SPEED" --report "$OUT" --policy "$POLICY" --slo-wait-secs "$SLO" \
    --period-secs "$PERIOD" --startup-secs 0 --min-workers 1 --max-workers 20 --slots 1 \
    --lag-threshold "$LAG" --stabilization-secs "$STAB" --cooldown-secs "$COOL" --rebalance-secs 0
echo "report: $OUT/report.md"
