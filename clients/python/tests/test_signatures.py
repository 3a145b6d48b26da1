"""The signature checks, against values computed here independently of the library."""
import hashlib
import hmac
import unittest
from datetime import datetime, timezone

try:
    from . import support  # noqa: F401  (puts src on sys.path)
except ImportError:
    import support  # noqa: F401

from refreshd_client import (
    SignatureError,
    check_signature,
    sign,
    verify_fetch_signature,
    verify_signature,
)

SECRET = "3f1c" * 16
OTHER = "9a0b" * 16
BODY = b'{"form_id":"f1","form_name":"weather","trigger":"interval","deferred":[]}'
NOW = 1_764_250_000


def mac(secret, t, payload):
    if isinstance(payload, str):
        payload = payload.encode()
    return hmac.new(secret.encode(), f"{t}.".encode() + payload, hashlib.sha256).hexdigest()


class VerifySignature(unittest.TestCase):
    def test_valid_signature_is_accepted(self):
        header = f"t={NOW},v1={mac(SECRET, NOW, BODY)}"
        self.assertTrue(verify_signature(SECRET, header, BODY, now=NOW))
        self.assertEqual(check_signature(SECRET, header, BODY, now=NOW), NOW)

    def test_sign_matches_an_independent_hmac(self):
        self.assertEqual(sign(SECRET, BODY, timestamp=NOW), f"t={NOW},v1={mac(SECRET, NOW, BODY)}")

    def test_body_as_str_and_secret_as_bytes(self):
        header = f"t={NOW},v1={mac(SECRET, NOW, BODY)}"
        self.assertTrue(verify_signature(SECRET.encode(), header, BODY.decode(), now=NOW))

    def test_window_is_five_minutes_both_ways(self):
        header = f"t={NOW},v1={mac(SECRET, NOW, BODY)}"
        self.assertTrue(verify_signature(SECRET, header, BODY, now=NOW + 300))
        self.assertTrue(verify_signature(SECRET, header, BODY, now=NOW - 300))
        self.assertFalse(verify_signature(SECRET, header, BODY, now=NOW + 301))
        self.assertFalse(verify_signature(SECRET, header, BODY, now=NOW - 301))
        with self.assertRaises(SignatureError) as caught:
            check_signature(SECRET, header, BODY, now=NOW + 3600)
        self.assertEqual(caught.exception.reason, "expired")

    def test_now_as_datetime(self):
        header = f"t={NOW},v1={mac(SECRET, NOW, BODY)}"
        at = datetime.fromtimestamp(NOW + 10, timezone.utc)
        self.assertTrue(verify_signature(SECRET, header, BODY, now=at))
        self.assertFalse(verify_signature(SECRET, header, BODY, now=datetime.fromtimestamp(NOW + 400, timezone.utc)))

    def test_default_now_is_the_clock(self):
        self.assertTrue(verify_signature(SECRET, sign(SECRET, BODY), BODY))
        self.assertFalse(verify_signature(SECRET, sign(SECRET, BODY, timestamp=NOW), BODY))

    def test_wrong_secret_is_a_mismatch(self):
        header = f"t={NOW},v1={mac(OTHER, NOW, BODY)}"
        self.assertFalse(verify_signature(SECRET, header, BODY, now=NOW))
        with self.assertRaises(SignatureError) as caught:
            check_signature(SECRET, header, BODY, now=NOW)
        self.assertEqual(caught.exception.reason, "mismatch")

    def test_changed_body_or_timestamp_is_a_mismatch(self):
        header = f"t={NOW},v1={mac(SECRET, NOW, BODY)}"
        self.assertFalse(verify_signature(SECRET, header, BODY + b" ", now=NOW))
        moved = f"t={NOW + 1},v1={mac(SECRET, NOW, BODY)}"
        self.assertFalse(verify_signature(SECRET, moved, BODY, now=NOW))

    def test_two_v1_values_either_may_match(self):
        new, old = mac(SECRET, NOW, BODY), mac(OTHER, NOW, BODY)
        header = f"t={NOW},v1={new},v1={old}"
        self.assertTrue(verify_signature(SECRET, header, BODY, now=NOW))
        self.assertTrue(verify_signature(OTHER, header, BODY, now=NOW))
        self.assertFalse(verify_signature("ff" * 32, header, BODY, now=NOW))

    def test_several_secrets_on_the_verifier_side(self):
        header = f"t={NOW},v1={mac(OTHER, NOW, BODY)}"
        self.assertTrue(verify_signature([SECRET, OTHER], header, BODY, now=NOW))
        self.assertFalse(verify_signature(["aa" * 32, SECRET], header, BODY, now=NOW))

    def test_spaces_upper_case_hex_and_unknown_schemes_are_tolerated(self):
        value = mac(SECRET, NOW, BODY)
        header = f" t={NOW} , v0=abc, v1={value.upper()} ,v2=zz"
        self.assertTrue(verify_signature(SECRET, header, BODY, now=NOW))

    def test_malformed_headers_are_rejected(self):
        value = mac(SECRET, NOW, BODY)
        for header in [
            None,
            "",
            "garbage",
            f"v1={value}",  # no t
            f"t={NOW}",  # no v1
            f"t=abc,v1={value}",
            f"t=-{NOW},v1={value}",
            f"t={NOW},t={NOW},v1={value}",
            f"t={NOW},v1={value[:-1]}",  # 63 digits
            f"t={NOW},v1={value[:-1]}g",  # not hex
            f"t={NOW};v1={value}",
            f"t=\u0661\u0662,v1={value}",  # digits, but not ASCII
        ]:
            with self.subTest(header=header):
                self.assertFalse(verify_signature(SECRET, header, BODY, now=NOW))
                with self.assertRaises(SignatureError) as caught:
                    check_signature(SECRET, header, BODY, now=NOW)
                self.assertEqual(caught.exception.reason, "malformed")


class VerifyFetchSignature(unittest.TestCase):
    TARGET = "/data?appid=wx1&token=abc&timestamp=1764250000000"

    def test_valid_fetch_signature(self):
        header = f"t={NOW},v1={mac(SECRET, NOW, self.TARGET)}"
        self.assertTrue(verify_fetch_signature(SECRET, header, self.TARGET, now=NOW))

    def test_signature_covers_the_whole_query(self):
        header = f"t={NOW},v1={mac(SECRET, NOW, self.TARGET)}"
        self.assertFalse(verify_fetch_signature(SECRET, header, self.TARGET.replace("abc", "abd"), now=NOW))
        self.assertFalse(verify_fetch_signature(SECRET, header, "/data", now=NOW))

    def test_expired_wrong_secret_and_rotation(self):
        header = f"t={NOW},v1={mac(SECRET, NOW, self.TARGET)}"
        self.assertFalse(verify_fetch_signature(SECRET, header, self.TARGET, now=NOW + 301))
        self.assertFalse(verify_fetch_signature(OTHER, header, self.TARGET, now=NOW))
        rotated = f"t={NOW},v1={mac(OTHER, NOW, self.TARGET)},v1={mac(SECRET, NOW, self.TARGET)}"
        self.assertTrue(verify_fetch_signature(SECRET, rotated, self.TARGET, now=NOW))
        self.assertTrue(verify_fetch_signature(OTHER, rotated, self.TARGET, now=NOW))


if __name__ == "__main__":
    unittest.main()
