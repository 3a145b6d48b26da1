"""The event listener against a scripted event-stream server on loopback: reconnects
with Last-Event-ID, backs off on refusals, stops at once while blocked in a read.
(test_service.py runs it against refreshd itself.)"""
import os
import queue
import shutil
import tempfile
import threading
import time
import unittest
from http.server import BaseHTTPRequestHandler

try:
    from . import support
except ImportError:
    import support

from refreshd_client import Device


def event(id, appid, text, time_stamp):
    return (
        f"id: {id}\nevent: fetched_data\n"
        f'data: {{"appid":"{appid}","fetched_data":"{text}","time_stamp":{time_stamp}}}\n\n'
    ).encode()


class ScriptedStream:
    """Answers the n-th connection with ``script[n](handler)``; records each
    connection's Last-Event-ID and Authorization headers."""

    def __init__(self, script):
        self.script = list(script)
        self.connections = queue.Queue()
        self.release = threading.Event()  # ends streams held open
        stream = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self):
                stream.connections.put((self.path, self.headers.get("Last-Event-ID"), self.headers.get("Authorization")))
                step = stream.script.pop(0) if stream.script else hold_open
                step(self, stream)

            def log_message(self, *args):
                pass

        self.server = support.LoopbackServer(Handler)

    def close(self):
        self.release.set()
        self.server.close()

    def next_connection(self):
        return self.connections.get(timeout=support.DEADLINE)


def start_stream(handler):
    handler.send_response(200)
    handler.send_header("Content-Type", "text/event-stream")
    handler.send_header("Cache-Control", "no-cache")
    handler.end_headers()  # no length: the body runs until the connection closes
    handler.close_connection = True


def send_then_close(*chunks):
    def step(handler, stream):
        start_stream(handler)
        for chunk in chunks:
            handler.wfile.write(chunk)
            handler.wfile.flush()
    return step


def hold_open(handler, stream, *chunks):
    start_stream(handler)
    for chunk in chunks:
        handler.wfile.write(chunk)
        handler.wfile.flush()
    stream.release.wait(support.DEADLINE)


def refuse(status, retry_after=None):
    def step(handler, stream):
        body = b'{"error":{"code":"%s","message":"no","details":[]}}' % (b"unauthorized" if status == 401 else b"unavailable")
        handler.send_response(status)
        if retry_after is not None:
            handler.send_header("Retry-After", str(retry_after))
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)
    return step


class ListenerTest(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="refreshd-listener-")
        self.addCleanup(shutil.rmtree, self.tmp, True)

    def device(self, stream):
        self.addCleanup(stream.close)
        device = Device(stream.server.url, "rfdd_test", os.path.join(self.tmp, "cache.sqlite3"))
        self.addCleanup(device.close)
        return device

    def test_reconnects_with_last_event_id_and_applies_events(self):
        stream = ScriptedStream([
            send_then_close(b": hello\n\n", event(1, "wx1", "one", 100)),
            lambda handler, s: hold_open(handler, s, event(2, "wx1", "two", 200)),
        ])
        device = self.device(stream)
        events = support.Events()
        listener = device.listen(events, initial_backoff=0.01)
        path, last_id, auth = stream.next_connection()
        self.assertEqual((path, last_id, auth), ("/v1/events", None, "Bearer rfdd_test"))
        self.assertEqual(stream.next_connection()[1], "1")
        events.wait_for(lambda kind, data: data["fetched_data"] == "two", message="the second event")
        self.assertEqual([data["fetched_data"] for _, data in events.seen], ["one", "two"])
        self.assertEqual(device.get_background_fetch_data("wx1").fetched_data, "two")
        self.assertEqual(device.last_event_id, "2")
        self.assertEqual(listener.connections, 2)

        # stop() interrupts the read the thread is blocked in, well before the server lets go.
        started = time.monotonic()
        self.assertTrue(listener.stop(timeout=support.DEADLINE))
        self.assertLess(time.monotonic() - started, support.DEADLINE / 2)
        self.assertFalse(listener.running)

    def test_a_chunked_stream_cut_mid_chunk_is_reconnected(self):
        def cut(handler, stream):
            handler.send_response(200)
            handler.send_header("Content-Type", "text/event-stream")
            handler.send_header("Transfer-Encoding", "chunked")
            handler.end_headers()
            chunk = event(5, "wx1", "whole", 100)
            handler.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            handler.wfile.write(b"64\r\nid: 6")  # promises 100 bytes, sends 5, hangs up
            handler.wfile.flush()
            handler.close_connection = True

        stream = ScriptedStream([cut])
        device = self.device(stream)
        listener = device.listen(initial_backoff=0.01)
        stream.next_connection()
        self.assertEqual(stream.next_connection()[1], "5")
        self.assertEqual(device.get_background_fetch_data("wx1").fetched_data, "whole")
        self.assertTrue(listener.running)

    def test_a_new_listener_resumes_from_the_stored_event_id(self):
        stream = ScriptedStream([send_then_close(event(41, "wx1", "kept", 100))])
        device = self.device(stream)
        events = support.Events()
        listener = device.listen(events, initial_backoff=0.01)
        events.wait_for(lambda kind, data: True, message="one event")
        self.assertTrue(listener.stop())
        # Another process opening the same cache file resumes where the first stopped.
        again = Device(stream.server.url, "rfdd_again", device.cache.path)
        self.addCleanup(again.close)
        again.listen(initial_backoff=0.01)
        while True:
            _, last_id, auth = stream.next_connection()
            if auth == "Bearer rfdd_again":
                break
        self.assertEqual(last_id, "41")

    def test_older_data_never_replaces_newer(self):
        stream = ScriptedStream([send_then_close(event(1, "wx1", "new", 200), event(2, "wx1", "old", 100))])
        device = self.device(stream)
        events = support.Events()
        device.listen(events, initial_backoff=0.01)
        events.wait_for(lambda kind, data: data["fetched_data"] == "old", message="the stale event")
        self.assertEqual(device.get_background_fetch_data("wx1").fetched_data, "new")
        self.assertEqual(device.last_event_id, "2")

    def test_unavailable_is_retried_and_unauthorized_ends_the_listener(self):
        stream = ScriptedStream([refuse(503), refuse(429, retry_after=0), refuse(401)])
        device = self.device(stream)
        with self.assertLogs("refreshd_client.device", "ERROR"):
            listener = device.listen(initial_backoff=0.01)
            for _ in range(3):
                stream.next_connection()
            self.assertTrue(listener.join(support.DEADLINE))
        self.assertEqual((listener.error.status, listener.error.code), (401, "unauthorized"))
        self.assertEqual(listener.connections, 0)
        self.assertTrue(stream.connections.empty())  # no fourth attempt


if __name__ == "__main__":
    unittest.main()
