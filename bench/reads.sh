#!/usr/bin/env bash
# Read throughput and latency of GET /v1/apps/{appid}/background-fetch (P15) on one
# node with the embedded store, measured with wrk from the same machine: DEVICES device
# keys (of USERS users, each user with its own cached body) taken in turn, so every
# request authenticates a different key than the one before.
#
# Usage: bench/reads.sh [SECONDS] [CONNECTIONS] [SIZES_KB] [DEVICES] [USERS]
#   defaults: 15 s, 32 connections, sizes "1 16 64 256" (KiB of cached data), 1000
#   devices of 100 users.
# Environment:
#   REFRESHD=path       the binary to measure (default: builds and uses target/release)
#   SERVER_CPUS=0       run the server under `taskset -c SERVER_CPUS` (default: unpinned)
#   WRK_CPUS=1          run wrk under `taskset -c WRK_CPUS` (default: unpinned)
#   SERVE_ARGS="..."    more flags for `refreshd serve` (e.g. --read-cache-mib 0)
#   COMPARE=1           also measure, per size and the same way, axum answering a body of
#                       the same shape from memory (crates/api/examples/static_reads.rs)
#                       and, when redis-server is installed, redis-benchmark's GET of a
#                       value of that size (32 clients, 2 threads)
# Needs wrk, python3 and curl. Prints one block per size.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-15}
connections=${2:-32}
sizes=${3:-"1 16 64 256"}
devices=${4:-1000}
users=${5:-100}
command -v wrk >/dev/null || { echo "wrk is not installed (apt-get install wrk)"; exit 1; }
if [ -z "${REFRESHD:-}" ]; then
  cargo build --release --quiet -p refreshd --bin refreshd
  REFRESHD=./target/release/refreshd
fi
if [ -n "${COMPARE:-}" ]; then
  cargo build --release --quiet -p refreshd-api --example static_reads
fi
pin() { if [ -n "$1" ]; then echo "taskset -c $1"; fi; }
work=$(mktemp -d)
server=""; origin=""; other=""
trap 'kill $server $origin $other 2>/dev/null || true; wait 2>/dev/null; rm -rf "$work"' EXIT

mkdir "$work/www"
python3 -m http.server 18999 --bind 127.0.0.1 --directory "$work/www" >/dev/null 2>&1 &
origin=$!
# shellcheck disable=SC2086
$(pin "${SERVER_CPUS:-}") "$REFRESHD" serve --data-dir "$work/data" --listen 127.0.0.1:18998 \
  --metrics-listen 127.0.0.1:18997 --allow-destination 127.0.0.1/32 \
  --rate-limit-per-second 1000000 --rate-limit-burst 1000000 ${SERVE_ARGS:-} \
  > "$work/out" 2> "$work/err" &
server=$!
for _ in $(seq 100); do grep -q "listening on" "$work/out" 2>/dev/null && break; sleep 0.1; done

