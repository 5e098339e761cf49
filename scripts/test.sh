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

# The servers, on ports of their own so that a developer's cluster can run beside.
export KUMULUS_CLUSTER_DIR="${KUMULUS_TEST_CLUSTER_DIR:-$(mktemp -d "${TMPDIR:-/tmp}/kumulus-test-cluster.XXXXXX")}"
export KAFKA_PORT=29092 MONGO_PORT=27019 S3_PORT=29000 OIDC_PORT=28081 PROMETHEUS_PORT=29090
export KUMULUS_INSTALL_TANSU="${KUMULUS_INSTALL_TANSU:-1}"
cleanup() {
    bash "$ROOT/scripts/cluster.sh" down >/dev/null 2>&1 || true
    [ -n "${KUMULUS_TEST_CLUSTER_DIR:-}" ] || rm -rf "$KUMULUS_CLUSTER_DIR"
    rm -f "${LOG:-}"
}
trap cleanup EXIT
say "starting the servers the tests need"
bash "$ROOT/scripts/cluster.sh" servers
export KUMULUS_TEST_SERVERS="$KUMULUS_CLUSTER_DIR/servers.env"
export KUMULUS_TEST_LOG="${KUMULUS_TEST_LOG:-warn,librdkafka=off,rdkafka=off}"

say "cargo fmt --check"
cargo fmt --all -- --check
say "cargo clippy"
cargo clippy --workspace --all-targets --quiet -- -D warnings
say "cargo test"
LOG="$(mktemp)"
set +e
cargo test --workspace --all-targets --no-fail-fast 2>&1 | tee "$LOG"
STATUS=${PIPESTATUS[0]}
set -e
# One closing line for the whole run, summed over every test binary.
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } }
     END { printf "tests: %d passed, %d failed\n", p, f }' "$LOG"
exit "$STATUS"
