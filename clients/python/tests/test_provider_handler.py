"""The delivery handler, called directly, through WSGI and through http.server."""
import http.client
import io
import json
import time
import unittest

try:
    from . import support
except ImportError:
    import support

from refreshd_client import delivery_handler, handle_delivery, sign, wsgi_app

SECRET = "5e" * 32
BODY = json.dumps(
    {"form_id": "f-1", "form_name": "weather", "trigger": "interval", "deferred": ["network"]}
).encode()


def weather(delivery):
    return {"temp": 21, "form": delivery.form_id, "trigger": delivery.trigger, "deferred": delivery.deferred}


class HandleDelivery(unittest.TestCase):
    def test_valid_delivery_is_answered_with_the_data(self):
        seen = []

        def answer(delivery):
            seen.append(delivery)
            return weather(delivery)

        headers = {"Refreshd-Signature": sign(SECRET, BODY), "Refreshd-Delivery-Id": "d-9"}
        status, out_headers, body = handle_delivery(SECRET, headers, BODY, answer)
        self.assertEqual(status, 200)
        self.assertIn(("Content-Type", "application/json"), out_headers)
        self.assertEqual(json.loads(body), {"temp": 21, "form": "f-1", "trigger": "interval", "deferred": ["network"]})
        self.assertEqual(seen[0].delivery_id, "d-9")
        self.assertEqual(seen[0].form_name, "weather")

    def test_none_keeps_the_data(self):
        headers = [("refreshd-signature", sign(SECRET, BODY))]
        self.assertEqual(handle_delivery(SECRET, headers, BODY, lambda d: None), (204, [], b""))

    def test_bad_signatures_are_401_and_never_reach_the_answer(self):
        def answer(delivery):
            raise AssertionError("answer called for a bad delivery")

        old = sign(SECRET, BODY, timestamp=int(time.time()) - 301)
        for headers in [{}, {"refreshd-signature": "t=1"}, {"refreshd-signature": sign("00" * 32, BODY)},
                        {"refreshd-signature": old}]:
            with self.subTest(headers=headers), self.assertLogs("refreshd_client.provider", "WARNING"):
                status, _, body = handle_delivery(SECRET, headers, BODY, answer)
                self.assertEqual(status, 401)
                self.assertEqual(json.loads(body)["error"]["code"], "invalid_signature")
        # A body changed after signing.
        with self.assertLogs("refreshd_client.provider", "WARNING"):
            status, _, _ = handle_delivery(SECRET, {"refreshd-signature": sign(SECRET, BODY)}, BODY + b" ", answer)
        self.assertEqual(status, 401)

    def test_signed_body_that_is_not_a_delivery_is_400(self):
        for raw in [b"not json", b"[1]", b'{"trigger":"add"}']:
            with self.subTest(raw=raw):
                status, _, _ = handle_delivery(SECRET, {"refreshd-signature": sign(SECRET, raw)}, raw, weather)
                self.assertEqual(status, 400)

    def test_failing_answer_or_oversized_data_is_500(self):
        headers = {"refreshd-signature": sign(SECRET, BODY)}

        def broken(delivery):
            raise RuntimeError("database down")

        with self.assertLogs("refreshd_client.provider", "ERROR"):
            self.assertEqual(handle_delivery(SECRET, headers, BODY, broken)[0], 500)
        with self.assertLogs("refreshd_client.provider", "ERROR"):
            self.assertEqual(handle_delivery(SECRET, headers, BODY, lambda d: "x" * 262_144)[0], 500)
        # Exactly at the limit is fine: a JSON string of 262,142 characters plus quotes.
        self.assertEqual(handle_delivery(SECRET, headers, BODY, lambda d: "x" * 262_142)[0], 200)


class WsgiApp(unittest.TestCase):
    def call(self, method, body, signature):
        environ = {
            "REQUEST_METHOD": method,
            "CONTENT_LENGTH": str(len(body)),
            "wsgi.input": io.BytesIO(body),
            "HTTP_REFRESHD_SIGNATURE": signature,
            "HTTP_REFRESHD_DELIVERY_ID": "d-1",
        }
        started = []
        out = wsgi_app(SECRET, weather)(environ, lambda status, headers: started.append((status, headers)))
        return started[0][0], b"".join(out)

    def test_wsgi_answers_a_valid_delivery(self):
        status, body = self.call("POST", BODY, sign(SECRET, BODY))
        self.assertEqual(status, "200 OK")
        self.assertEqual(json.loads(body)["form"], "f-1")

    def test_wsgi_rejects_bad_signature_and_other_methods(self):
        with self.assertLogs("refreshd_client.provider", "WARNING"):
            self.assertEqual(self.call("POST", BODY, sign(SECRET, b"{}"))[0], "401 Unauthorized")
        self.assertEqual(self.call("GET", b"", sign(SECRET, b""))[0], "405 Method Not Allowed")


class HttpServerHandler(unittest.TestCase):
    def setUp(self):
        self.server = support.LoopbackServer(delivery_handler(SECRET, weather))
        self.addCleanup(self.server.close)

    def post(self, body, headers):
        conn = http.client.HTTPConnection(self.server.url[len("http://"):], timeout=support.DEADLINE)
        try:
            conn.request("POST", "/refresh", body=body, headers=headers)
            response = conn.getresponse()
            return response.status, response.read()
        finally:
            conn.close()

    def test_handler_over_http(self):
        status, body = self.post(BODY, {"refreshd-signature": sign(SECRET, BODY), "content-type": "application/json"})
        self.assertEqual(status, 200)
        self.assertEqual(json.loads(body)["trigger"], "interval")
        with self.assertLogs("refreshd_client.provider", "WARNING"):
            status, _ = self.post(BODY, {"refreshd-signature": sign("11" * 32, BODY)})
        self.assertEqual(status, 401)


if __name__ == "__main__":
    unittest.main()
