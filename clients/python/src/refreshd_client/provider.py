"""Answering refreshd's deliveries on a widget provider's ``refresh_url``.

refreshd POSTs ``{"form_id", "form_name", "trigger", "deferred", ...}`` signed with
the provider's ``signing_secret``. A 2xx JSON answer (at most 262,144 bytes) becomes
the form's data; 204 keeps the data the form had; anything else is a failed delivery
that refreshd retries under the same ``refreshd-delivery-id``.

:func:`handle_delivery` is the framework-neutral core; :func:`wsgi_app` and
:func:`delivery_handler` wrap it for WSGI servers and for ``http.server``.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Tuple, Type, Union

from .errors import SignatureError
from .signatures import DELIVERY_ID_HEADER, SIGNATURE_HEADER, Now, Secrets, check_signature

log = logging.getLogger("refreshd_client.provider")

MAX_FORM_DATA_BYTES = 262_144


@dataclass(frozen=True)
class Delivery:
    """One verified delivery: what refreshd asks the provider to refresh."""

    form_id: str
    form_name: str
    trigger: str
    deferred: List[str]
    delivery_id: Optional[str]
    timestamp: int
    body: Dict[str, Any] = field(repr=False)


Answer = Callable[[Delivery], Any]
Response = Tuple[int, List[Tuple[str, str]], bytes]
Headers = Union[Mapping[str, str], Iterable[Tuple[str, str]]]


def _json_response(status: int, value: Any) -> Response:
    body = json.dumps(value, separators=(",", ":")).encode("utf-8")
    return status, [("Content-Type", "application/json"), ("Content-Length", str(len(body)))], body


def _header(headers: Headers, name: str) -> Optional[str]:
    getter = getattr(headers, "get_all", None)  # email.message.Message, http.client.HTTPMessage
    if getter is not None:
        values = getter(name)
        return values[0] if values else None
    items = headers.items() if isinstance(headers, Mapping) else headers
    for key, value in items:
        if key.lower() == name:
            return value
    return None


def handle_delivery(
    secret: Secrets,
    headers: Headers,
    raw_body: Union[bytes, str],
    answer: Answer,
    now: Now = None,
) -> Response:
    """Verifies one delivery and answers it; returns ``(status, headers, body)``.

    ``headers`` is a mapping or a list of pairs (names in any case); ``raw_body`` the
    request body exactly as received. ``answer(delivery)`` returns the form's new
    data (any JSON value, answered 200), or None to keep the data it has (204).
    A bad signature answers 401 and a body that is not a delivery 400, without
    calling ``answer``; an exception in ``answer``, or data over 262,144 bytes,
    answers 500 so that refreshd keeps the old data and retries.
    """
    if isinstance(raw_body, str):
        raw_body = raw_body.encode("utf-8")
    try:
        timestamp = check_signature(secret, _header(headers, SIGNATURE_HEADER), raw_body, now)
    except SignatureError as error:
        log.warning("rejected a delivery: %s", error)
        return _json_response(401, {"error": {"code": "invalid_signature", "message": str(error)}})
    try:
        body = json.loads(bytes(raw_body).decode("utf-8"))
        if not isinstance(body, dict) or not isinstance(body.get("form_id"), str):
            raise ValueError("not an object with a form_id")
    except ValueError as error:
        return _json_response(400, {"error": {"code": "invalid_request", "message": f"not a delivery: {error}"}})
    delivery = Delivery(
        form_id=body["form_id"],
        form_name=str(body.get("form_name", "")),
        trigger=str(body.get("trigger", "")),
        deferred=[str(kind) for kind in body.get("deferred") or []],
        delivery_id=_header(headers, DELIVERY_ID_HEADER),
        timestamp=timestamp,
        body=body,
    )
    try:
        data = answer(delivery)
        if data is None:
            return 204, [], b""
        status, out_headers, out = _json_response(200, data)
    except Exception:
        log.exception("answering delivery %s for form %s failed", delivery.delivery_id, delivery.form_id)
        return _json_response(500, {"error": {"code": "internal", "message": "the provider failed to answer"}})
    if len(out) > MAX_FORM_DATA_BYTES:
        log.error("form data for %s is %d bytes, over refreshd's %d", delivery.form_id, len(out), MAX_FORM_DATA_BYTES)
        return _json_response(500, {"error": {"code": "too_large", "message": "form data over 262,144 bytes"}})
    return status, out_headers, out


_REASONS = {200: "200 OK", 204: "204 No Content", 400: "400 Bad Request", 401: "401 Unauthorized",
            405: "405 Method Not Allowed", 413: "413 Payload Too Large", 500: "500 Internal Server Error"}

# refreshd's request bodies are small; anything much larger is not a delivery.
MAX_DELIVERY_BYTES = 1 << 20


def wsgi_app(secret: Secrets, answer: Answer) -> Callable:
    """A WSGI application answering deliveries POSTed to any path."""

    def app(environ: Mapping[str, Any], start_response: Callable) -> List[bytes]:
        if environ.get("REQUEST_METHOD") != "POST":
            status, headers, body = _json_response(405, {"error": {"code": "method_not_allowed", "message": "POST only"}})
        else:
            try:
                length = int(environ.get("CONTENT_LENGTH") or 0)
            except ValueError:
                length = -1
            if not 0 <= length <= MAX_DELIVERY_BYTES:
                status, headers, body = _json_response(413, {"error": {"code": "payload_too_large", "message": "body too large"}})
            else:
                raw = environ["wsgi.input"].read(length) if length else b""
                pairs = [
                    (key[5:].replace("_", "-").lower(), value)
                    for key, value in environ.items()
                    if key.startswith("HTTP_")
                ]
                status, headers, body = handle_delivery(secret, pairs, raw, answer)
        start_response(_REASONS.get(status, f"{status} Status"), headers)
        return [body]

    return app


def delivery_handler(secret: Secrets, answer: Answer) -> Type[BaseHTTPRequestHandler]:
    """A ``BaseHTTPRequestHandler`` class answering deliveries POSTed to any path."""

    class DeliveryHandler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            try:
                length = int(self.headers.get("Content-Length") or 0)
            except ValueError:
                length = -1
            if not 0 <= length <= MAX_DELIVERY_BYTES:
                self.close_connection = True
                return self._send(*_json_response(413, {"error": {"code": "payload_too_large", "message": "body too large"}}))
            raw = self.rfile.read(length) if length else b""
            self._send(*handle_delivery(secret, self.headers, raw, answer))

        def _send(self, status: int, headers: List[Tuple[str, str]], body: bytes) -> None:
            self.send_response(status)
            for name, value in headers:  # handle_delivery always names the length
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            log.debug("%s %s", self.address_string(), format % args)

    return DeliveryHandler


def serve_deliveries(secret: Secrets, answer: Answer, host: str = "127.0.0.1", port: int = 0) -> ThreadingHTTPServer:
    """A threading ``http.server`` answering deliveries; call ``serve_forever()`` on it
    (its ``server_address`` tells the port chosen when ``port`` is 0)."""
    return ThreadingHTTPServer((host, port), delivery_handler(secret, answer))
