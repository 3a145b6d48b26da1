"""The device cache under sync answers from a canned server: reset semantics, the
newest data winning over a late answer, gzip-compressed answers."""
import gzip
import json
import os
import shutil
import tempfile
import unittest
from http.server import BaseHTTPRequestHandler

try:
    from . import support
except ImportError:
    import support

from refreshd_client import Device, Event


class CannedSync:
    """Answers ``GET /v1/device/sync`` with the next of ``answers``, gzip-compressed
    when asked; records each request's target."""

    def __init__(self, answers):
        self.answers = list(answers)
        self.targets = []
        canned = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self):
                canned.targets.append(self.path)
                body = json.dumps(canned.answers.pop(0)).encode()
                gzipped = "gzip" in (self.headers.get("Accept-Encoding") or "")
                if gzipped:
                    body = gzip.compress(body)
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                if gzipped:
                    self.send_header("Content-Encoding", "gzip")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = support.LoopbackServer(Handler)


def form(form_id, data=None, updated_at=None):
    return {"form_id": form_id, "provider": "p", "form_name": "w", "data": data,
            "updated_at": updated_at, "trigger": None if updated_at is None else "interval"}


class CacheTest(unittest.TestCase):
    def setUp(self):
        tmp = tempfile.mkdtemp(prefix="refreshd-cache-")
        self.addCleanup(shutil.rmtree, tmp, True)
        self.path = os.path.join(tmp, "cache.sqlite3")

    def device(self, answers):
        canned = CannedSync(answers)
        self.addCleanup(canned.server.close)
        device = Device(canned.server.url, "rfdd_test", self.path)
        self.addCleanup(device.close)
        return device, canned

    def test_reset_replaces_membership_but_keeps_newer_event_data(self):
        device, canned = self.device([
            {"cursor": "c1", "reset": True, "removed_forms": [],
             "apps": [{"appid": "wx1", "fetched_data": "old", "time_stamp": 100},
                      {"appid": "wx3", "fetched_data": "three", "time_stamp": 100}],
             "forms": [form("f1", {"v": 1}, "2026-11-27T10:00:00Z"), form("f2")]},
        ])
        # Before the answer is applied, events brought newer data and other objects.
        device.apply_event(Event("fetched_data", '{"appid":"wx1","fetched_data":"new","time_stamp":200}', "1"))
        device.apply_event(Event("fetched_data", '{"appid":"wx2","fetched_data":"gone","time_stamp":200}', "2"))
        device.apply_event(Event("form_data", '{"form_id":"f1","data":{"v":2},"updated_at":"2026-11-27T11:00:00.5+01:00","trigger":"provider"}', "3"))
        device.apply_event(Event("form_data", '{"form_id":"f9","data":1,"updated_at":"2026-11-27T11:00:00Z","trigger":"add"}', "4"))

        result = device.sync()
        self.assertTrue(result.reset)
        self.assertEqual(canned.targets, ["/v1/device/sync"])
        self.assertEqual([(a.appid, a.fetched_data) for a in device.apps()], [("wx1", "new"), ("wx3", "three")])
        # 11:00:00.5+01:00 is 10:00:00.5Z, later than the sync's 10:00:00Z.
        self.assertEqual([(f.form_id, f.data) for f in device.forms()], [("f1", {"v": 2}), ("f2", None)])
        self.assertEqual(device.get_form_data("f2").provider, "p")
        self.assertEqual((device.cursor, device.last_event_id), ("c1", "4"))

    def test_changes_after_a_cursor_are_merged(self):
        device, canned = self.device([
            {"cursor": "c/1+", "reset": True, "removed_forms": [],
             "apps": [{"appid": "wx1", "fetched_data": "one", "time_stamp": 100}],
             "forms": [form("f1", [1], "2026-11-27T10:00:00Z"), form("f2", [2], "2026-11-27T10:00:00Z")]},
            {"cursor": "c/2+", "reset": False, "removed_forms": ["f1"],
             "apps": [{"appid": "wx2", "fetched_data": "two", "time_stamp": 300}],
             "forms": [form("f2", [22], "2026-11-27T12:00:00Z"), form("f3")]},
        ])
        device.sync()
        changes = device.sync()
        self.assertFalse(changes.reset)
        self.assertEqual(canned.targets, ["/v1/device/sync", "/v1/device/sync?cursor=c%2F1%2B"])
        self.assertEqual([(a.appid, a.fetched_data) for a in device.apps()], [("wx1", "one"), ("wx2", "two")])
        self.assertEqual([(f.form_id, f.data) for f in device.forms()], [("f2", [22]), ("f3", None)])
        self.assertEqual(device.cursor, "c/2+")

    def test_a_late_event_with_older_data_changes_nothing(self):
        device, _ = self.device([
            {"cursor": "c1", "reset": True, "removed_forms": [],
             "apps": [{"appid": "wx1", "fetched_data": "newer", "time_stamp": 500}],
             "forms": [form("f1", "newer", "2026-11-27T12:00:00Z")]},
        ])
        device.sync()
        device.apply_event(Event("fetched_data", '{"appid":"wx1","fetched_data":"older","time_stamp":400}', "7"))
        device.apply_event(Event("form_data", '{"form_id":"f1","data":"older","updated_at":"2026-11-27T11:59:59.999Z","trigger":"interval"}', "8"))
        with self.assertLogs("refreshd_client.device", "WARNING"):
            device.apply_event(Event("form_data", "not json", "9"))
        self.assertEqual(device.get_background_fetch_data("wx1").fetched_data, "newer")
        self.assertEqual(device.get_form_data("f1").data, "newer")
        self.assertEqual(device.last_event_id, "9")


if __name__ == "__main__":
    unittest.main()
