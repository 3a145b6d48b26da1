#!/usr/bin/env bash
# refreshd against references, on this machine, in one run.
#
#   bench/run.sh [--quick]
#
# Installs the reference tools from Debian packages when missing, builds release once,
# then measures refreshd and each reference alternately (rounds, warm-up first), takes
# medians, writes every raw figure to bench/results/latest.json and rewrites the
# figures section of BENCHMARKS.md. --quick: one round, shorter runs, smaller sizes
# (under 5 minutes on 2 cores, build excluded); the full run takes about half an hour.
#
# Needs: PostgreSQL at $BENCH_PG_URL (default postgres://postgres@127.0.0.1:5432/test;
# a database is created and dropped for each PostgreSQL row; rows are skipped with a
# note when it is unreachable), python3, curl, taskset. BENCH_NOTE="..." adds a line
# about the run's conditions under the table; DRAIN_CAP (seconds, default 600) bounds
# the full run's 1 M drains (beyond it the rate so far is extrapolated, and said so).
# BENCH_NO_BUILD=1 uses the release binaries already in target/release (built by
# `cargo build --release` or `cargo test --release`) instead of building them.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

MODE=full
case ${1:-} in
  --quick) MODE=quick ;;
  "") ;;
  *) echo "usage: bench/run.sh [--quick]" >&2; exit 2 ;;
esac

source bench/lib/common.sh

