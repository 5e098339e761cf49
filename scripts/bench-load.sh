#!/usr/bin/env bash
# Live elasticity against the simulator: Kumulus with its autoscaler, loaded
# by `kumulus load` with a shipped trace, compressed; the report puts the
# live figures beside `kumulus sim`'s for the same trace and settings.
#
#   scripts/bench-load.sh [--cluster [--placement hash|least-backlog]] TRACE SPEED POLICY [LAG_THRESHOLD]
#   e.g. scripts/bench-load.sh step 4 kumulus
#        scripts/bench-load.sh --cluster burst 4 lag 12
#        scripts/bench-load.sh --cluster --placement least-backlog diurnal 2 kumulus
#
# Without --cluster it runs `kumulus up` (in-process slots, one shared
# queue); with it, the one-machine cluster of scripts/cluster.sh (a Kafka
# broker, MongoDB, S3, OpenID, the frontend, and the autoscaler starting
# and stopping real `kumulus worker` processes with the process driver), in
# a temporary folder on ports of its own, stopped at the end.
#
# The settings are the README table's, divided by SPEED where they are
# times (SLO 60 s, period 10 s, stabilization 30 s, lag cooldown 300 s),
# with 1 to 20 workers (8 on the cluster) of one slot each. Start-up: `kumulus up`'s slots
# start at once (0); the cluster's autoscaler measures its workers'
# start-up and rebalance pauses ("measured"), and the report's simulation
# uses what it measured. The report goes to
# bench-load/<target>-<trace>-<policy>-x<speed>/ (report.md is the row to read);
# a cluster whose frontend places jobs by backlog (`kafka.placement`; the
# default is the frontend's, `hash`) adds `-least-backlog` to that name.
set -euo pipefail
source "$(dirname "$0")/lib/common.sh"
cd "$ROOT"
need_runtime
TARGET=up
PLACEMENT=hash
if [ "${1:-}" = --cluster ]; then TARGET=cluster; shift; fi
if [ "$TARGET" = cluster ] && [ "${1:-}" = --placement ]; then
    PLACEMENT="${2:?--placement: hash or least-backlog}"; shift 2
fi
case "$PLACEMENT" in hash|least-backlog) ;; *) echo "--placement: hash or least-backlog, not $PLACEMENT" >&2; exit 2 ;; esac
TRACE="${1:?trace: burst, diurnal, heavy-tailed, steady or step}"
SPEED="${2:?speed, e.g. 4}"
POLICY="${3:?policy: kumulus, lag or seed}"
LAG="${4:-5}"
# KUMULUS_BENCH_BIN=FILE runs that binary, built by nobody here (the table
# script copies one, so that sources edited meanwhile change nothing);
# KUMULUS_BENCH_PROFILE=debug reuses the test build instead of a release one.
PROFILE="${KUMULUS_BENCH_PROFILE:-release}"
if [ -n "${KUMULUS_BENCH_BIN:-}" ]; then
    BIN="$KUMULUS_BENCH_BIN"
else
    own_build
    if [ "$PROFILE" = release ]; then cargo build --quiet --release --bin kumulus; else cargo build --quiet --bin kumulus; fi
    BIN="$CARGO_TARGET_DIR/$PROFILE/kumulus"
fi
WORK="$(mktemp -d "${TMPDIR:-/tmp}/kumulus-load.XXXXXX")"
# The jobs run as nobody and must reach their work folders in here.
chmod 755 "$WORK"
cleanup() {
    if [ "$TARGET" = cluster ]; then
        KUMULUS_CLUSTER_DIR="$WORK/cluster" bash scripts/cluster.sh down >/dev/null 2>&1 || true
    else
        kill "${PID:-0}" 2>/dev/null || true; wait "${PID:-0}" 2>/dev/null || true
    fi
    rm -rf "$WORK"
}
trap cleanup EXIT

