"""The ``refreshd-signature`` header: checking it, and producing it for tests.

refreshd signs two kinds of requests with the same header,
``refreshd-signature: t=<unix seconds>,v1=<hex HMAC-SHA256>``:

- a delivery to a widget provider's ``refresh_url``, over ``"<t>.<raw body>"``,
  keyed with the provider's ``signing_secret``;
- a periodic fetch to a mini-program developer's data address, over
  ``"<t>.<path and query>"`` (the request target exactly as sent), keyed with the
  app's ``signing_secret``.

After an app's signing secret is rotated, the header carries two ``v1=`` values
(new first, then old) until the overlap ends; any one matching is enough.
"""
from __future__ import annotations

import hashlib
import hmac
import string
import time
from datetime import datetime
from typing import Iterable, List, Optional, Tuple, Union

from .errors import SignatureError

SIGNATURE_HEADER = "refreshd-signature"
DELIVERY_ID_HEADER = "refreshd-delivery-id"
TOLERANCE_SECONDS = 300

Secret = Union[str, bytes]
Secrets = Union[Secret, Iterable[Secret]]
Payload = Union[str, bytes, bytearray, memoryview]
Now = Union[None, int, float, datetime]

_HEX = frozenset(string.hexdigits)


def compute_signature(secret: Secret, timestamp: int, payload: Payload) -> str:
    """The hex HMAC-SHA256 of ``"<timestamp>.<payload>"`` keyed with ``secret``."""
    message = str(int(timestamp)).encode("ascii") + b"." + _bytes(payload)
    return hmac.new(_bytes(secret), message, hashlib.sha256).hexdigest()


def sign(secret: Secret, payload: Payload, timestamp: Optional[int] = None) -> str:
    """A header value as refreshd would send it (for tests of a provider or data server)."""
    t = int(time.time()) if timestamp is None else int(timestamp)
    return f"t={t},v1={compute_signature(secret, t, payload)}"


def parse_signature_header(header: Optional[str]) -> Tuple[int, List[str]]:
    """Splits a header value into its timestamp and its ``v1=`` values (lower case).

    Raises :class:`SignatureError` (reason ``"malformed"``) when there is no header,
    no single integer ``t=``, or no ``v1=`` value that is 64 hex digits. Other
    schemes (``v0=``, ``v2=``...) are ignored so that refreshd may add them later.
    """
    if not header or not isinstance(header, str):
        raise SignatureError("malformed", "no refreshd-signature header")
    timestamps: List[str] = []
    values: List[str] = []
    for item in header.split(","):
        name, sep, value = item.strip().partition("=")
        if not sep:
            continue
        name, value = name.strip(), value.strip()
        if name == "t":
            timestamps.append(value)
        elif name == "v1" and len(value) == 64 and set(value) <= _HEX:
            values.append(value.lower())
    if len(timestamps) != 1 or not timestamps[0].isdigit() or not timestamps[0].isascii():
        raise SignatureError("malformed", "the signature needs exactly one integer t=")
    if not values:
        raise SignatureError("malformed", "the signature has no v1= value of 64 hex digits")
    return int(timestamps[0]), values


def check_signature(
    secret: Secrets,
    header: Optional[str],
    payload: Payload,
    now: Now = None,
    tolerance: float = TOLERANCE_SECONDS,
) -> int:
    """Checks a signature header over ``payload``; returns its timestamp.

    ``secret`` may be one secret or several (while you roll your own copy of a new
    secret out). Accepts when any ``v1=`` value matches any secret (compared in
    constant time) and the timestamp is within ``tolerance`` seconds of ``now``
    (default: the current time) in either direction. Raises
    :class:`SignatureError` otherwise, with ``reason`` saying why.
    """
    timestamp, values = parse_signature_header(header)
    secrets = [secret] if isinstance(secret, (str, bytes)) else list(secret)
    if not secrets:
        raise ValueError("no signing secret given")
    matched = False
    for key in secrets:
        expected = compute_signature(key, timestamp, payload)
        for value in values:
            # No early exit: every pair is compared, so timing says nothing.
            matched |= hmac.compare_digest(expected, value)
    if not matched:
        raise SignatureError("mismatch", "no v1= value matches the signing secret")
    current = _unix(now)
    if abs(current - timestamp) > tolerance:
        raise SignatureError(
            "expired",
            f"the signature's timestamp is {int(current - timestamp)} s away from now "
            f"(at most {int(tolerance)} s accepted)",
        )
    return timestamp


def verify_signature(
    secret: Secrets,
    header: Optional[str],
    body: Payload,
    now: Now = None,
    tolerance: float = TOLERANCE_SECONDS,
) -> bool:
    """True when ``header`` is a valid, fresh signature of a delivery's raw ``body``.

    Pass the body exactly as received (bytes), before any JSON parsing.
    """
    try:
        check_signature(secret, header, body, now, tolerance)
    except SignatureError:
        return False
    return True


def verify_fetch_signature(
    secret: Secrets,
    header: Optional[str],
    path_and_query: str,
    now: Now = None,
    tolerance: float = TOLERANCE_SECONDS,
) -> bool:
    """True when ``header`` is a valid, fresh signature of a periodic fetch.

    ``path_and_query`` is the request target exactly as received, e.g.
    ``/data?appid=wx1&token=abc&timestamp=1764250000000`` (``self.path`` in an
    ``http.server`` handler; ``RAW_URI`` or ``PATH_INFO`` + ``?`` + ``QUERY_STRING``
    in WSGI when nothing was decoded).
    """
    return verify_signature(secret, header, path_and_query, now, tolerance)


def _bytes(value: Union[Secret, Payload]) -> bytes:
    if isinstance(value, str):
        return value.encode("utf-8")
    return bytes(value)


def _unix(now: Now) -> float:
    if now is None:
        return time.time()
    if isinstance(now, datetime):
        return now.timestamp()
    return float(now)
