#!/usr/bin/env bash
# Read throughput and latency of GET /v1/apps/{appid}/background-fetch (P15) on one
# node with the embedded store, measured with wrk from the same machine.
# Usage: bench/reads.sh [SECONDS] [CONNECTIONS]   (needs wrk and python3; builds release)
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-15}
connections=${2:-32}
command -v wrk >/dev/null || { echo "wrk is not installed (apt-get install wrk)"; exit 1; }
cargo build --release --quiet
work=$(mktemp -d)
trap 'kill $server $origin 2>/dev/null || true; rm -rf "$work"' EXIT

python3 -m http.server 18999 --bind 127.0.0.1 --directory "$work" >/dev/null 2>&1 &
origin=$!
head -c 2048 /dev/zero | tr '\0' 'x' > "$work/feed"
./target/release/refreshd serve --data-dir "$work/data" --listen 127.0.0.1:18998 --metrics-listen 127.0.0.1:18997 \
  --allow-destination 127.0.0.1/32 --rate-limit-per-second 1000000 --rate-limit-burst 1000000 \
  > "$work/out" 2> "$work/err" &
server=$!
for _ in $(seq 100); do grep -q "listening on" "$work/out" 2>/dev/null && break; sleep 0.1; done

API=http://127.0.0.1:18998; OP=$(cat "$work/data/operator.key")
field() { python3 -c "import json,sys; print(json.load(sys.stdin)['$1'])"; }
call() { curl -s -X "$1" "$API$2" -H "authorization: Bearer $3" -H 'content-type: application/json' ${4:+-d "$4"}; }
DEV=$(call POST /v1/admin/apps "$OP" '{"appid":"wx1","subject":"organization"}' | field developer_key)
call PUT /v1/apps/wx1/periodic-fetch "$DEV" '{"enabled":true,"source":{"url":"http://127.0.0.1:18999/feed"}}' >/dev/null
PHONE=$(call POST /v1/admin/devices "$OP" '{"device_id":"p1","user_id":"u1","zone":"UTC"}' | field device_key)
call PUT /v1/apps/wx1/background-fetch/token "$PHONE" '{"token":"t"}'
call POST /v1/apps/wx1/launch "$PHONE"
for _ in $(seq 100); do call GET /v1/apps/wx1/background-fetch "$PHONE" | grep -q fetched_data && break; sleep 0.1; done

echo "GET /v1/apps/wx1/background-fetch (2 KiB cached body), ${connections} connections, ${seconds} s, 2 wrk threads:"
wrk -t2 -c"$connections" -d"${seconds}s" --latency -H "authorization: Bearer $PHONE" "$API/v1/apps/wx1/background-fetch" \
  | grep -E "Requests/sec|Latency|50%|90%|99%|requests in|Non-2xx"
