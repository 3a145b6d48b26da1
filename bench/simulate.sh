#!/usr/bin/env bash
# Throughput of `refreshd simulate` (the rules on a virtual clock) as the number of forms
# grows: writes a generated scenario with N forms and times one run of it.
#
# Usage: bench/simulate.sh [--quick] [--keep DIR] [--bin PATH] [N ...]
#   N            form counts to run (default 10000 65535, and 1000000 unless --quick)
#   --quick      leave out the 1,000,000-form run
#   --keep DIR   write the scenarios (and their JSON-lines output) into DIR and keep them
#   --bin PATH   time this refreshd binary instead of building target/release/refreshd
#   --generate   only write the scenarios (needs --keep), time nothing
#
# A scenario describes one device (section S), so its forms share one interval tick, one
# network state and one local midnight. The generator gives that device N forms from
# N/6 providers (six forms each), with mixed configs: interval (30 min to 2 h),
# scheduled times, several scheduled times a day, next-refresh driven forms, system-app
# forms with network-recovery refresh, and a few configs that are refused. Over two
# simulated days it adds every form during the first six hours, sets next-refresh
# times, hides and shows forms, takes the device offline twice and removes a few forms
# on the second day. One mini-program's N/100 users launch it and set their tokens, so
# periodic fetches run too (with 2 h of jitter, and an origin that fails for an hour).
# A device holds at most 65,535 forms (F23), so above that the scenario churns: each
# form added past the cap replaces the oldest form still present.
#
# Needs python3 (standard library only); times runs under 50,000 forms with hyperfine
# (mean of three) when it is installed, and takes the peak RSS (and the time of longer
# runs) from /usr/bin/time -v.
set -euo pipefail
cd "$(dirname "$0")/.."

quick=0 keep="" bin="" generate_only=0 sizes=()
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) quick=1 ;;
    --keep) keep=$2; shift ;;
    --bin) bin=$2; shift ;;
    --generate) generate_only=1 ;;
    -h|--help) sed -n '2,26p' "$0"; exit 0 ;;
    *) sizes+=("$1") ;;
  esac
  shift