# Times divided by SPEED; the period is whole seconds (at least 1).
SLO=$(awk -v s="$SPEED" 'BEGIN { printf "%.3f", 60 / s }')
PERIOD=$(awk -v s="$SPEED" 'BEGIN { p = int(10 / s + 0.5); if (p < 1) p = 1; print p }')
STAB=$(awk -v s="$SPEED" 'BEGIN { printf "%.3f", 30 / s }')
COOL=$(awk -v s="$SPEED" 'BEGIN { printf "%.3f", 300 / s }')
OUT="bench-load/$TARGET-$TRACE-$POLICY-x$SPEED"
[ "$PLACEMENT" = hash ] || OUT="$OUT-$PLACEMENT"
# At most 20 workers (the README table's) in `kumulus up`; 8 on the cluster
# (scripts/cluster.sh's own bound): on two cores, 20 worker processes and the
# broker serving their fetches saturate the machine, and then the jobs run
# slower than any model of the autoscaler can tell.
MAX=20; [ "$TARGET" = cluster ] && MAX=8
SETTINGS=(--policy "$POLICY" --slo-wait-secs "$SLO" --period-secs "$PERIOD"
    --min-workers 1 --max-workers "$MAX" --slots 1 --lag-threshold "$LAG"
    --stabilization-secs "$STAB" --cooldown-secs "$COOL")

if [ "$TARGET" = up ]; then
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
    "$BIN" load --url "$URL" --user demo:demo --trace "autoscaler/traces/$TRACE.csv" \
        --speed "$SPEED" --report "$OUT" "${SETTINGS[@]}" --startup-secs 0 --rebalance-secs 0
else
    # The cluster's own ports (KUMULUS_BENCH_PORT_BASE, default 39000), so
    # that a development cluster on the default ports can keep running.
    B="${KUMULUS_BENCH_PORT_BASE:-39000}"
    export KUMULUS_CLUSTER_DIR="$WORK/cluster" KAFKA_PORT=$((B + 92)) MONGO_PORT=$((B + 17)) \
        S3_PORT=$((B + 1)) OIDC_PORT=$((B + 81)) PROMETHEUS_PORT=$((B + 90)) \
        FRONTEND_PORT=$((B + 80)) AUTOSCALER_PORT=$((B + 91))
    # tansu cannot add partitions: the topic starts with enough for all the
    # workers at the default factor of 2.
    export KUMULUS_KAFKA__JOBS_PARTITIONS=$((MAX * 2)) KUMULUS_KAFKA__PLACEMENT="$PLACEMENT"
    export KUMULUS_WORKER__SLOTS=1 KUMULUS_AUTOSCALER__POLICY="$POLICY" \
        KUMULUS_AUTOSCALER__PERIOD_SECS="$PERIOD" KUMULUS_AUTOSCALER__SLO_WAIT_SECS="$SLO" \
        KUMULUS_AUTOSCALER__STARTUP_SECS=measured KUMULUS_AUTOSCALER__REBALANCE_SECS=measured \
        KUMULUS_AUTOSCALER__MIN_WORKERS=1 KUMULUS_AUTOSCALER__MAX_WORKERS="$MAX" \
        KUMULUS_AUTOSCALER__LAG_THRESHOLD="$LAG" KUMULUS_AUTOSCALER__STABILIZATION_SECS="$STAB" \
        KUMULUS_AUTOSCALER__COOLDOWN_SECS="$COOL" KUMULUS_BIN="$BIN"
    bash scripts/cluster.sh up >"$WORK/cluster.out"
    set -a; source "$KUMULUS_CLUSTER_DIR/cluster.env"; set +a
    # Let the first worker join before the load starts, as a running
    # cluster's would have.
    for _ in $(seq 120); do
        curl -fsS "http://127.0.0.1:$AUTOSCALER_PORT/metrics" 2>/dev/null |
            grep -q '^kumulus_workers_current [1-9]' && break
        sleep 0.5
    done
    # The settings assumed until the autoscaler measures them (its defaults).
    "$BIN" load --url "$FRONTEND_URL" --user "$USER1:$PASSWORD1" --user "$USER2:$PASSWORD2" \
        --metrics-url "http://127.0.0.1:$AUTOSCALER_PORT" --trace "autoscaler/traces/$TRACE.csv" \
        --speed "$SPEED" --report "$OUT" "${SETTINGS[@]}" --startup-secs 10 --rebalance-secs 3
    cp "$KUMULUS_CLUSTER_DIR/logs/autoscaler.log" "$OUT/autoscaler.log"
fi
echo "report: $OUT/report.md"
