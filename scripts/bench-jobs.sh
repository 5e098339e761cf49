#!/usr/bin/env bash
# Per-job overhead of Kumulus, measured end to end (see the README's
# "Benchmark" section for the method). Usage: scripts/bench-jobs.sh [JOBS]
set -euo pipefail
source "$(dirname "$0")/lib/common.sh"
cd "$ROOT"
need_runtime
N="${1:-20}"
own_build
cargo build --quiet --release --bin kumulus
BIN="$CARGO_TARGET_DIR/release/kumulus"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/kumulus-bench.XXXXXX")"
trap 'kill "${PID:-0}" 2>/dev/null || true; rm -rf "$WORK"' EXIT

# The trivial job: its start script is `node -e 0`.
REPO="$WORK/trivial"
mkdir -p "$REPO"
printf '{"name":"trivial","version":"1.0.0","scripts":{"start":"node -e 0"}}\n' >"$REPO/package.json"
git -C "$REPO" init -q && git -C "$REPO" add -A && git -C "$REPO" -c user.name=b -c user.email=b@b commit -qm trivial

now() { date +%s.%N; }
per_job() { awk -v a="$1" -v b="$2" -v n="$N" 'BEGIN { printf "%.3f", (b - a) / n }'; }

# (a) node -e 0, directly.
t0=$(now); for _ in $(seq "$N"); do node -e 0; done; t1=$(now)
direct=$(per_job "$t0" "$t1")

# (b) the seed's way: a fresh clone and `npm run start` for every job.
t0=$(now)
for i in $(seq "$N"); do
    git clone -q "$REPO" "$WORK/seed-$i" && (cd "$WORK/seed-$i" && npm run start >/dev/null 2>&1) && rm -rf "$WORK/seed-$i"
done
t1=$(now)
seed=$(per_job "$t0" "$t1")

# (c) Kumulus: `kumulus up` with one worker slot, the jobs submitted back to
# back; (d) the same with worker.fast_start (no npm start-up).
bench_kumulus() {
    local dir="$WORK/k-$1"
    mkdir -p "$dir"
    printf '[worker]\nslots = 1\nfast_start = %s\n[autoscaler]\nmin_workers = 1\nmax_workers = 1\n' "$1" >"$dir/k.toml"
    "$BIN" up --config "$dir/k.toml" --data-dir "$dir/data" --listen 127.0.0.1:0 >"$dir/up.out" 2>"$dir/up.log" &
    PID=$!
    for _ in $(seq 100); do grep -q 'listening on' "$dir/up.out" 2>/dev/null && break; sleep 0.1; done
    local url token t0 t1 ids=() state rss
    url="$(sed -n 's/.*listening on //p' "$dir/up.out")"
    sleep 1
    idle_rss=$(ps -o rss= -p "$PID")
    peak=$idle_rss
    token="$(curl -sf -X POST "$url/auth/token" -H 'content-type: application/json' -d '{"username":"demo","password":"demo"}' | jq -r .access_token)"
    t0=$(now)
    for _ in $(seq "$N"); do
        ids+=("$(curl -sf -X POST "$url/api/jobs" -H "authorization: Bearer $token" -d "{\"url\":\"$REPO\"}" | jq -r .id)")
    done
    for id in "${ids[@]}"; do
        while :; do
            state="$(curl -sf "$url/api/jobs/$id" -H "authorization: Bearer $token" | jq -r .state)"
            rss=$(ps -o rss= -p "$PID"); [ "$rss" -gt "$peak" ] && peak=$rss
            case "$state" in succeeded) break ;; failed|timed_out|cancelled) echo "job $id $state" >&2; exit 1 ;; esac
            sleep 0.05
        done
    done
    t1=$(now)
    per=$(per_job "$t0" "$t1")
    local records
    records=$(for id in "${ids[@]}"; do curl -sf "$url/api/jobs/$id" -H "authorization: Bearer $token"; echo; done)
    median=$(jq -r .elapsed_secs <<<"$records" | sort -n | awk '{a[NR]=$1} END {printf "%.3f", a[int((NR+1)/2)]}')
    # The median time between consecutive jobs' ends: the per-job time once
    # the queue is running, without the first job's warm-up or the polling.
    gap=$(jq -r .finished_at <<<"$records" | python3 -c '
import sys, datetime, statistics
t = sorted(datetime.datetime.fromisoformat(l.strip().replace("Z", "+00:00")).timestamp() for l in sys.stdin if l.strip())
print("%.3f" % statistics.median(b - a for a, b in zip(t, t[1:])))')
    kill "$PID"; wait "$PID" 2>/dev/null || true
}
bench_kumulus false; kumulus=$per; kmedian=$median; kgap=$gap; kidle=$idle_rss; kpeak=$peak
bench_kumulus true; fastk=$per; fmedian=$median; fgap=$gap

echo "jobs: $N (trivial job: start script \`node -e 0\`)"
echo "(a) node -e 0 directly:                 $direct s per job"
echo "(b) fresh clone + npm run start:        $seed s per job"
echo "(c) kumulus up, one slot, end to end:   $kumulus s per job (median between job ends $kgap s, median worker time $kmedian s)"
echo "(d) the same with worker.fast_start:    $fastk s per job (median between job ends $fgap s, median worker time $fmedian s)"
echo "kumulus up resident memory: idle $((kidle / 1024)) MiB, under this load up to $((kpeak / 1024)) MiB"
