"""Python client for refreshd (standard library only).

- Hosts: :class:`Device` keeps refreshd's data in a local SQLite cache, filled by
  :meth:`Device.sync` and :meth:`Device.listen` (Server-Sent Events), and read with
  no network (:meth:`Device.get_background_fetch_data`, :meth:`Device.get_form_data`).
- Widget providers: :func:`handle_delivery` (and :func:`wsgi_app`,
  :func:`delivery_handler`) verify a delivery and answer the form's data;
  :func:`verify_signature` checks the signature alone.
- Mini-program developers: :func:`verify_fetch_signature` checks a signed periodic fetch.
- Operators and developers: :class:`Operator`, :class:`Developer`, :class:`Provider`.

Every non-2xx answer raises :class:`RefreshdError`.
"""
from ._version import __version__
from .admin import Developer, Operator, Provider
from .cache import FetchedData, FormData
from .device import Device, EventListener, SyncResult
from .errors import RefreshdError, SignatureError
from .provider import Delivery, delivery_handler, handle_delivery, serve_deliveries, wsgi_app
from .signatures import (
    SIGNATURE_HEADER,
    TOLERANCE_SECONDS,
    check_signature,
    compute_signature,
    sign,
    verify_fetch_signature,
    verify_signature,
)
from .sse import Event, EventStreamParser

__all__ = [
    "__version__",
    "Delivery",
    "Developer",
    "Device",
    "Event",
    "EventListener",
    "EventStreamParser",
    "FetchedData",
    "FormData",
    "Operator",
    "Provider",
    "RefreshdError",
    "SIGNATURE_HEADER",
    "SignatureError",
    "SyncResult",
    "TOLERANCE_SECONDS",
    "check_signature",
    "compute_signature",
    "delivery_handler",
    "handle_delivery",
    "serve_deliveries",
    "sign",
    "verify_fetch_signature",
    "verify_signature",
    "wsgi_app",
]
