#!/usr/bin/env python3
"""Sets up a running `refreshd serve` through its API for bench/run.sh.

    api_setup.py API OPERATOR_KEY ORIGIN_URL --apps s1=1024,s16=16384 [--devices N]
                 [--keys FILE] [--wait SECONDS]

Creates each app with its periodic fetch from ORIGIN_URL?size=BYTES, then N devices
(users u0..u{N-1}), each with a token and a launch in every app, and waits until every
user's cached data can be read. Writes the device keys to FILE, one per line.
"""

import argparse
import http.client
import json
import sys
import time
from urllib.parse import urlsplit


class Api:
    def __init__(self, base):
        parts = urlsplit(base)
        self.conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)

    def call(self, method, path, key, body=None):
        headers = {"authorization": f"Bearer {key}"}
        data = None
        if body is not None:
            data = json.dumps(body)
            headers["content-type"] = "application/json"
        self.conn.request(method, path, body=data, headers=headers)
        response = self.conn.getresponse()
        text = response.read()
        if response.status >= 400 and response.status != 404:
            sys.exit(f"{method} {path}: {response.status} {text[:300]!r}")
        return response.status, (json.loads(text) if text else None)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("api")
    parser.add_argument("operator_key")
    parser.add_argument("origin")
    parser.add_argument("--apps", required=True)
    parser.add_argument("--devices", type=int, default=0)
    parser.add_argument("--keys")
    parser.add_argument("--wait", type=float, default=180)
    args = parser.parse_args()
    api = Api(args.api)
    op = args.operator_key
    apps = [a.split("=") for a in args.apps.split(",")]
    for appid, size in apps:
        _, created = api.call("POST", "/v1/admin/apps", op, {"appid": appid, "subject": "organization"})
        source = {"url": f"{args.origin}?size={size}"}
        api.call("PUT", f"/v1/apps/{appid}/periodic-fetch", created["developer_key"],
                 {"enabled": True, "source": source})
    keys = []
    for i in range(args.devices):
        _, device = api.call("POST", "/v1/admin/devices", op,
                             {"device_id": f"d{i}", "user_id": f"u{i}", "zone": "UTC"})
        key = device["device_key"]
        keys.append(key)
        for appid, _ in apps:
            api.call("PUT", f"/v1/apps/{appid}/background-fetch/token", key, {"token": f"t{i}"})
            api.call("POST", f"/v1/apps/{appid}/launch", key)
    if args.keys:
        with open(args.keys, "w") as out:
            out.write("".join(k + "\n" for k in keys))
    # Every user's first fetch is due at once; wait until each cache can be read.
    deadline = time.monotonic() + args.wait
    waiting = [(key, appid) for key in keys for appid, _ in apps]
    while waiting:
        still = []
        for key, appid in waiting:
            status, body = api.call("GET", f"/v1/apps/{appid}/background-fetch", key)
            if status != 200 or not body or "fetched_data" not in body:
                still.append((key, appid))
        waiting = still
        if waiting:
            if time.monotonic() > deadline:
                sys.exit(f"{len(waiting)} caches still empty after {args.wait} s")
            time.sleep(0.2)


if __name__ == "__main__":
    main()
