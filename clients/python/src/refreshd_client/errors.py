"""The error refreshd answers, as a Python exception."""
from __future__ import annotations

import json
from typing import Any, List, Mapping, Optional


class RefreshdError(Exception):
    """A non-2xx answer from refreshd.

    ``status`` is the HTTP status, ``code`` the machine-readable code from the
    api.md error shape (``{"error": {"code", "message", "details"}}``), ``message``
    the human-readable text and ``details`` the list of problems (each a dict with
    ``path``, ``code``, ``message`` and ``hint`` when the server gave them).
    ``retry_after`` is the ``Retry-After`` header in seconds (429 answers), or None.
    """

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        details: Optional[List[Mapping[str, Any]]] = None,
        retry_after: Optional[float] = None,
    ) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.details: List[Mapping[str, Any]] = list(details or [])
        self.retry_after = retry_after

    @classmethod
    def from_response(
        cls, status: int, body: bytes, retry_after: Optional[str] = None
    ) -> "RefreshdError":
        """Builds the error from an answer's status, body and Retry-After header.

        A body that is not the api.md error shape (a proxy's HTML page, say) still
        gives an error: its code is ``http_<status>`` and its message the text.
        """
        code, message, details = f"http_{status}", "", []
        try:
            parsed = json.loads(body.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            parsed = None
        error = parsed.get("error") if isinstance(parsed, dict) else None
        if isinstance(error, dict) and isinstance(error.get("code"), str):
            code = error["code"]
            message = str(error.get("message", ""))
            if isinstance(error.get("details"), list):
                details = error["details"]
        else:
            message = body.decode("utf-8", "replace").strip()[:500]
        return cls(status, code, message, details, _seconds(retry_after))


class SignatureError(ValueError):
    """A ``refreshd-signature`` header that does not verify.

    ``reason`` is ``"malformed"`` (missing, unparsable, no ``t=`` or no usable
    ``v1=``), ``"mismatch"`` (no ``v1=`` matches the secret) or ``"expired"``
    (the timestamp is more than the tolerance away from now).
    """

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def _seconds(value: Optional[str]) -> Optional[float]:
    if value is None:
        return None
    try:
        return max(0.0, float(value.strip()))
    except ValueError:
        return None
