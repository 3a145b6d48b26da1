#!/usr/bin/env bash
# Latency of adding a form (POST /v1/forms) when its provider's form_config.json holds
# one small definition, and when it holds the most allowed (256 definitions, ~240 KB):
# parsed definitions are cached per provider, so both cost the same.
# Usage: bench/config_adds.sh [ADDS]   (needs python3; builds release)
set -euo pipefail
cd "$(dirname "$0")/.."
adds=${1:-200}
cargo build --release --quiet
work=$(mktemp -d)
trap 'kill $server $provider 2>/dev/null || true; rm -rf "$work"' EXIT

# Deliveries of the initial data go to a loopback server (answers 501; retried, harmless).
python3 -m http.server 18989 --bind 127.0.0.1 --directory "$work" >/dev/null 2>&1 &
provider=$!
./target/release/refreshd serve --data-dir "$work/data" --listen 127.0.0.1:18988 --metrics-listen 127.0.0.1:18987 \
  --allow-destination 127.0.0.1/32 --rate-limit-per-second 1000000 --rate-limit-burst 1000000 \
  > "$work/out" 2> "$work/err" &
server=$!
for _ in $(seq 100); do grep -q "listening on" "$work/out" 2>/dev/null && break; sleep 0.1; done

python3 - "$work/data/operator.key" "$adds" <<'PY'
import json, sys, time, urllib.request
api = "http://127.0.0.1:18988"
operator = open(sys.argv[1]).read().strip()
adds = int(sys.argv[2])

def call(method, path, key, body=None):
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(api + path, method=method, data=data, headers={
        "authorization": "Bearer " + key, "content-type": "application/json"})
    with urllib.request.urlopen(request) as response:
        return json.loads(response.read() or b"null")

for name, count, description in [("small", 1, 0), ("largest", 256, 900)]:
    provider = call("POST", "/v1/admin/providers", operator, {
        "provider": name, "refresh_url": "http://127.0.0.1:18989/refresh",
        "system_app": False, "api_version": 11})
    forms = [{"name": f"w{i}", "description": "x" * description} for i in range(count)]
    call("PUT", f"/v1/providers/{name}/form-config", provider["provider_key"], {"forms": forms})
    timings = []
    for i in range(adds):
        device = call("POST", "/v1/admin/devices", operator,
                      {"device_id": f"{name}-{i}", "user_id": "u", "zone": "UTC"})
        started = time.perf_counter()
        call("POST", "/v1/forms", device["device_key"], {"provider": name, "form_name": f"w{count - 1}"})
        timings.append((time.perf_counter() - started) * 1000)
    timings.sort()
    size = len(json.dumps({"forms": forms}))
    print(f"{name}: {count} definitions, {size} bytes: add p50 {timings[len(timings) // 2]:.2f} ms, "
          f"p99 {timings[int(len(timings) * 0.99) - 1]:.2f} ms")
PY
