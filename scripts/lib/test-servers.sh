# The servers the tests need, started for this script and stopped when it
# exits (sourced by test.sh and reliability.sh after common.sh).
# shellcheck shell=bash

# On ports of their own, so that a developer's cluster can run beside.
export KUMULUS_CLUSTER_DIR="${KUMULUS_TEST_CLUSTER_DIR:-$(mktemp -d "${TMPDIR:-/tmp}/kumulus-test-cluster.XXXXXX")}"
export KAFKA_PORT=29092 MONGO_PORT=27019 S3_PORT=29000 OIDC_PORT=28081 PROMETHEUS_PORT=29090
export KUMULUS_INSTALL_TANSU="${KUMULUS_INSTALL_TANSU:-1}"
stop_test_servers() {
    [ -n "${NOIDA_PID:-}" ] && kill "$NOIDA_PID" 2>/dev/null || true
    bash "$ROOT/scripts/cluster.sh" down >/dev/null 2>&1 || true
    [ -n "${KUMULUS_TEST_CLUSTER_DIR:-}" ] || rm -rf "$KUMULUS_CLUSTER_DIR"
    rm -f "${LOG:-}"
}
trap stop_test_servers EXIT
say "starting the servers the tests need"
bash "$ROOT/scripts/cluster.sh" servers
export KUMULUS_TEST_SERVERS="$KUMULUS_CLUSTER_DIR/servers.env"
export KUMULUS_TEST_LOG="${KUMULUS_TEST_LOG:-warn,librdkafka=off,rdkafka=off}"
