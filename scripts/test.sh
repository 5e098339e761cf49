#!/usr/bin/env bash
# Runs every check and test: formatting, clippy, then the whole workspace's
# tests: unit tests, the black-box tests that start `kumulus up`, and the
# tests of the production path against real servers (a Kafka-protocol
# broker, a MongoDB-wire server, an S3 server, an OpenID provider), which
# this script installs when missing, starts, and stops at the end.
set -euo pipefail
source "$(dirname "$0")/lib/common.sh"
cd "$ROOT"
need_runtime
own_build

source "$ROOT/scripts/lib/test-servers.sh"

say "cargo fmt --check"
cargo fmt --all -- --check
say "cargo clippy"
cargo clippy --workspace --all-targets --quiet -- -D warnings
say "cargo test"
LOG="$(mktemp)"
set +e
cargo test --workspace --all-targets --no-fail-fast 2>&1 | tee "$LOG"
STATUS=${PIPESTATUS[0]}
# The cluster tests once more, on the other Kafka-protocol broker: the
# product must not depend on one broker's behaviour (tests/faults.rs runs
# each fault on both by itself).
say "cluster tests on noida-db"
NOIDA_PORT=29093
mkdir -p "$KUMULUS_CLUSTER_DIR/noida"
PORT=$NOIDA_PORT DATA="$KUMULUS_CLUSTER_DIR/noida" KUMULUS_KAFKA_SERVER=noida \
    bash "$ROOT/scripts/cluster.sh" serve kafka >"$KUMULUS_CLUSTER_DIR/noida.log" 2>&1 &
NOIDA_PID=$!
for _ in $(seq 1 100); do (exec 3<>"/dev/tcp/127.0.0.1/$NOIDA_PORT") 2>/dev/null && break; sleep 0.1; done
# Every cluster test runs here too. Where noida-db cannot do something
# (hand a killed sole member's partitions to its replacement), the test
# says so and checks the degraded behaviour (RELIABILITY.md).
KUMULUS_TEST_KAFKA="127.0.0.1:$NOIDA_PORT" KUMULUS_TEST_KAFKA_SERVER=noida \
    cargo test --test cluster --no-fail-fast 2>&1 | tee -a "$LOG"
NOIDA_STATUS=${PIPESTATUS[0]}
[ "$STATUS" -eq 0 ] && STATUS=$NOIDA_STATUS
set -e
# One closing line for the whole run, summed over every test binary.
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } }
     END { printf "tests: %d passed, %d failed\n", p, f }' "$LOG"
exit "$STATUS"