done
if [ ${#sizes[@]} -eq 0 ]; then
  sizes=(10000 65535)
  [ "$quick" = 1 ] || sizes+=(1000000)
fi

if [ -n "$keep" ]; then
  mkdir -p "$keep"; work=$(cd "$keep" && pwd)
else
  work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
fi

generate() { # generate N FILE
  python3 - "$1" "$2" <<'PY'
import json, sys
from datetime import datetime, timedelta

n, path = int(sys.argv[1]), sys.argv[2]
cap = min(n, 65535)
start = datetime(2026, 3, 2, 0, 0, 0)
end = start + timedelta(days=2)
add_window = 6 * 3600  # every form is added within the first six hours

def at(seconds):
    return (start + timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%S")

def form_id(i):
    return "f%07d" % i

def entry(i):
    provider = "com.example.p%06d" % (i // 6)
    kind = i % 6
    if i % 997 == 996:
        config = {"name": "broken", "updateEnabled": True, "updateDuration": -1}
    elif kind == 0:
        config = {"name": "interval", "updateEnabled": True, "updateDuration": 1 + i % 4}
    elif kind == 1:
        config = {"name": "daily", "updateEnabled": True, "updateDuration": 0,
                  "scheduledUpdateTime": "%02d:%02d" % (i % 24, (i * 7) % 60)}
    elif kind == 2:
        config = {"name": "several", "updateEnabled": True, "updateDuration": 0,
                  "scheduledUpdateTime": "07:30",
                  "multiScheduledUpdateTime": "%02d:15,%02d:45,18:00" % (6 + i % 4, 11 + i % 3)}
    elif kind == 3:
        config = {"name": "pushed", "updateEnabled": False}
    elif kind == 4:
        config = {"name": "both", "updateEnabled": True, "updateDuration": 2 + i % 3,
                  "scheduledUpdateTime": "%02d:00" % (i % 24)}
    else:
        config = {"name": "system", "updateEnabled": True, "updateDuration": 1,
                  "conditionUpdate": ["network"]}
    form = {"provider": provider, "config": config}
    if kind == 5:
        form["system_app"] = True
    if i % 11 == 0:
        form["hidden"] = True
    return form

events = []  # (seconds, order, event)
def event(seconds, body):
    events.append((seconds, len(events), body))

for i in range(n):
    added = i * add_window // n
    fid = form_id(i)
    if i >= cap:
        event(added, {"remove_form": form_id(i - cap)})
    event(added, {"add_form": fid})
    if i % 6 == 3:
        event(added + 600 + i % 1800, {"set_next_refresh": {"form": fid, "minutes": 5 + i % 120}})
        event(86400 + added, {"set_next_refresh": {"form": fid, "minutes": 30 + i % 90}})
    if i % 13 == 0:
        event(added + 3600 + i % 3600, {"hide": fid})
        event(added + 3 * 3600 + i % 3600, {"show": fid})
    if i % 11 == 0:
        event(added + 2 * 3600 + i % 7200, {"show": fid})
    if i % 101 == 50:
        event(86400 + 43200 + i % 3600, {"remove_form": fid})
users = max(1, n // 100)  # users of one mini-program with periodic fetch (P5-P10)
for u in range(users):
    launched = u * add_window // users
    user = "u%06d" % u
    event(launched, {"launch": {"app": "wx1", "user": user}})
    event(launched + 60, {"set_token": {"app": "wx1", "user": user, "token": "t-%d" % u}})
event(86400 + 6 * 3600, {"origin": {"url": "https://data.example.com/feed", "status": 503}})
event(86400 + 7 * 3600, {"origin": {"url": "https://data.example.com/feed", "etag": "v2"}})
event(8 * 3600, {"offline": True})
event(8 * 3600 + 1200, {"online": True})
event(86400 + 20 * 3600, {"offline": True})
event(86400 + 21 * 3600 + 900, {"online": True})
events.sort(key=lambda e: (e[0], e[1]))

with open(path, "w") as out:
    out.write('{"zone": "Asia/Shanghai", "start": "%s", "end": "%s",\n' % (at(0), at(2 * 86400)))
    out.write(' "settings": {"tick_minutes": 30, "max_forms": %d, "fetch_jitter_minutes": 120},\n' % cap)
    out.write(' "apps": {"wx1": {"subject": "organization", "periodic": {"enabled": true, "url": "https://data.example.com/feed"}}},\n')
    out.write(' "forms": {\n')
    for i in range(n):
        sep = ",\n" if i + 1 < n else "\n"
        out.write("  %s: %s%s" % (json.dumps(form_id(i)), json.dumps(entry(i)), sep))
    out.write(' },\n "events": [\n')
    for k, (seconds, _, body) in enumerate(events):
        body = dict(body)
        line = {"at": at(seconds)}
        line.update(body)
        sep = ",\n" if k + 1 < len(events) else "\n"
        out.write("  %s%s" % (json.dumps(line), sep))
    out.write(" ]\n}\n")
print(len(events))
PY
}

if [ "$generate_only" = 0 ] && [ -z "$bin" ]; then
  cargo build --release -p refreshd --quiet
  bin=target/release/refreshd
fi

[ "$generate_only" = 1 ] || printf '%-9s %-8s %9s %8s %12s %14s %10s\n' forms events seconds cpu_s forms/s output_lines peak_RSS_MiB
for n in "${sizes[@]}"; do
  scenario="$work/forms-$n.json"
  events=$(generate "$n" "$scenario")
  [ "$generate_only" = 1 ] && { echo "wrote $scenario ($events events)"; continue; }
  out="$work/forms-$n.jsonl"
  # Small runs: the mean of three (hyperfine); long ones: the one run that also gives
  # the peak RSS.
  use_hyperfine=0
  if command -v hyperfine >/dev/null && [ "$n" -lt 50000 ]; then
    use_hyperfine=1
    hyperfine --style none --runs 3 --export-json "$work/hf-$n.json" \
      "$bin simulate $scenario --output $out" >/dev/null
    seconds=$(python3 -c "import json,sys; print('%.3f' % json.load(open(sys.argv[1]))['results'][0]['mean'])" "$work/hf-$n.json")
  fi
  /usr/bin/time -v -o "$work/time-$n.txt" "$bin" simulate "$scenario" --output "$out"
  if [ "$use_hyperfine" = 0 ]; then
    seconds=$(awk -F': ' '/Elapsed \(wall clock\)/ {n = split($2, p, ":"); s = 0; for (i = 1; i <= n; i++) s = s * 60 + p[i]; printf "%.3f", s}' "$work/time-$n.txt")
  fi
  rss_kib=$(awk -F': ' '/Maximum resident set size/ {print $2}' "$work/time-$n.txt")
  # CPU seconds (user + system) of the /usr/bin/time run: steadier than wall time on a
  # shared machine.
  cpu=$(awk -F': ' '/(User|System) time \(seconds\)/ {s += $2} END {printf "%.2f", s}' "$work/time-$n.txt")
  lines=$(wc -l < "$out")
  python3 -c "import sys; n, ev, s, cpu, lines, rss = sys.argv[1:]; print('%-9s %-8s %9s %8s %12.0f %14s %10.1f' % (n, ev, s, cpu, int(n) / max(float(s), 1e-9), lines, int(rss) / 1024))" \
    "$n" "$events" "$seconds" "$cpu" "$lines" "$rss_kib"
done