cat > "$work/reads.lua" <<'EOF'
-- Each request carries the next device key of the list (each wrk thread starts at its
-- own place in it).
local keys = {}
local at = 0
function init(args)
  for line in io.lines(os.getenv("KEYS_FILE")) do keys[#keys + 1] = line end
  at = math.random(#keys)
end
function request()
  at = at % #keys + 1
  return wrk.format("GET", nil, { ["authorization"] = "Bearer " .. keys[at] })
end
EOF

# Apps, devices, tokens and one fetch per user, through the API.
python3 - "$work" "$devices" "$users" <<'EOF'
import http.client, json, sys
work, devices, users = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
conn = http.client.HTTPConnection("127.0.0.1", 18998)
op = open(f"{work}/data/operator.key").read().strip()
def call(method, path, key, body=None):
    conn.request(method, path, body=None if body is None else json.dumps(body),
                 headers={"authorization": f"Bearer {key}", "content-type": "application/json"})
    r = conn.getresponse(); text = r.read()
    if r.status >= 300:
        raise SystemExit(f"{method} {path}: {r.status} {text[:200]!r}")
    return json.loads(text) if text else None
dev = call("POST", "/v1/admin/apps", op, {"appid": "wx1", "subject": "organization"})["developer_key"]
call("PUT", "/v1/apps/wx1/periodic-fetch", dev, {"enabled": True, "source": {"url": "http://127.0.0.1:18999/feed"}})
keys = []
for d in range(devices):
    user = f"u{d % users}"
    key = call("POST", "/v1/admin/devices", op, {"device_id": f"p{d}", "user_id": user, "zone": "UTC"})["device_key"]
    if d < users:
        call("PUT", "/v1/apps/wx1/background-fetch/token", key, {"token": "t"})
        call("POST", "/v1/apps/wx1/launch", key)
    keys.append(key)
open(f"{work}/keys", "w").write("\n".join(keys) + "\n")
open(f"{work}/developer.key", "w").write(dev)
EOF

API=http://127.0.0.1:18998
DEV=$(cat "$work/developer.key")
for size in $sizes; do
  head -c $((size * 1024)) /dev/zero | tr '\0' 'x' > "$work/www/feed"
  for u in $(seq 0 $((users - 1))); do
    # A new body per size: the fetch's time stamp moves the clock on, so it is recorded.
    curl -sf -X POST "$API/v1/apps/wx1/periodic-fetch/fetch-now" -H "authorization: Bearer $DEV" \
      -H 'content-type: application/json' -d "{\"user_id\":\"u$u\"}" >/dev/null
  done
  first=$(head -1 "$work/keys")
  got=$(curl -sf "$API/v1/apps/wx1/background-fetch" -H "authorization: Bearer $first" | wc -c)
  echo "== ${size} KiB cached data (${got} bytes answered), ${devices} devices of ${users} users, ${connections} connections, ${seconds} s, 2 wrk threads, server $([ -n "${SERVER_CPUS:-}" ] && echo "on cpu $SERVER_CPUS" || echo unpinned)"
  # shellcheck disable=SC2086
  KEYS_FILE="$work/keys" $(pin "${WRK_CPUS:-}") wrk -t2 -c"$connections" -d"${seconds}s" --latency \
    -s "$work/reads.lua" "$API/v1/apps/wx1/background-fetch" \
    | grep -E "Requests/sec|Latency|50%|90%|99%|requests in|Non-2xx|Socket errors"
  if [ -n "${COMPARE:-}" ]; then
    # shellcheck disable=SC2086
    $(pin "${SERVER_CPUS:-}") ./target/release/examples/static_reads 127.0.0.1:18996 "$size" > "$work/static.out" &
    other=$!
    for _ in $(seq 100); do grep -q "listening on" "$work/static.out" 2>/dev/null && break; sleep 0.1; done
    echo "-- axum from memory, the same body size and load"
    # shellcheck disable=SC2086
    KEYS_FILE="$work/keys" $(pin "${WRK_CPUS:-}") wrk -t2 -c"$connections" -d"${seconds}s" --latency \
      -s "$work/reads.lua" "http://127.0.0.1:18996/v1/apps/wx1/background-fetch" \
      | grep -E "Requests/sec|Latency|50%|90%|99%|requests in|Non-2xx|Socket errors"
    kill "$other"; wait "$other" 2>/dev/null || true; other=""
    if command -v redis-server >/dev/null; then
      # shellcheck disable=SC2086
      $(pin "${SERVER_CPUS:-}") redis-server --port 18995 --save "" --appendonly no > /dev/null &
      other=$!
      for _ in $(seq 100); do redis-cli -p 18995 ping >/dev/null 2>&1 && break; sleep 0.1; done
      echo "-- redis GET of a ${size} KiB value, ${connections} clients, 2 threads"
      # shellcheck disable=SC2086
      $(pin "${WRK_CPUS:-}") redis-benchmark -p 18995 -t set,get -d $((size * 1024)) -c "$connections" \
        --threads 2 -n $((seconds * 20000)) -r 1000 -q 2>/dev/null | tr '\r' '\n' | grep -E "^GET: .*requests per second"
      kill "$other"; wait "$other" 2>/dev/null || true; other=""
    fi
  fi
done
