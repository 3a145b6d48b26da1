#!/usr/bin/env python3
"""Fixtures for .ci/openapi-check (standard library only).

  openapi_fixtures.py origin PORT_FILE
      Serves on 127.0.0.1 (a free port, written to PORT_FILE once listening) as both a
      widget provider (POST answers a refresh delivery with JSON data) and a developer's
      data server (GET answers a periodic fetch with text).

  openapi_fixtures.py setup BASE_URL ORIGIN_URL
      With the operator key in REFRESHD_ADMIN_KEY, creates one principal of every kind
      and the objects the API tests act on, then prints `export NAME=value` lines for
      the keys and ids (read by schemathesis.toml through the environment).
"""
import json
import os
import sys
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Origin(BaseHTTPRequestHandler):
    def _send(self, status, body, content_type):
        self.send_response(status)
        self.send_header("content-type", content_type)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        self._send(200, b'{"headline": "fresh"}', "text/plain; charset=utf-8")

    def do_POST(self):
        length = int(self.headers.get("content-length", "0"))
        self.rfile.read(length)
        self._send(200, b'{"temperature": 21}', "application/json")

    def log_message(self, fmt, *args):
        pass


def serve_origin(port_file):
    server = ThreadingHTTPServer(("127.0.0.1", 0), Origin)
    with open(port_file + ".tmp", "w") as f:
        f.write(str(server.server_address[1]))
    os.rename(port_file + ".tmp", port_file)
    server.serve_forever()


def call(base, method, path, key, body=None, expect=(200, 201, 204)):
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(base + path, data=data, method=method)
    request.add_header("Authorization", "Bearer " + key)
    if data is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            status, text = response.status, response.read()
    except urllib.error.HTTPError as error:
        status, text = error.code, error.read()
    if status not in expect:
        sys.exit(f"setup: {method} {path} answered {status}: {text[:500]!r}")
    return json.loads(text) if text else None


def setup(base, origin):
    operator = os.environ["REFRESHD_ADMIN_KEY"]
    out = {"RFD_KEY_OPERATOR": operator}
    app = call(base, "POST", "/v1/admin/apps", operator, {"appid": "wx1", "subject": "organization"})
    out["RFD_KEY_DEVELOPER"] = app["developer_key"]
    provider = call(base, "POST", "/v1/admin/providers", operator, {
        "provider": "prov1", "refresh_url": origin + "/refresh", "system_app": False, "api_version": 1})
    out["RFD_KEY_PROVIDER"] = provider["provider_key"]
    device = call(base, "POST", "/v1/admin/devices", operator,
                  {"device_id": "dev1", "user_id": "user1", "zone": "Asia/Shanghai"})
    out["RFD_KEY_DEVICE"] = device["device_key"]
    # Principals named "spare" of every kind, for key rotation and config uploads that
    # must not disturb the objects the other operations act on.
    call(base, "POST", "/v1/admin/apps", operator, {"appid": "spare", "subject": "individual"})
    spare = call(base, "POST", "/v1/admin/providers", operator, {
        "provider": "spare", "refresh_url": origin + "/refresh", "system_app": True, "api_version": 1})
    call(base, "POST", "/v1/admin/devices", operator,
         {"device_id": "spare", "user_id": "user2", "zone": "UTC"})
    config = {"forms": [
        {"name": "weather", "updateEnabled": True, "updateDuration": 1},
        {"name": "agenda", "updateEnabled": True, "updateDuration": 0, "scheduledUpdateTime": "10:30"},
    ]}
    for name, key in (("prov1", provider["provider_key"]), ("spare", spare["provider_key"])):
        call(base, "PUT", f"/v1/providers/{name}/form-config", key, config)
    dev = out["RFD_KEY_DEVICE"]
    kept = call(base, "POST", "/v1/forms", dev, {"provider": "prov1", "form_name": "weather"})
    removable = call(base, "POST", "/v1/forms", dev, {"provider": "prov1", "form_name": "agenda"})
    out["RFD_FORM"] = kept["form_id"]
    out["RFD_FORM_REMOVABLE"] = removable["form_id"]
    # An app and a provider kept for their DELETE operations, so that deleting does not
    # take away the objects every other operation acts on.
    call(base, "POST", "/v1/admin/apps", operator, {"appid": "removable", "subject": "individual"})
    call(base, "POST", "/v1/admin/providers", operator, {
        "provider": "removable", "refresh_url": origin + "/refresh", "system_app": False, "api_version": 1})
    out["RFD_APP_REMOVABLE"] = "removable"
    out["RFD_PROVIDER_REMOVABLE"] = "removable"
    # Periodic fetch for user1, with cached data from one fetch.
    developer = out["RFD_KEY_DEVELOPER"]
    call(base, "PUT", "/v1/apps/wx1/periodic-fetch", developer,
         {"enabled": True, "source": {"url": origin + "/data"}, "gray": None})
    call(base, "POST", "/v1/apps/wx1/launch", dev)
    call(base, "PUT", "/v1/apps/wx1/background-fetch/token", dev, {"token": "t0k3n"})
    fetched = call(base, "POST", "/v1/apps/wx1/periodic-fetch/fetch-now", developer, {"user_id": "user1"})
    if fetched["outcome"] != "ok":
        sys.exit(f"setup: the first fetch did not succeed: {fetched}")
    for name, value in out.items():
        print(f"export {name}={value}")


if __name__ == "__main__":
    if sys.argv[1:2] == ["origin"]:
        serve_origin(sys.argv[2])
    elif sys.argv[1:2] == ["setup"]:
        setup(sys.argv[2], sys.argv[3])
    else:
        sys.exit(__doc__)
