# Helpers for bench/run.sh (sourced). Every process started through `spawn` is killed
# on exit; every wait has a deadline.

PIDS=()
WORK=$(mktemp -d "${TMPDIR:-/tmp}/refreshd-bench.XXXXXX")

cleanup() {
  local pid
  for pid in "${PIDS[@]}"; do
    kill "$pid" 2>/dev/null || true
  done
  for pid in "${PIDS[@]}"; do
    wait "$pid" 2>/dev/null || true
  done
  if [[ -n ${PG_CREATED:-} ]]; then
    psql -q "$PG_ADMIN_URL" -c "DROP DATABASE IF EXISTS $PG_CREATED WITH (FORCE)" >/dev/null 2>&1 || true
  fi
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

log() { printf '[%s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }

# spawn VAR CPUS OUTFILE COMMAND...: starts COMMAND in the background (pinned to CPUS
# unless CPUS is "all"), stdout to OUTFILE, stderr to OUTFILE.err; its pid lands in VAR.
spawn() {
  local var=$1 cpus=$2 out=$3
  shift 3
  if [[ $cpus == all ]]; then
    "$@" >"$out" 2>"$out.err" &
  else
    taskset -c "$cpus" "$@" >"$out" 2>"$out.err" &
  fi
  local pid=$!
  PIDS+=("$pid")
  printf -v "$var" '%s' "$pid"
}

# stop PID: SIGTERM, then wait for it (SIGKILL after 20 s).
stop() {
  local pid=$1 i
  kill "$pid" 2>/dev/null || return 0
  for i in $(seq 200); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  kill -9 "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}

# wait_line FILE PATTERN SECONDS PID: until FILE holds a line matching PATTERN; fails
# when PID exits first or the deadline passes.
wait_line() {
  local file=$1 pattern=$2 seconds=$3 pid=$4
  local deadline=$((SECONDS + seconds))
  until grep -q -- "$pattern" "$file" 2>/dev/null; do
    if ! kill -0 "$pid" 2>/dev/null; then
      log "process $pid ended before printing '$pattern':"; cat "$file.err" >&2 || true
      return 1
    fi
    ((SECONDS < deadline)) || { log "no '$pattern' in $file after ${seconds}s"; return 1; }
    sleep 0.02
  done
}

# listen_addr FILE: the address of the "listening on ADDR" line.
listen_addr() { grep -m1 -o 'listening on [^ ]*' "$1" | awk '{print $3}'; }

# wait_http URL SECONDS PID: until URL answers 200.
wait_http() {
  local url=$1 seconds=$2 pid=$3
  local deadline=$((SECONDS + seconds))
  until [[ $(curl -s -o /dev/null -w '%{http_code}' "$url" 2>/dev/null) == 200 ]]; do
    kill -0 "$pid" 2>/dev/null || { log "process $pid ended before $url answered"; cat "$WORK"/*.err >&2 2>/dev/null | tail -5; return 1; }
    ((SECONDS < deadline)) || { log "$url did not answer 200 in ${seconds}s"; return 1; }
    sleep 0.005
  done
}

# cpu_us PID: user + system CPU time of PID so far, in microseconds.
cpu_us() {
  local ticks
  ticks=$(awk '{print $14 + $15}' "/proc/$1/stat")
  echo $((ticks * 1000000 / $(getconf CLK_TCK)))
}

# status_kib PID FIELD: VmRSS / VmHWM of PID in KiB.
status_kib() { awk -v f="$2:" '$1 == f {print $2}' "/proc/$1/status"; }

# record ROW SYSTEM JSON-OBJECT: one raw measurement, with its round.
record() {
  python3 - "$1" "$2" "$3" "${ROUND:-0}" >>"$RAW" <<'PY'
import json, sys
row, system, data, rnd = sys.argv[1], sys.argv[2], json.loads(sys.argv[3]), int(sys.argv[4])
print(json.dumps({"row": row, "system": system, "round": rnd, **data}))
PY
}

# result_of FILE: the JSON of the last "RESULT {...}" line refreshd-bench printed.
result_of() { grep '^RESULT ' "$1" | tail -1 | cut -d' ' -f2-; }

# wrk_json OUTFILE: requests/s, p99 (ms) and requests from wrk --latency output.
wrk_json() {
  python3 - "$1" <<'PY'
import json, re, sys
text = open(sys.argv[1]).read()
def ms(v):
    n, unit = re.match(r"([\d.]+)(us|ms|s)", v).groups()
    return float(n) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]
rps = float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))
p99 = ms(re.search(r"\n\s+99%\s+(\S+)", text).group(1))
p50 = ms(re.search(r"\n\s+50%\s+(\S+)", text).group(1))
total = int(re.search(r"(\d+) requests in", text).group(1))
errors = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
print(json.dumps({"requests_per_second": rps, "p50_ms": p50, "p99_ms": p99, "requests": total,
                  "non_2xx": int(errors.group(1)) if errors else 0}))
PY
}
