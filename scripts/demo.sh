#!/usr/bin/env bash
# Starts `kumulus up` on a fresh data folder, runs the example job through the
# REST API to its end, prints its state, its output and where its files are,
# then stops. Pass --keep to leave the system running afterwards.
set -euo pipefail
source "$(dirname "$0")/lib/common.sh"
cd "$ROOT"
need_runtime

KEEP=0
[ "${1:-}" = "--keep" ] && KEEP=1

say "building kumulus"
own_build
cargo build --quiet --bin kumulus

DATA="$(mktemp -d "${TMPDIR:-/tmp}/kumulus-demo.XXXXXX")"
say "starting kumulus up (data in $DATA)"
"$KUMULUS_BIN" up --data-dir "$DATA" --listen 127.0.0.1:0 >"$DATA/up.out" 2>"$DATA/up.log" &
PID=$!
stop() { kill "$PID" 2>/dev/null && wait "$PID" 2>/dev/null; rm -rf "$DATA"; }
[ "$KEEP" = 1 ] || trap stop EXIT

for _ in $(seq 1 100); do
    grep -q 'listening on' "$DATA/up.out" 2>/dev/null && break
    kill -0 "$PID" 2>/dev/null || { cat "$DATA/up.log" >&2; exit 1; }
    sleep 0.1
done
URL="$(sed -n 's/.*listening on //p' "$DATA/up.out")"
say "kumulus is listening on $URL"

TOKEN="$(curl -sf -X POST "$URL/auth/token" -H 'content-type: application/json' \
    -d '{"username":"demo","password":"demo"}' | jq -r .access_token)"

say "submitting the example job"
SUBMIT="$(curl -sf -X POST "$URL/api/jobs" -H "authorization: Bearer $TOKEN" \
    -H 'content-type: application/json' \
    -d "{\"url\":\"$DATA/examples/hello\",\"args\":\"hello 'kumulus world'\",\"config\":{\"greeting\":\"hi\"}}")"
ID="$(jq -r .id <<<"$SUBMIT")"
echo "job $ID: $(jq -r .state <<<"$SUBMIT")"

STATE=queued
for _ in $(seq 1 600); do
    JOB="$(curl -sf "$URL/api/jobs/$ID" -H "authorization: Bearer $TOKEN")"
    NEW="$(jq -r .state <<<"$JOB")"
    [ "$NEW" != "$STATE" ] && echo "job $ID: $NEW" && STATE="$NEW"
    case "$STATE" in succeeded|failed|cancelled|timed_out) break ;; esac
    sleep 0.1
done

OUT="$ROOT/kumulus-demo-output/$ID"
mkdir -p "$OUT"
for f in $(jq -r '.files[]' <<<"$JOB"); do
    mkdir -p "$OUT/$(dirname "$f")"
    curl -sf "$URL/api/jobs/$ID/files/$f" -H "authorization: Bearer $TOKEN" -o "$OUT/$f"
done
echo
echo "state: $STATE (exit code $(jq -r .exit_code <<<"$JOB"), $(jq -r .elapsed_secs <<<"$JOB") s)"
echo "files: $(jq -r '.files | join(", ")' <<<"$JOB")"
echo "downloaded to: $OUT"
echo "--- stdout.log"; cat "$OUT/stdout.log"
echo "--- output/result.json"; cat "$OUT/output/result.json"
if [ "$KEEP" = 1 ]; then
    echo
    echo "kumulus is still running on $URL (pid $PID, user demo, password demo); stop it with: kill $PID"
fi
[ "$STATE" = succeeded ]