PG_URL=${BENCH_PG_URL:-postgres://postgres@127.0.0.1:5432/test}
PG_ADMIN_URL=$PG_URL
NCPU=$(nproc)
# Server on the first core, load generator on the last, where there are two or more.
SERVER_CPU=0
LOAD_CPU=$((NCPU > 1 ? NCPU - 1 : 0))
# Ports in a private range, different for each run.
PORT_BASE=$((20000 + (RANDOM % 400) * 50))

if [[ $MODE == quick ]]; then
  # Fetch rows time the first MEASURE seconds of the drain (the rate of a steady
  # drain); the full run times every drain to its end.
  # Reads rotate over 250 devices, not 1,000: their setup through the API costs one
  # durable commit per call, which alone would take a minute here.
  ROUNDS=1; SECS=3; MEASURE=(--measure-seconds 8); FETCH_USERS=(20000); BIG_USERS=1000; ORIGIN_USERS=5000
  READ_DEVICES=250; MEM_PAIRS=100000; LATE_COUNT=10000; LATE_SPREAD=60; RULES_DEVICES=10000
else
  ROUNDS=3; SECS=10; MEASURE=(); FETCH_USERS=(20000 100000); BIG_USERS=5000; ORIGIN_USERS=20000
  READ_DEVICES=1000; MEM_PAIRS=1000000; LATE_COUNT=100000; LATE_SPREAD=600; RULES_DEVICES=50000
fi
SIZES=(1024 16384 65536 262144)

mkdir -p bench/results
RAW=bench/results/raw-$(date -u +%Y%m%dT%H%M%SZ).jsonl
: >"$RAW"
NOTES=()
# BENCH_NOTE: a line about the conditions of this run, printed under the table.
[[ -n ${BENCH_NOTE:-} ]] && NOTES+=("$BENCH_NOTE")
note() { NOTES+=("$*"); log "note: $*"; }
started_at=$SECONDS

# ---- tools
missing=()
for tool in wrk hyperfine sqlite3 nginx; do
  command -v "$tool" >/dev/null || [[ -x /usr/sbin/$tool ]] || missing+=("$tool")
done
if ((${#missing[@]})); then
  log "installing ${missing[*]}"
  apt-get install -y "${missing[@]}" >/dev/null
fi
for tool in wrk hyperfine sqlite3 redis-server redis-benchmark pgbench psql curl python3 taskset; do
  command -v "$tool" >/dev/null || { log "missing $tool"; exit 1; }
done
PG_OK=1
psql -q "$PG_URL" -c 'SELECT 1' >/dev/null 2>&1 || { PG_OK=0; note "PostgreSQL at the configured URL is unreachable: PostgreSQL rows skipped"; }

# ---- build (once)
log "building release (refreshd, refreshd-bench)"
build_started=$SECONDS
if [[ -z ${BENCH_NO_BUILD:-} ]]; then
  cargo build --release --quiet -p refreshd -p refreshd-bench
fi
BUILD_SECONDS=$((SECONDS - build_started))
BIN=$ROOT/target/release
BENCH=$BIN/refreshd-bench
REFRESHD=$BIN/refreshd
bench_started=$SECONDS

# ---- machine facts
FSYNC=""
pg_test_fsync=$(ls /usr/lib/postgresql/*/bin/pg_test_fsync 2>/dev/null | tail -1 || true)
if [[ -n $pg_test_fsync ]]; then
  # Only the first section is read (awk exits there, which ends pg_test_fsync).
  FSYNC=$(cd "$WORK" && "$pg_test_fsync" -s 1 -f "$WORK/fsync.test" 2>/dev/null \
    | awk '$1 == "fdatasync" {print $2; exit}' || true)
fi
python3 - "$RAW" <<PY
import json, platform, subprocess
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "unknown")
mem = next((int(l.split()[1]) for l in open("/proc/meminfo") if l.startswith("MemTotal")), 0)
print(json.dumps({"row": "machine", "system": "machine", "round": 0,
  "mode": "$MODE", "commit": subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip(),
  "dirty": bool(subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True).stdout.strip()),
  "cores": $NCPU, "kernel": platform.release(), "cpu": cpu, "mem_gib": round(mem / 1048576, 1),
  "fsync_per_second": float("$FSYNC") if "$FSYNC" else None, "build_seconds": $BUILD_SECONDS}), file=open("$RAW", "a"))
PY

# ---- rows 1-4, 11: due periodic fetches
wrk_origin() { # round: wrk against the origin alone (reference c)
  local out=$WORK/wrk-origin.$ROUND
  taskset -c "$LOAD_CPU" wrk -t1 -c32 -d"${SECS}s" --latency "http://$ORIGIN_ADDR/feed" >"$out"
  record fetch.origin wrk "$(wrk_json "$out")"
}
spawn ORIGIN_PID "$SERVER_CPU" "$WORK/origin" "$BENCH" origin --listen "127.0.0.1:$((PORT_BASE + 1))" --body-bytes 1024
wait_line "$WORK/origin" "listening on" 20 "$ORIGIN_PID"
ORIGIN_ADDR=$(listen_addr "$WORK/origin")
# Warm-up: the disk, the page cache and the binaries.
"$BENCH" sqlite-reference --rows 2000 --seconds 1 >/dev/null
"$BENCH" fetch --users 300 >/dev/null

for ((ROUND = 1; ROUND <= ROUNDS; ROUND++)); do
  for users in "${FETCH_USERS[@]}"; do
    log "round $ROUND: fetch $users users (SQLite), then its references"
    "$BENCH" fetch --users "$users" "${MEASURE[@]}" >"$WORK/fetch.out"
    record "fetch.sqlite.$users" refreshd "$(result_of "$WORK/fetch.out")"
    "$BENCH" sqlite-reference --rows "$users" --per-commit 1 --seconds "$SECS" >"$WORK/ref.out"
    record "fetch.sqlite.$users" sqlite-1 "$(result_of "$WORK/ref.out")"
    "$BENCH" sqlite-reference --rows "$users" --per-commit 100 --seconds "$SECS" >"$WORK/ref.out"
    record "fetch.sqlite.$users" sqlite-100 "$(result_of "$WORK/ref.out")"
  done
  wrk_origin
  if ((PG_OK)); then
    users=${FETCH_USERS[0]}
    log "round $ROUND: fetch $users users (PostgreSQL), then pgbench"
    "$BENCH" fetch --users "$users" "${MEASURE[@]}" --database-url "$PG_URL" >"$WORK/fetch.out"
    record "fetch.pg.$users" refreshd "$(result_of "$WORK/fetch.out")"
    PG_CREATED=refreshd_bench_pgbench_$$
    psql -q "$PG_URL" -c "DROP DATABASE IF EXISTS $PG_CREATED" -c "CREATE DATABASE $PG_CREATED" >/dev/null 2>&1
    pgdb=${PG_URL%/*}/$PG_CREATED
    psql -q "$pgdb" >/dev/null <<SQL
CREATE TABLE pairs (id BIGINT PRIMARY KEY, state TEXT NOT NULL, body TEXT, next_wake_at BIGINT NOT NULL);
INSERT INTO pairs SELECT i, '{}', NULL, 0 FROM generate_series(1, $users) AS i;
CREATE INDEX pairs_due ON pairs (next_wake_at);
VACUUM ANALYZE pairs;
SQL
    cat >"$WORK/claim.sql" <<'SQL'
BEGIN;
SELECT id FROM pairs ORDER BY next_wake_at LIMIT 1 FOR UPDATE SKIP LOCKED \gset
UPDATE pairs SET state = '{"last_launch":1764237600000,"has_token":true,"attempted":true,"consecutive_failures":0,"planned":1764280800000,"in_flight":false}', body = repeat('x', 1024), next_wake_at = next_wake_at + 1 WHERE id = :id;
COMMIT;
SQL
    pgbench -n -c 8 -j 2 -T "$SECS" -f "$WORK/claim.sql" "$pgdb" >"$WORK/pgbench.out" 2>&1 || { cat "$WORK/pgbench.out" >&2; exit 1; }
    tps=$(awk '/^tps = /{print $3; exit}' "$WORK/pgbench.out")
    record "fetch.pg.$users" pgbench "{\"rows_per_second\": $tps}"
    psql -q "$PG_URL" -c "DROP DATABASE IF EXISTS $PG_CREATED WITH (FORCE)" >/dev/null
    PG_CREATED=
  fi
  log "round $ROUND: 256 KiB bodies, then the SQLite reference"
  "$BENCH" fetch --users "$BIG_USERS" "${MEASURE[@]}" --body-bytes 262144 >"$WORK/fetch.out"
  record fetch.big refreshd "$(result_of "$WORK/fetch.out")"
  "$BENCH" sqlite-reference --rows "$BIG_USERS" --body-bytes 262144 --seconds "$SECS" >"$WORK/ref.out"
  record fetch.big sqlite-1 "$(result_of "$WORK/ref.out")"
  log "round $ROUND: 1 and 1,000 origins"
  for origins in 1 1000; do
    "$BENCH" fetch --users "$ORIGIN_USERS" "${MEASURE[@]}" --origins "$origins" >"$WORK/fetch.out"
    record "fetch.origins.$origins" refreshd "$(result_of "$WORK/fetch.out")"
  done
done
stop "$ORIGIN_PID"

if [[ $MODE == full ]]; then
  log "drain 1,000,000 due fetches (SQLite$( ((PG_OK)) && echo ", PostgreSQL"))"
  # Timed to the end, unless it takes longer than DRAIN_CAP seconds (then the rate so
  # far is extrapolated, and the report says so).
  "$BENCH" fetch --users 1000000 --measure-seconds "${DRAIN_CAP:-600}" >"$WORK/fetch.out"
  record drain.sqlite refreshd "$(result_of "$WORK/fetch.out")"
  if ((PG_OK)); then
    "$BENCH" fetch --users 1000000 --measure-seconds "${DRAIN_CAP:-600}" --database-url "$PG_URL" >"$WORK/fetch.out"
    record drain.pg refreshd "$(result_of "$WORK/fetch.out")"
  fi
fi

# ---- rows 5-7: reads of cached data
API_PORT=$((PORT_BASE + 2))
API=http://127.0.0.1:$API_PORT
DATA=$WORK/reads
start_serve() { # CPUS: starts refreshd serve on $DATA, waits for /healthz
  spawn SERVE_PID "$1" "$WORK/serve" "$REFRESHD" serve --data-dir "$DATA" \
    --listen "127.0.0.1:$API_PORT" --metrics-listen "127.0.0.1:$((PORT_BASE + 3))" \
    --allow-destination 127.0.0.1/32 --rate-limit-per-second 100000000 --rate-limit-burst 100000000
  wait_http "$API/healthz" 60 "$SERVE_PID"
}
# measure SYSTEM ROW PID WRK-ARGS...: wrk pinned to the load core, CPU of PID per request.
measure() {
  local system=$1 row=$2 pid=$3 cpus=$4
  shift 4
  local out=$WORK/wrk.out before after
  before=$(cpu_us "$pid")
  if [[ $cpus == all ]]; then wrk "$@" >"$out"; else taskset -c "$cpus" wrk "$@" >"$out"; fi
  after=$(cpu_us "$pid")
  local data
  data=$(wrk_json "$out")
  if [[ $(python3 -c "import json,sys; print(json.loads(sys.argv[1])['non_2xx'])" "$data") != 0 ]]; then
    log "$system $row: wrk saw errors"; cat "$out" >&2; exit 1
  fi
  record "$row" "$system" "$(python3 -c "import json,sys; d=json.loads(sys.argv[1]); d['cpu_us_per_request']=int(sys.argv[2])/max(d['requests'],1); print(json.dumps(d))" "$data" $((after - before)))"
}

spawn ORIGIN_PID "$LOAD_CPU" "$WORK/origin2" "$BENCH" origin --listen "127.0.0.1:$((PORT_BASE + 4))" --body-bytes 1024
wait_line "$WORK/origin2" "listening on" 20 "$ORIGIN_PID"
start_serve "$SERVER_CPU"
apps=$(for s in "${SIZES[@]}"; do printf 's%d=%d,' $((s / 1024)) "$s"; done)
apps=${apps%,}
log "reads: $READ_DEVICES devices, apps $apps, setup through the API"
python3 bench/lib/api_setup.py "$API" "$(cat "$DATA/operator.key")" "http://$(listen_addr "$WORK/origin2")/feed" \
  --apps "$apps" --devices "$READ_DEVICES" --keys "$WORK/keys"
stop "$ORIGIN_PID"
KEY1=$(head -1 "$WORK/keys")
mem_args=()
for s in "${SIZES[@]}"; do mem_args+=(--app "s$((s / 1024))=$s"); done
spawn MEM_PID "$SERVER_CPU" "$WORK/mem" "$BENCH" memory-server --listen "127.0.0.1:$((PORT_BASE + 5))" "${mem_args[@]}" --keys "$WORK/keys"
wait_line "$WORK/mem" "listening on" 20 "$MEM_PID"
MEM=http://$(listen_addr "$WORK/mem")
REDIS_PORT=$((PORT_BASE + 6))
spawn REDIS_PID "$SERVER_CPU" "$WORK/redis" redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save '' --appendonly no
until redis-cli -p "$REDIS_PORT" ping 2>/dev/null | grep -q PONG; do kill -0 "$REDIS_PID" || exit 1; sleep 0.02; done
taskset -c "$LOAD_CPU" redis-benchmark -p "$REDIS_PORT" -t set -d 1024 -c 32 -n 20000 -q >/dev/null
REQ=/v1/apps/s1/background-fetch
WRK_ONE=(-t1 -c32 --latency -H "authorization: Bearer $KEY1")
# Warm-up
wrk -t1 -c32 -d1s -H "authorization: Bearer $KEY1" "$API$REQ" >/dev/null
wrk -t1 -c32 -d1s -H "authorization: Bearer $KEY1" "$MEM$REQ" >/dev/null
for ((ROUND = 1; ROUND <= ROUNDS; ROUND++)); do
  log "round $ROUND: reads (refreshd, memory server, redis)"
  measure refreshd reads.one "$SERVE_PID" "$LOAD_CPU" "${WRK_ONE[@]}" -d"${SECS}s" "$API$REQ"
  measure memory-server reads.one "$MEM_PID" "$LOAD_CPU" "${WRK_ONE[@]}" -d"${SECS}s" "$MEM$REQ"
  n=$((SECS * 10000))
  before=$(cpu_us "$REDIS_PID")
  taskset -c "$LOAD_CPU" redis-benchmark -p "$REDIS_PORT" -t get -d 1024 -c 32 -n "$n" --csv >"$WORK/redis.out"
  after=$(cpu_us "$REDIS_PID")
  rps=$(awk -F'"' '/^"GET"/{print $4}' "$WORK/redis.out")
  p99=$(awk -F'"' '/^"GET"/{print $14}' "$WORK/redis.out")
  record reads.one redis "{\"requests_per_second\": $rps, \"p99_ms\": ${p99:-null}, \"requests\": $n, \"cpu_us_per_request\": $(python3 -c "print($((after - before)) / $n)")}"
  for s in "${SIZES[@]}"; do
    path=/v1/apps/s$((s / 1024))/background-fetch
    log "round $ROUND: reads rotating $READ_DEVICES devices, $((s / 1024)) KiB"
    measure refreshd "reads.rotate.$s" "$SERVE_PID" "$LOAD_CPU" -t1 -c32 --latency -d"${SECS}s" -s bench/lib/rotate.lua "$API$path" -- "$WORK/keys" "$path"
    measure memory-server "reads.rotate.$s" "$MEM_PID" "$LOAD_CPU" -t1 -c32 --latency -d"${SECS}s" -s bench/lib/rotate.lua "$MEM$path" -- "$WORK/keys" "$path"
  done
done
stop "$MEM_PID"
stop "$REDIS_PID"
stop "$SERVE_PID"
# Row 7: the same wrk (not pinned: on 2 cores it shares them with the server) against
# refreshd on one core, then on every core.
for ((ROUND = 1; ROUND <= ROUNDS; ROUND++)); do
  log "round $ROUND: scaling (serve on core $SERVER_CPU, then unpinned)"
  for cpus in "$SERVER_CPU" all; do
    start_serve "$cpus"
    wrk -t2 -c32 -d1s -H "authorization: Bearer $KEY1" "$API$REQ" >/dev/null
    measure refreshd "scale.$cpus" "$SERVE_PID" all -t2 -c32 --latency -d"${SECS}s" -H "authorization: Bearer $KEY1" "$API$REQ"
    stop "$SERVE_PID"
  done
done

# ---- rows 8-9: memory and cold start with many pairs
MDATA=$WORK/many
DATA=$MDATA
log "memory: an empty service, then $MEM_PAIRS users' pairs"
start_serve all
python3 bench/lib/api_setup.py "$API" "$(cat "$MDATA/operator.key")" "http://127.0.0.1:9/feed" --apps mem=1024
stop "$SERVE_PID"
start_serve all
record memory.empty refreshd "{\"rss_kib\": $(status_kib "$SERVE_PID" VmRSS), \"hwm_kib\": $(status_kib "$SERVE_PID" VmHWM)}"
stop "$SERVE_PID"
# Users who launched an hour ago and were fetched just now: due again in 12 hours, so
# the service holds them idle.
python3 - "$MEM_PAIRS" >"$WORK/users.jsonl" <<'PY'
import datetime, sys
now = datetime.datetime.now(datetime.timezone.utc)
launch = (now - datetime.timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
success = now.strftime("%Y-%m-%dT%H:%M:%SZ")
out = sys.stdout
for i in range(int(sys.argv[1])):
    out.write(f'{{"user_id":"u{i}","token":"t{i}","last_launch":"{launch}","last_success":"{success}"}}\n')
PY
import_started=$SECONDS
IMPORTER="refreshd import"
"$REFRESHD" import --data-dir "$MDATA" --appid mem "$WORK/users.jsonl" >"$WORK/import.out"
log "loaded $MEM_PAIRS pairs with $IMPORTER in $((SECONDS - import_started)) s"
DB=$MDATA/refreshd.sqlite3
for ((ROUND = 1; ROUND <= ROUNDS; ROUND++)); do
  log "round $ROUND: cold start with $MEM_PAIRS pairs, then a full scan by sqlite3"
  t0=$(date +%s%N)
  start_serve all
  t1=$(date +%s%N)
  record memory.full refreshd "{\"pairs\": $MEM_PAIRS, \"cold_start_seconds\": $(python3 -c "print(($t1 - $t0) / 1e9)"), \"rss_kib\": $(status_kib "$SERVE_PID" VmRSS), \"hwm_kib\": $(status_kib "$SERVE_PID" VmHWM)}"
  stop "$SERVE_PID"
  hyperfine -N --warmup 1 --runs 5 --export-json "$WORK/scan.json" \
    "sqlite3 $DB 'SELECT count(*), max(next_wake_at) FROM fetch_pairs'" >/dev/null 2>&1
  record memory.full sqlite3-scan "$(python3 -c "import json; r=json.load(open('$WORK/scan.json'))['results'][0]; print(json.dumps({'scan_seconds': r['median']}))")"
done

# ---- row 10: lateness (refreshd and the bare sleep loop over the same minutes)
log "lateness: $LATE_COUNT fetches planned over $LATE_SPREAD s, beside the bare sleep loop"
spawn LATE_REF_PID all "$WORK/late-ref" "$BENCH" lateness-reference --count "$LATE_COUNT" --spread-seconds "$LATE_SPREAD"
"$BENCH" lateness --count "$LATE_COUNT" --spread-seconds "$LATE_SPREAD" >"$WORK/late.out"
wait "$LATE_REF_PID"
ROUND=1
record lateness refreshd "$(result_of "$WORK/late.out")"
record lateness sleep-loop "$(result_of "$WORK/late-ref")"

# ---- row 12: simulator, row 13: rules core
log "simulator (bench/simulate.sh)"
if [[ $MODE == quick ]]; then SIM_SIZES="1000 10000"; else SIM_SIZES="10000 65535"; fi
# shellcheck disable=SC2086
if bench/simulate.sh --quick --bin "$REFRESHD" $SIM_SIZES >"$WORK/simulate.out" 2>&1; then
  record simulate refreshd "$(python3 - "$WORK/simulate.out" <<'PY'
import json, sys
sizes = {}
for line in open(sys.argv[1]):
    parts = line.split()
    if len(parts) == 7 and parts[0].isdigit():
        sizes[parts[0]] = {"seconds": float(parts[2]), "cpu_seconds": float(parts[3])}
print(json.dumps({"sizes": sizes}))
PY
)"
else
  note "bench/simulate.sh failed: $(tail -1 "$WORK/simulate.out")"
fi
for ((ROUND = 1; ROUND <= ROUNDS; ROUND++)); do
  log "round $ROUND: rules core ($RULES_DEVICES devices)"
  taskset -c "$SERVER_CPU" "$BENCH" rules --devices "$RULES_DEVICES" >"$WORK/rules.out"
  record rules refreshd "$(result_of "$WORK/rules.out")"
done

BENCH_SECONDS=$((SECONDS - bench_started))
notes_json=$(python3 -c "import json,sys; print(json.dumps(sys.argv[1:]))" "${NOTES[@]+"${NOTES[@]}"}")
record run run "{\"bench_seconds\": $BENCH_SECONDS, \"importer\": \"$IMPORTER\", \"read_devices\": $READ_DEVICES, \"notes\": $notes_json}"
python3 bench/lib/report.py "$RAW" bench/results/latest.json BENCHMARKS.md
log "done in ${BENCH_SECONDS} s (build ${BUILD_SECONDS} s); raw figures in $RAW and bench/results/latest.json"
