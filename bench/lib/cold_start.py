#!/usr/bin/env python3
"""Cold start of `refreshd serve` on an existing data directory: the time from spawning
the process to the first 200 from /healthz, polled every millisecond over a raw socket
(no curl process per poll), median of N runs.

    python3 bench/lib/cold_start.py target/release/refreshd DATA_DIR [RUNS]

Compare with a full scan of the same table, e.g.
    hyperfine -N --warmup 1 "sqlite3 DATA_DIR/refreshd.sqlite3 'SELECT count(*), max(next_wake_at) FROM fetch_pairs'"
"""
import socket
import statistics
import subprocess
import sys
import time

PORT = 18080


def healthy():
    try:
        with socket.create_connection(("127.0.0.1", PORT), timeout=1) as s:
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")
            return s.recv(16).startswith(b"HTTP/1.1 200")
    except OSError:
        return False


def once(binary, data_dir):
    started = time.perf_counter()
    serve = subprocess.Popen(
        [binary, "serve", "--data-dir", data_dir, "--listen", f"127.0.0.1:{PORT}",
         "--metrics-listen", f"127.0.0.1:{PORT + 1}", "--allow-destination", "127.0.0.1/32"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = started + 120
        while not healthy():
            if serve.poll() is not None:
                sys.exit(f"serve ended with {serve.returncode} before /healthz answered")
            if time.perf_counter() > deadline:
                sys.exit("no 200 from /healthz within 120 s")
            time.sleep(0.001)
        return time.perf_counter() - started
    finally:
        serve.terminate()
        serve.wait()


def main():
    binary, data_dir = sys.argv[1], sys.argv[2]
    runs = int(sys.argv[3]) if len(sys.argv) > 3 else 5
    times = [once(binary, data_dir) for _ in range(runs)]
    print(f"cold start: median {statistics.median(times):.3f} s over {runs} runs "
          f"({', '.join(f'{t:.3f}' for t in times)})")


if __name__ == "__main__":
    main()
