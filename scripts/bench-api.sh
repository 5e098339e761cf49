#!/usr/bin/env bash
# The REST API's speed and memory on this machine, beside the seed's own web
# stack (a bare Express 4 server, no backends). Usage:
#
#   scripts/bench-api.sh [--duration SECS] [--runs N] [--levels "1000 10000 100000 1000000"]
#
# What it does, in order (BENCHMARKS.md, "The REST API", has the figures):
# 1. Builds `kumulus` (release), installs wrk and hey (Debian) and Express 4
#    (npm) when missing, and starts `kumulus up` (data folder on disk, under
#    the build cache) and the Express stand-in, both on loopback.
# 2. Cost as jobs pile up: the store is filled by POSTs up to each level
#    of LEVELS (jobs in the store), and at each level the listing, a rare
#    state (running: one job), a common one (queued), a page further down
#    (cursor) and one job are measured (wrk, median of RUNS); submits are
#    measured by the fill itself (hey, 16 clients); the database's size
#    (with its WAL) per 1,000 jobs.
# 3. Throughput: wrk -t2 -c16 for DURATION seconds on each route, the
#    routes interleaved, RUNS rounds; the median of the rounds is reported.
#    Kumulus: GET /health, POST /api/jobs, GET /api/jobs/{id},
#    GET /api/jobs?limit=20; Express: GET /health, POST /api/addJob.
# 4. Latency at half that rate: hey at half the median submit rate
#    (16 clients, each at a fixed pace), its p99.
# 5. Memory: `kumulus up`'s RSS idle (warm: each route served once, then
#    15 s of nothing), at its peak, and 10 s and 60 s after the load ends.
#
# Every submit is a real job: it is durable (WAL fsynced) before its 201.
# The first job sleeps through the whole run on the one worker slot, so the
# others stay queued, as under a real backlog, and no job's run takes CPU
# from the API being measured.
# The per-user rate limit is lifted for the run (it is 50/s by default).
# It is a benchmark, not a test: nothing here passes or fails on a timing.
set -euo pipefail
source "$(dirname "$0")/lib/common.sh"
cd "$ROOT"

DURATION=5
RUNS=3
LEVELS="1000 10000 100000 1000000"
while [ $# -gt 0 ]; do
    case "$1" in
        --duration) DURATION="$2"; shift 2 ;;
        --runs) RUNS="$2"; shift 2 ;;
        --levels) LEVELS="$2"; shift 2 ;;
        *) echo "usage: $0 [--duration SECS] [--runs N] [--levels \"1000 10000 ...\"]" >&2; exit 2 ;;
    esac
done

need_runtime
need wrk wrk
need hey hey
own_build
cargo build --quiet --release --bin kumulus
BIN="$CARGO_TARGET_DIR/release/kumulus"
WORK="$CARGO_TARGET_DIR/bench-api"
rm -rf "$WORK" && mkdir -p "$WORK"
PIDS=()
trap 'for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done' EXIT

# The Express stand-in, from its lock file.
cp scripts/bench-api/package.json scripts/bench-api/package-lock.json scripts/bench-api/express.js "$WORK/"
(cd "$WORK" && npm ci --no-audit --no-fund --silent >/dev/null)
(cd "$WORK" && exec node express.js >express.out 2>express.log) &
PIDS+=($!)

# The sleeper: a job that holds the one slot for the whole run.
SLEEPER="$WORK/sleeper"
mkdir -p "$SLEEPER"
printf '{"name":"sleeper","version":"1.0.0","scripts":{"start":"node -e \\"setTimeout(() => {}, 3600000)\\""}}\n' >"$SLEEPER/package.json"
git -C "$SLEEPER" init -q && git -C "$SLEEPER" add -A && git -C "$SLEEPER" -c user.name=b -c user.email=b@b commit -qm sleeper

cat >"$WORK/k.toml" <<EOF
[worker]
slots = 1
max_timeout_secs = 7200
[autoscaler]
min_workers = 1
max_workers = 1
[api]
rate_per_sec = 1000000
rate_burst = 1000000
EOF
"$BIN" up --config "$WORK/k.toml" --data-dir "$WORK/data" --listen 127.0.0.1:0 >"$WORK/up.out" 2>"$WORK/up.log" &
KPID=$!
PIDS+=("$KPID")
wait_url() { for _ in $(seq 200); do grep -q 'listening on' "$1" 2>/dev/null && break; sleep 0.1; done
             grep -o 'http://127\.0\.0\.1:[0-9]*' "$1" | head -1; }
