"""One JSON request to refreshd over ``http.client`` (standard library only)."""
from __future__ import annotations

import gzip
import http.client
import json
import ssl
import zlib
from typing import Any, Dict, Mapping, Optional, Tuple
from urllib.parse import quote, urlencode, urlsplit

from ._version import __version__
from .errors import RefreshdError

USER_AGENT = f"refreshd-client-python/{__version__}"


NO_BODY: Any = object()


def segment(value: str) -> str:
    """One path segment, escaped (ids never change the path's shape)."""
    return quote(str(value), safe="")


class Transport:
    """Sends requests with one key to one refreshd base URL.

    Each request opens its own connection, so a ``Transport`` may be shared by
    threads. Proxy variables from the environment are not used.
    """

    def __init__(
        self,
        base_url: str,
        key: str,
        timeout: float = 30.0,
        ssl_context: Optional[ssl.SSLContext] = None,
    ) -> None:
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"base_url must be an http:// or https:// URL, not {base_url!r}")
        self.base_url = base_url.rstrip("/")
        self.key = key
        self.timeout = timeout
        self._https = parts.scheme == "https"
        self._netloc = parts.netloc
        self._prefix = parts.path.rstrip("/")
        self._ssl_context = ssl_context

    def connect(self, timeout: Optional[float] = None) -> http.client.HTTPConnection:
        timeout = self.timeout if timeout is None else timeout
        if self._https:
            return http.client.HTTPSConnection(
                self._netloc,
                timeout=timeout,
                context=self._ssl_context or ssl.create_default_context(),
            )
        return http.client.HTTPConnection(self._netloc, timeout=timeout)

    def target(self, path: str, query: Optional[Mapping[str, Any]] = None) -> str:
        target = self._prefix + path
        if query:
            pairs = {k: v for k, v in query.items() if v is not None}
            if pairs:
                target += "?" + urlencode(pairs)
        return target

    def headers(self, extra: Optional[Mapping[str, str]] = None) -> Dict[str, str]:
        headers = {
            "Authorization": f"Bearer {self.key}",
            "User-Agent": USER_AGENT,
            "Accept": "application/json",
        }
        headers.update(extra or {})
        return headers

    def request(
        self,
        method: str,
        path: str,
        body: Any = NO_BODY,
        query: Optional[Mapping[str, Any]] = None,
        compressed: bool = False,
    ) -> Tuple[int, Any]:
        """Sends one request; returns ``(status, parsed JSON or None)`` for a 2xx.

        Raises :class:`RefreshdError` for any other status, and ``OSError`` when
        refreshd cannot be reached.
        """
        extra: Dict[str, str] = {}
        payload = None
        if body is not NO_BODY:
            payload = json.dumps(body, separators=(",", ":")).encode("utf-8")
            extra["Content-Type"] = "application/json"
        elif method in ("POST", "PUT"):
            payload = b""
        if compressed:
            extra["Accept-Encoding"] = "gzip, deflate"
        conn = self.connect()
        try:
            conn.request(method, self.target(path, query), body=payload, headers=self.headers(extra))
            response = conn.getresponse()
            raw = _decode(response.read(), response.getheader("Content-Encoding"))
            status = response.status
            retry_after = response.getheader("Retry-After")
        finally:
            conn.close()
        if not 200 <= status < 300:
            raise RefreshdError.from_response(status, raw, retry_after)
        if not raw.strip():
            return status, None
        try:
            return status, json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as error:
            raise RefreshdError(status, "invalid_response", f"refreshd answered {status} with a body that is not JSON: {error}") from None


def _decode(raw: bytes, encoding: Optional[str]) -> bytes:
    encoding = (encoding or "identity").strip().lower()
    if encoding in ("identity", ""):
        return raw
    if encoding in ("gzip", "x-gzip"):
        return gzip.decompress(raw)
    if encoding == "deflate":
        try:
            return zlib.decompress(raw)
        except zlib.error:
            return zlib.decompress(raw, -zlib.MAX_WBITS)
    raise RefreshdError(0, "invalid_response", f"refreshd answered in an encoding this client did not ask for: {encoding}")
