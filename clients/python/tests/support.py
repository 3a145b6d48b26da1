"""Shared pieces of the tests: the real refreshd binary, loopback servers, waiting.

Importing this module puts ``clients/python/src`` on ``sys.path`` so the tests run
from a clean clone without installing the package.
"""
import json
import os
import queue
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

SRC = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "src")
if SRC not in sys.path:
    sys.path.insert(0, SRC)

START_DEADLINE = 30.0  # seconds for refreshd to say it listens
DEADLINE = 20.0  # seconds for anything the tests wait on, to catch hangs


def refreshd_binary():
    """The binary named by REFRESHD_BIN; raises (never skips) when it is not there."""
    path = os.environ.get("REFRESHD_BIN")
    if not path:
        raise RuntimeError(
            "REFRESHD_BIN is not set: point it at a refreshd binary "
            "(e.g. REFRESHD_BIN=$PWD/target/release/refreshd) to run the Python client tests"
        )
    if not (os.path.isfile(path) and os.access(path, os.X_OK)):
        raise RuntimeError(f"REFRESHD_BIN={path!r} is not an executable file")
    return path


def wait_until(predicate, timeout=DEADLINE, message="condition"):
    """Polls ``predicate`` until it returns a true value (returned) or the deadline
    passes (AssertionError). For state that only the server can change."""
    deadline = time.monotonic() + timeout
    delay = 0.01
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {message}")
        time.sleep(delay)
        delay = min(delay * 2, 0.2)


class Refreshd:
    """One ``refreshd serve`` process on a temporary data directory."""

    def __init__(self, data_dir=None, port=0, extra_args=()):
        self.binary = refreshd_binary()
        self.own_dir = data_dir is None
        self.data_dir = data_dir or tempfile.mkdtemp(prefix="refreshd-pytest-")
        self.admin_key = "rfdo_" + secrets.token_hex(24)
        self.port = port
        self.extra_args = list(extra_args)
        self.process = None
        self.url = None
        self.output = []

    def start(self):
        env = dict(os.environ, REFRESHD_ADMIN_KEY=self.admin_key)
        env.setdefault("RUST_LOG", "warn")
        args = [
            self.binary, "serve",
            "--data-dir", self.data_dir,
            "--listen", f"127.0.0.1:{self.port}",
            "--metrics-listen", "127.0.0.1:0",
            "--allow-destination", "127.0.0.0/8",
            "--rate-limit-per-second", "10000",
            "--rate-limit-burst", "10000",
        ] + self.extra_args
        self.process = subprocess.Popen(
            args, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1
        )
        lines = queue.Queue()

        process = self.process

        def pump():
            with process.stdout:
                for line in process.stdout:
                    self.output.append(line)
                    lines.put(line)
            lines.put(None)

        threading.Thread(target=pump, daemon=True).start()
        deadline = time.monotonic() + START_DEADLINE
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                self.stop()
                raise RuntimeError("refreshd did not print 'listening on http://' in time:\n" + "".join(self.output))
            try:
                line = lines.get(timeout=remaining)
            except queue.Empty:
                continue
            if line is None:
                raise RuntimeError("refreshd exited before listening:\n" + "".join(self.output))
            marker = line.find("listening on http://")
            if marker >= 0:
                self.url = line[marker + len("listening on "):].split()[0].rstrip("/")
                self.port = int(self.url.rsplit(":", 1)[1])
                return self

    def stop(self):
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(DEADLINE)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def cleanup(self):
        self.stop()
        if self.own_dir:
            shutil.rmtree(self.data_dir, ignore_errors=True)


class LoopbackServer:
    """An ``http.server`` on 127.0.0.1 in a thread. ``handler`` may be replaced
    (``set_handler``) after the port is known."""

    def __init__(self, handler=BaseHTTPRequestHandler):
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def set_handler(self, handler):
        self.httpd.RequestHandlerClass = handler

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(DEADLINE)


class DataServer(LoopbackServer):
    """A mini-program developer's data address: answers each user's fetch (told
    apart by the token in the query) with ``bodies[token]``, and records every
    request's target and signature header."""

    def __init__(self):
        self.bodies = {}
        self.requests = []  # (token, path and query, refreshd-signature header)
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self):
                token = parse_qs(urlsplit(self.path).query).get("token", [""])[0]
                with server.lock:
                    server.requests.append((token, self.path, self.headers.get("refreshd-signature")))
                    data = server.bodies.get(token, "nothing for " + token).encode("utf-8")
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; charset=utf-8")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        super().__init__(Handler)

    def requests_for(self, token):
        with self.lock:
            return [(path, signature) for t, path, signature in self.requests if t == token]


class Events:
    """Collects ``on_event`` calls of a listener; ``wait_for`` blocks (with a
    deadline) until one matches."""

    def __init__(self):
        self.seen = []
        self.condition = threading.Condition()

    def __call__(self, kind, data):
        with self.condition:
            self.seen.append((kind, data))
            self.condition.notify_all()

    def wait_for(self, predicate, timeout=DEADLINE, message="an event"):
        with self.condition:
            found = self.condition.wait_for(
                lambda: next((item for item in self.seen if predicate(*item)), None), timeout
            )
        if not found:
            raise AssertionError(f"timed out after {timeout} s waiting for {message}; saw {self.seen!r}")
        return found


def unique(prefix):
    return f"{prefix}{secrets.token_hex(4)}"


def dumps(value):
    return json.dumps(value, sort_keys=True)
