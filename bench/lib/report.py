#!/usr/bin/env python3
"""Turns bench/run.sh's raw figures into medians, bench/results/latest.json and the
figures section of BENCHMARKS.md (between <!-- bench:begin --> and <!-- bench:end -->).

    report.py RAW.jsonl LATEST.json BENCHMARKS.md
"""

import datetime
import json
import statistics
import sys
from collections import defaultdict

BEGIN, END = "<!-- bench:begin -->", "<!-- bench:end -->"
DRAIN = 1_000_000


def fmt(value, digits=0):
    if value is None:
        return "—"
    if isinstance(value, str):
        return value
    if abs(value) >= 100 or digits == 0:
        return f"{value:,.0f}"
    return f"{value:,.{digits}f}"


def main():
    raw_path, latest_path, doc_path = sys.argv[1:4]
    records = [json.loads(line) for line in open(raw_path) if line.strip()]
    groups = defaultdict(list)
    for r in records:
        groups[(r["row"], r["system"])].append(r)
    machine = groups[("machine", "machine")][0]
    run = (groups.get(("run", "run")) or [{}])[0]
    quick = machine["mode"] == "quick"

    def med(row, system, field):
        values = [r[field] for r in groups.get((row, system), []) if r.get(field) is not None]
        return statistics.median(values) if values else None

    def rounds(row, system):
        return len(groups.get((row, system), []))

    table = []
    medians = {}

    def line(metric, ours, ref, ref_label, goal="—", met=None, higher_is_better=True, unit="", digits=0, ratio=None):
        if ratio is None and ours is not None and ref:
            ratio = ours / ref
        verdict = "—" if met is None else ("met" if met else "**not met**")
        table.append(
            f"| {metric} | {fmt(ours, digits)}{unit} | {fmt(ref, digits)}{unit if ref is not None else ''} {ref_label} | "
            f"{'—' if ratio is None else f'{ratio:.2f}×'} | {goal} | {verdict} |"
        )
        medians[metric] = {"refreshd": ours, "reference": ref, "reference_is": ref_label, "ratio": ratio,
                           "goal": goal, "met": met}

    rate_goal = DRAIN / 60
    # 1. due fetches, SQLite
    fetch_rows = sorted({row for row, _ in groups if row.startswith("fetch.sqlite.")}, key=lambda r: int(r.split(".")[-1]))
    sqlite_rate = {}
    for row in fetch_rows:
        users = int(row.split(".")[-1])
        ours = med(row, "refreshd", "fetches_per_second")
        sqlite_rate[users] = ours
        partial = not all(r.get("complete", True) for r in groups[(row, "refreshd")])
        timed = f", rate over the first {groups[(row, 'refreshd')][0]['seconds']:.0f} s" if partial else ""
        metric = f"1. Due fetches/s, SQLite, {users:,} users due at once{timed} (1 KiB + durable cache write + reschedule)"
        met = ours is not None and ours >= rate_goal
        line(metric, ours, med(row, "sqlite-1", "rows_per_second"), "(raw SQLite, 1 row/commit)",
             f"≥ {rate_goal:,.0f}/s (1 M in 60 s)", met)
        line(metric, ours, med(row, "sqlite-100", "rows_per_second"), "(raw SQLite, 100 rows/commit)")
        line(metric, ours, med("fetch.origin", "wrk", "requests_per_second"), "(origin alone, wrk 32 conn.)")
    # 2. PostgreSQL
    pg_rows = [row for row, system in groups if row.startswith("fetch.pg.") and system == "refreshd"]
    pg_rate = None
    for row in pg_rows:
        users = int(row.split(".")[-1])
        ours = pg_rate = med(row, "refreshd", "fetches_per_second")
        pgbench = med(row, "pgbench", "rows_per_second")
        # The goal on PostgreSQL is half of pgbench's claim-and-update ceiling.
        line(f"2. Due fetches/s, PostgreSQL, {users:,} users due at once", ours,
             pgbench, "(pgbench claim + update, 8 clients)",
             "≥ 0.5× pgbench", ours is not None and pgbench is not None and ours >= 0.5 * pgbench)
    # 3. drain 1 M
    for db, rate, ref_rate in (("SQLite", sqlite_rate.get(min(sqlite_rate)) if sqlite_rate else None,
                                med(fetch_rows[0], "sqlite-1", "rows_per_second") if fetch_rows else None),
                               ("PostgreSQL", pg_rate,
                                med(pg_rows[0], "pgbench", "rows_per_second") if pg_rows else None)):
        drain = groups.get((f"drain.{'sqlite' if db == 'SQLite' else 'pg'}", "refreshd"))
        if drain and drain[0].get("complete", True):
            ours, how = drain[0]["seconds"], "measured"
        elif drain:
            d = drain[0]
            ours = DRAIN / d["fetches_per_second"]
            how = f"extrapolated: {d['recorded']:,} recorded in {d['seconds']:.0f} s"
        elif rate:
            ours, how = DRAIN / rate, "extrapolated from row 1/2's rate"
        else:
            continue
        ref = DRAIN / ref_rate if ref_rate else None
        line(f"3. Time to drain 1,000,000 due fetches, {db} (s, {how})", ours, ref,
             "(the reference's rate, extrapolated)", "≤ 60 s", ours <= 60, digits=1,
             ratio=(ours / ref if ref else None))
    # 4. 256 KiB
    ours = med("fetch.big", "refreshd", "fetches_per_second")
    if ours is not None:
        line("4. Fetches/s of a 256 KiB body (first fetch: cache row written)", ours,
             med("fetch.big", "sqlite-1", "rows_per_second"), "(raw SQLite, one 256 KiB row/commit)")
        line("4. Bytes written to storage per 256 KiB fetch (/proc/PID/io)",
             med("fetch.big", "refreshd", "write_bytes_per_fetch"),
             med("fetch.big", "sqlite-1", "write_bytes_per_row"), "(raw SQLite, per row)")
    # 5. reads
    if ("reads.one", "refreshd") in groups:
        for field, label, digits in (("requests_per_second", "requests/s", 0), ("p99_ms", "p99 (ms)", 2),
                                     ("cpu_us_per_request", "server CPU µs/request", 1)):
            ours = med("reads.one", "refreshd", field)
            line(f"5. Reads of cached data (1 KiB, one device, 32 conn.): {label}", ours,
                 med("reads.one", "memory-server", field), "(axum from memory)", digits=digits)
            line(f"5. Reads of cached data (1 KiB, one device, 32 conn.): {label}", ours,
                 med("reads.one", "redis", field), "(redis GET -d 1024 -c 32)", digits=digits)
    # 6. rotating devices
    for row in sorted({r for r, _ in groups if r.startswith("reads.rotate.")}, key=lambda r: int(r.split(".")[-1])):
        size = int(row.split(".")[-1]) // 1024
        devices = run.get("read_devices", 1000)
        line(f"6. Reads, {devices:,} devices rotating{' (quick: not 1,000)' if devices != 1000 else ''}, {size} KiB: requests/s", med(row, "refreshd", "requests_per_second"),
             med(row, "memory-server", "requests_per_second"), "(axum from memory)")
    # 7. scaling
    one = [r for (row, _), rs in groups.items() if row.startswith("scale.") and row != "scale.all" for r in rs]
    one_rate = statistics.median([r["requests_per_second"] for r in one]) if one else None
    two_rate = med("scale.all", "refreshd", "requests_per_second")
    if one_rate and two_rate:
        ratio = two_rate / one_rate
        line("7. Reads req/s, serve on 2 cores vs pinned to 1 (wrk shares the 2 cores)", two_rate, one_rate,
             "(serve on 1 core)", "≥ 1.8×", ratio >= 1.8, ratio=ratio)
    # 8, 9. memory and cold start
    full = groups.get(("memory.full", "refreshd"))
    if full:
        pairs = full[0]["pairs"]
        empty = med("memory.empty", "refreshd", "rss_kib")
        rss = med("memory.full", "refreshd", "rss_kib")
        per = (rss - empty) * 1024 / pairs
        label = f"{pairs:,} pairs" + (" (quick: not 1,000,000)" if quick else "")
        line(f"8. serve memory per subject, {label}: (RSS − empty RSS) / pairs (bytes)", per, None,
             f"(RSS {rss / 1024:,.0f} MiB, HWM {med('memory.full', 'refreshd', 'hwm_kib') / 1024:,.0f} MiB, empty {empty / 1024:,.0f} MiB)",
             "≤ 128 B", per <= 128)
        ours = med("memory.full", "refreshd", "cold_start_seconds")
        ref = med("memory.full", "sqlite3-scan", "scan_seconds")
        line(f"9. Cold start to /healthz 200, {label} (s)", ours, ref,
             "(sqlite3 count + max full scan, hyperfine)", "≤ 2×", ref is not None and ours / ref <= 2, digits=3)
    # 10. lateness
    if ("lateness", "refreshd") in groups:
        r = groups[("lateness", "refreshd")][0]
        what = f"{r['count']:,} scheduled periodic fetches over {r['spread_seconds']:.0f} s, planned → arrival at origin"
        for q in ("p50", "p99"):
            line(f"10. Lateness {q} (ms), {what}", med("lateness", "refreshd", f"{q}_ms"),
                 med("lateness", "sleep-loop", f"{q}_ms"), "(bare tokio sleep_until loop, same schedule)", digits=1)
    # 11. origins
    wrk_rate = med("fetch.origin", "wrk", "requests_per_second")
    for origins in (1, 1000):
        ours = med(f"fetch.origins.{origins}", "refreshd", "fetches_per_second")
        if ours is not None:
            users = groups[(f"fetch.origins.{origins}", "refreshd")][0]["users"]
            line(f"11. Due fetches/s, {users:,} users over {origins:,} origin(s), SQLite", ours, wrk_rate,
                 "(wrk against one origin listener)")
    # 12. simulator
    if ("simulate", "refreshd") not in groups:
        table.append("| 12. Simulator, 10,000 vs 65,535 forms | skipped | — | — | — | — |")
    else:
        sizes = groups[("simulate", "refreshd")][0]["sizes"]
        if len(sizes) >= 2:
            (small, s_run), (large, l_run) = sorted(sizes.items(), key=lambda kv: int(kv[0]))[:2]
            per_small = s_run["cpu_seconds"] / int(small)
            per_large = l_run["cpu_seconds"] / int(large)
            growth = per_large / per_small if per_small > 0 else float("inf")
            line(f"12. Simulator CPU s, {int(large):,} forms (reference: {int(small):,} forms scaled ×{int(large) // int(small)})",
                 l_run["cpu_seconds"], s_run["cpu_seconds"] * int(large) / int(small),
                 "(the smaller run, scaled linearly)", "linear: ≤ 1.5× the scaled run", growth <= 1.5, digits=2)
    # 13. rules
    ours = med("rules", "refreshd", "decisions_per_second")
    if ours is not None:
        line(f"13. Rules core decisions/s, one core ({groups[('rules', 'refreshd')][0]['devices']:,} devices)", ours,
             None, "", "≥ 1,000,000/s", ours >= 1_000_000)
        per_form = med("rules", "refreshd", "state_bytes_per_form")
        line("13. Rules state per form (bytes)", per_form, None, "", "≤ 128 B", per_form <= 128)

    today = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    fsync = machine.get("fsync_per_second")
    rounds_text = "one round" if quick else "medians of 3 rounds"
    head = [
        BEGIN,
        "## Figures from `bench/run.sh`",
        "",
        "Written by `bench/run.sh" + (" --quick" if quick else "") + "`; do not edit by hand. "
        f"Commit `{machine['commit']}`{' (with uncommitted changes)' if machine.get('dirty') else ''}, {today}, "
        f"{'quick' if quick else 'full'} mode ({rounds_text}; bench time {run.get('bench_seconds', '?')} s, "
        f"release build {machine.get('build_seconds', '?')} s).",
        "",
        f"Machine: {machine['cores']} cores ({machine['cpu']}), {machine['mem_gib']} GiB, kernel {machine['kernel']}, "
        + (f"fsync rate {fsync:,.0f}/s (pg_test_fsync, fdatasync, one 8 kB write)." if fsync else "fsync rate not measured.")
        + " The machine is shared with other work; expect a spread of ±10 % or more.",
        "",
        "| metric | refreshd | reference (same run) | ratio | goal | met? |",
        "|---|---|---|---|---|---|",
        *table,
        "",
        "How each row is measured:",
        "",
        "- Rows 1–4, 11: `refreshd-bench fetch` runs the engine, a fresh store and the fetcher in one process "
        "(both cores) against a loopback axum origin; pairs are loaded in bulk first (untimed) and timed from "
        "the engine's start until every fetch is recorded. Raw SQLite references update a pair-sized row "
        "(~150 B state + body) by key with sqlx, WAL, `synchronous=FULL`, on the same disk. The origin reference "
        "is wrk (core 1) against `refreshd-bench origin` (core 0). pgbench runs `SELECT … ORDER BY next_wake_at "
        "LIMIT 1 FOR UPDATE SKIP LOCKED` then `UPDATE` with a 1 KiB body, 8 clients.",
        "- Row 11's reference is wrk against a single origin listener: wrk cannot spread over 1,000 addresses.",
        "- Rows 5–6: wrk (1 thread, 32 connections, core 1) against `refreshd serve` on core 0, set up through "
        "the API (devices, tokens, launches, first fetches); the memory server and redis-server also run on core 0. "
        "CPU per request = the server's utime + stime over the run / requests.",
        "- Row 7: wrk with 2 threads, not pinned; the load generator shares the machine's 2 cores with the server, "
        "so the ratio understates what a second core gives a server with cores of its own.",
        "- Rows 8–9: pairs loaded with " + str(run.get("importer", "?")) + " (due 12 h later, idle), "
        "VmRSS/VmHWM read when /healthz first answers 200.",
        "- Row 10: refreshd's lateness is measured at the origin (it includes claiming, ordering and the HTTP "
        "hop); the sleep loop ran at the same time in another process.",
    ]
    if quick:
        head.append("- Quick mode: one round, 3 s runs, 20,000 users due (the rate over the first 8 s of the drain), "
                    "250 rotating devices, 100,000 pairs for memory and cold start, lateness over 1 minute; "
                    "the 1 M drain is extrapolated, not measured.")
    for n in run.get("notes", []):
        head.append(f"- Note: {n}")
    head += ["", END]
    section = "\n".join(head)

    doc = open(doc_path).read()
    if BEGIN in doc and END in doc:
        before = doc[: doc.index(BEGIN)]
        after = doc[doc.index(END) + len(END):]
        doc = before + section + after
    else:
        # First time: after the introduction, before the first section.
        at = doc.index("\n## ")
        doc = doc[:at] + "\n" + section + "\n" + doc[at:]
    open(doc_path, "w").write(doc)
    json.dump({"machine": machine, "run": run, "medians": medians, "raw": records}, open(latest_path, "w"), indent=1)
    print("\n".join(head[head.index("| metric | refreshd | reference (same run) | ratio | goal | met? |"):][:len(table) + 2]))


if __name__ == "__main__":
    main()