KURL="$(wait_url "$WORK/up.out")"
EURL="$(wait_url "$WORK/express.out")"
[ -n "$KURL" ] && [ -n "$EURL" ] || { echo "a server did not start; see $WORK" >&2; exit 1; }
rss() { awk '/VmRSS/ { printf "%.1f", $2 / 1024 }' "/proc/$KPID/status"; }
anon() { awk '/RssAnon/ { printf "%.1f", $2 / 1024 }' "/proc/$KPID/status"; }

export TOKEN
TOKEN="$(curl -sf -X POST "$KURL/auth/token" -H 'content-type: application/json' \
    -d '{"username":"demo","password":"demo"}' | jq -r .access_token)"
ID="$(curl -sf -X POST "$KURL/api/jobs" -H "authorization: Bearer $TOKEN" -H 'content-type: application/json' \
    -d "{\"url\": \"$SLEEPER\", \"timeout_secs\": 7200}" | jq -r .id)"
for _ in $(seq 300); do
    [ "$(curl -sf "$KURL/api/jobs/$ID" -H "authorization: Bearer $TOKEN" | jq -r .state)" = running ] && break
    sleep 0.1
done
# Idle, warm: each route served once, then 15 s of nothing.
for path in "api/jobs/$ID" "api/jobs?limit=20" "api/jobs?state=running&limit=20"; do
    curl -sf "$KURL/$path" -H "authorization: Bearer $TOKEN" >/dev/null
done
sleep 15
RSS_IDLE="$(rss)"
ANON_IDLE="$(anon)"
RSS_PEAK="$RSS_IDLE"
peak() { local r; r="$(rss)"; awk "BEGIN{exit !($r > $RSS_PEAK)}" && RSS_PEAK="$r"; true; }
export BODY='{"url": "https://example.com/kumulus-bench.git", "args": ["a", "b"], "config": "{\"n\": 1}"}'

