#!/usr/bin/env python3
"""A tiny stand-in for a mini-program developer's data server and a widget provider,
for the README quickstart. Standard library only. Listens on 127.0.0.1:8000:

  GET  /feed     answers with a JSON string (periodic data prefetch)
  POST /refresh  answers a refresh delivery with new widget data
"""
import json
import sys
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse


class Handler(BaseHTTPRequestHandler):
    def _send(self, status, body):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        url = urlparse(self.path)
        if url.path != "/feed":
            return self._send(404, {"error": "not found"})
        query = parse_qs(url.query)
        # A real server would check query["token"] here; never log it.
        self._send(200, {"headline": "fresh news", "for_app": query.get("appid", ["?"])[0]})

    def do_POST(self):
        if urlparse(self.path).path != "/refresh":
            return self._send(404, {"error": "not found"})
        length = int(self.headers.get("content-length", "0"))
        delivery = json.loads(self.rfile.read(length) or b"{}")
        now = datetime.now(timezone.utc).strftime("%H:%M:%S")
        self._send(200, {"temperature": 21, "refreshed_at": now, "trigger": delivery.get("trigger")})

    def log_message(self, fmt, *args):
        sys.stderr.write("demo server: " + (fmt % args).split("?")[0] + "\n")


if __name__ == "__main__":
    ThreadingHTTPServer(("127.0.0.1", 8000), Handler).serve_forever()