# run NAME URL SCRIPT [wrk args]: one wrk run; appends "NAME rps p99ms non2xx".
run() {
    local name="$1" url="$2" script="$3" out
    out="$(wrk -t2 -c16 -d"${DURATION}s" -s "scripts/bench-api/$script" "$url" | awk '/^RESULT/ { print $2, $3, $4 }')"
    peak
    echo "$name $out" >>"$WORK/runs.txt"
}
median() { # median NAME FIELD(2=rps,3=p99): over the rounds of NAME
    awk -v n="$1" -v f="$2" '$1 == n { print $f }' "$WORK/runs.txt" | sort -g |
        awk '{ v[NR] = $1 } END { if (NR == 0) print "-"; else if (NR % 2) print v[(NR + 1) / 2]; else printf "%.2f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

stored() { curl -sf "$KURL/metrics" | awk '/^kumulus_jobs_submitted_total / { printf "%d", $2 }'; }
db_kib() { du -sk "$WORK/data"/kumulus.db* | awk '{ s += $1 } END { print s }'; }

say "cost as jobs pile up: levels $LEVELS"
for level in $LEVELS; do
    have="$(stored)"
    # The fill is the submit's measure at this size (hey, 16 clients): a
    # wrk run of submits here would push the store past the next level.
    FILL_RPS="-"
    if [ "$have" -lt "$level" ]; then
        hey -n "$((level - have))" -c 16 -m POST -T application/json \
            -H "Authorization: Bearer $TOKEN" -d "$BODY" "$KURL/api/jobs" >"$WORK/fill-$level.txt"
        peak
        FILL_RPS="$(awk '/Requests\/sec:/ { printf "%d", $2 }' "$WORK/fill-$level.txt")"
    fi
    have="$(stored)"
    # A cursor half way down the user's jobs.
    CURSOR="$(curl -sf "$KURL/api/jobs?limit=100&state=queued" -H "authorization: Bearer $TOKEN" | jq -r '.jobs[-1].id')"
    for _ in $(seq "$RUNS"); do
        run "L${level}_list" "$KURL/api/jobs?limit=20" get.lua
        run "L${level}_running" "$KURL/api/jobs?state=running&limit=20" get.lua
        run "L${level}_queued" "$KURL/api/jobs?state=queued&limit=20" get.lua
        run "L${level}_cursor" "$KURL/api/jobs?limit=20&cursor=$CURSOR" get.lua
        run "L${level}_get" "$KURL/api/jobs/$ID" get.lua
    done
    echo "L${level} $have $(db_kib) $FILL_RPS" >>"$WORK/sizes.txt"
done

say "throughput: $RUNS rounds of ${DURATION}s per route, interleaved"
for _ in $(seq "$RUNS"); do
    run k_health "$KURL/health" get.lua
    run e_health "$EURL/health" get.lua
    run k_submit "$KURL/api/jobs" post.lua
    run e_submit "$EURL/api/addJob" post.lua
    run k_get "$KURL/api/jobs/$ID" get.lua
    run k_list "$KURL/api/jobs?limit=20" get.lua
done

SUBMIT_RPS="$(median k_submit 2)"
HALF="$(awk -v r="$SUBMIT_RPS" 'BEGIN { printf "%d", r / 2 }')"
say "latency of submits at half the rate ($HALF/s)"
PER_CLIENT="$(awk -v h="$HALF" 'BEGIN { printf "%d", (h / 16 < 1) ? 1 : h / 16 }')"
hey -z "$((DURATION * 2))s" -c 16 -q "$PER_CLIENT" -m POST -T application/json \
    -H "Authorization: Bearer $TOKEN" -d "$BODY" "$KURL/api/jobs" >"$WORK/half.txt"
peak
HALF_P99="$(awk '/ 99% in / { printf "%.2f", $3 * 1000 }' "$WORK/half.txt")"
HALF_P50="$(awk '/ 50% in / { printf "%.2f", $3 * 1000 }' "$WORK/half.txt")"
HALF_RPS="$(awk '/Requests\/sec:/ { printf "%d", $2 }' "$WORK/half.txt")"
HALF_CODES="$(sed -n '/Status code distribution/,/^$/p' "$WORK/half.txt" | tr -s ' ' | tr '\n' ' ')"

sleep 10
RSS_AFTER="$(rss)"
sleep 50
RSS_AFTER60="$(rss)"
ANON_AFTER60="$(anon)"

{
    echo "## scripts/bench-api.sh ($(date -u +%Y-%m-%d), commit $(git rev-parse --short HEAD), ${RUNS} rounds of ${DURATION}s, wrk -t2 -c16)"
    echo
    echo "| route | Kumulus req/s | p99 ms | bare Express req/s | p99 ms |"
    echo "| --- | --- | --- | --- | --- |"
    echo "| GET /health | $(median k_health 2) | $(median k_health 3) | $(median e_health 2) | $(median e_health 3) |"
    echo "| POST /api/jobs (Express: /api/addJob, stores nothing) | $(median k_submit 2) | $(median k_submit 3) | $(median e_submit 2) | $(median e_submit 3) |"
    echo "| GET /api/jobs/{id} | $(median k_get 2) | $(median k_get 3) | | |"
    echo "| GET /api/jobs?limit=20 | $(median k_list 2) | $(median k_list 3) | | |"
    echo
    echo "Submits at half the rate (hey, 16 clients, $HALF/s asked): $HALF_RPS/s done, p50 $HALF_P50 ms, p99 $HALF_P99 ms; codes: $HALF_CODES"
    echo
    echo "| jobs in the store | list req/s | state=running | state=queued | cursor page | one job | submits filling up to it | DB KiB per 1,000 jobs |"
    echo "| --- | --- | --- | --- | --- | --- | --- | --- |"
    for level in $LEVELS; do
        read -r _ have kib fill < <(grep "^L$level " "$WORK/sizes.txt")
        printf '| %s | %s | %s | %s | %s | %s | %s | %s |\n' "$have" \
            "$(median "L${level}_list" 2)" "$(median "L${level}_running" 2)" "$(median "L${level}_queued" 2)" \
            "$(median "L${level}_cursor" 2)" "$(median "L${level}_get" 2)" "$fill" \
            "$(awk -v k="$kib" -v n="$have" 'BEGIN { printf "%.0f", k * 1000 / n }')"
    done
    echo
    echo "kumulus up RSS: idle (warm) $RSS_IDLE MiB ($ANON_IDLE anonymous), peak $RSS_PEAK MiB, 10 s after the load $RSS_AFTER MiB, 60 s after $RSS_AFTER60 MiB ($ANON_AFTER60 anonymous) with $(stored) jobs in the store, all but one still queued"
    non2xx=$(awk '{ s += $4 } END { print s + 0 }' "$WORK/runs.txt")
    echo
    echo "Answers that were not 2xx over all wrk runs: $non2xx"
} | tee "$WORK/results.md"
say "raw runs: $WORK/runs.txt; table: $WORK/results.md"
