"""A host device: refreshd's answers kept in a local SQLite cache.

The host reads prefetched mini-program data and widget data from the cache, with no
network, so they are there on launch and offline. The cache is filled by
:meth:`Device.sync` (``GET /v1/device/sync``) and by an :class:`EventListener` on
``GET /v1/events`` (Server-Sent Events).
"""
from __future__ import annotations

import http.client
import json
import logging
import random
import socket
import threading
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Callable, Dict, List, Mapping, Optional, Union

from ._http import NO_BODY, Transport, segment
from .cache import Cache, FetchedData, FormData, app_from
from .errors import RefreshdError
from .sse import Event, EventStreamParser

log = logging.getLogger("refreshd_client.device")

CURSOR = "sync_cursor"
LAST_EVENT_ID = "last_event_id"
_STORED: Any = object()


@dataclass(frozen=True)
class SyncResult:
    """What one sync brought: ``reset`` says the cache was replaced by the whole
    state; otherwise ``apps`` and ``forms`` are what changed since the last cursor
    and ``removed_forms`` the ids of forms gone since."""

    cursor: str
    reset: bool
    apps: List[FetchedData]
    forms: List[FormData]
    removed_forms: List[str]


class Device:
    """One device of a host, with its device key (``rfdd_``) and its cache file."""

    def __init__(
        self,
        base_url: str,
        key: str,
        cache_path: str,
        timeout: float = 30.0,
        ssl_context=None,
    ) -> None:
        self._http = Transport(base_url, key, timeout, ssl_context)
        self.cache = Cache(cache_path)
        self._listeners: List[EventListener] = []

    def close(self) -> None:
        """Stops the event listeners started by :meth:`listen` and closes the cache."""
        for listener in list(self._listeners):
            listener.stop()
        self.cache.close()

    def __enter__(self) -> "Device":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # Reads from the cache (never the network) ----------------------------------------

    def get_background_fetch_data(self, appid: str) -> Optional[FetchedData]:
        """The mini-program's prefetched data as last received, or None."""
        return self.cache.app(appid)

    def get_form_data(self, form_id: str) -> Optional[FormData]:
        """A widget's latest data as last received, or None for an unknown form."""
        return self.cache.form(form_id)

    def forms(self) -> List[FormData]:
        return self.cache.forms()

    def apps(self) -> List[FetchedData]:
        return self.cache.apps()

    @property
    def cursor(self) -> Optional[str]:
        """The cursor of the last sync (None before the first)."""
        return self.cache.meta(CURSOR)

    @property
    def last_event_id(self) -> Optional[str]:
        return self.cache.meta(LAST_EVENT_ID)

    # Sync ----------------------------------------------------------------------------

    def sync(self, cursor: Optional[str] = _STORED) -> SyncResult:
        """Brings the cache up to date with ``GET /v1/device/sync`` and stores the new
        cursor. ``reset: true`` answers replace the whole cache.

        By default the stored cursor is sent (none on the first sync); if refreshd
        rejects it as ``invalid_cursor``, the cache is rebuilt with a full sync. Passing
        ``cursor`` explicitly sends that one (None: none) and raises every error.
        """
        explicit = cursor is not _STORED
        sent = cursor if explicit else self.cursor
        try:
            _, body = self._http.request("GET", "/v1/device/sync", query={"cursor": sent}, compressed=True)
        except RefreshdError as error:
            if explicit or sent is None or error.code != "invalid_cursor":
                raise
            log.warning("refreshd rejected the stored sync cursor; syncing everything")
            _, body = self._http.request("GET", "/v1/device/sync", compressed=True)
        result = _sync_result(body)
        with self.cache.transaction() as tx:
            if result.reset:
                # The whole state: what it does not list goes. What it lists is stored
                # unless an event received meanwhile brought something newer.
                tx.keep_only([a.appid for a in result.apps], [f.form_id for f in result.forms])
            for app in result.apps:
                tx.put_app(app)
            for form in result.forms:
                tx.put_form(form.form_id, form.provider, form.form_name)
                if form.updated_at is None and result.reset:
                    tx.clear_form_data(form.form_id)
                tx.put_form_data(form.form_id, form.data, form.updated_at, form.trigger)
            for form_id in result.removed_forms:
                tx.remove_form(form_id)
            tx.set_meta(CURSOR, result.cursor)
        return result

    # Events --------------------------------------------------------------------------

    def listen(
        self,
        on_event: Optional[Callable[[str, Any], None]] = None,
        **options: Any,
    ) -> "EventListener":
        """Starts an :class:`EventListener` thread; ``stop()`` it (or :meth:`close`)."""
        listener = EventListener(self, on_event, **options)
        self._listeners.append(listener)
        listener.start()
        return listener

    def apply_event(self, event: Event) -> Any:
        """Applies one event of ``/v1/events`` to the cache and records its id;
        returns its parsed data (None when the data is not JSON)."""
        try:
            payload = json.loads(event.data)
        except ValueError:
            log.warning("event %s (%s) has data that is not JSON; skipped", event.id, event.event)
            payload = None
        with self.cache.transaction() as tx:
            try:
                if payload is not None and event.event == "fetched_data":
                    tx.put_app(app_from(payload))
                elif payload is not None and event.event == "form_data":
                    tx.put_form_data(
                        str(payload["form_id"]), payload.get("data"), payload.get("updated_at"), payload.get("trigger")
                    )
                elif payload is not None and event.event == "form_removed":
                    tx.remove_form(str(payload["form_id"]))
            except (KeyError, TypeError, ValueError, AttributeError):
                log.warning("event %s (%s) does not have the expected shape; skipped", event.id, event.event)
            if event.id is not None:
                tx.set_meta(LAST_EVENT_ID, event.id)
        return payload

    # Device calls (network) ----------------------------------------------------------

    def launch(self, appid: str) -> None:
        """Reports that the user opened the mini-program (it makes the user active)."""
        self._call("POST", f"/v1/apps/{segment(appid)}/launch")

    def set_token(self, appid: str, token: str) -> None:
        """Sets the token refreshd passes to the developer's data address."""
        self._call("PUT", f"/v1/apps/{segment(appid)}/background-fetch/token", {"token": token})

    def fetch_background_data(self, appid: str) -> FetchedData:
        """Asks refreshd for the app's cached data (network) and keeps it in the cache.
        Raises ``RefreshdError`` 404 ``no_cached_data`` when there is none."""
        body = self._call(
            "GET", f"/v1/apps/{segment(appid)}/background-fetch", query={"fetch_type": "periodic"}
        )
        app = app_from({"appid": appid, **body})
        with self.cache.transaction() as tx:
            tx.put_app(app)
        return app

    def add_form(self, provider: str, form_name: str, hidden: bool = False) -> str:
        """Places a widget; returns its ``form_id`` (also recorded in the cache)."""
        body = self._call("POST", "/v1/forms", {"provider": provider, "form_name": form_name, "hidden": hidden})
        form_id = str(body["form_id"])
        with self.cache.transaction() as tx:
            tx.put_form(form_id, provider, form_name)
        return form_id

    def remove_form(self, form_id: str) -> None:
        """Removes a widget (and its cached data)."""
        self._call("DELETE", f"/v1/forms/{segment(form_id)}")
        with self.cache.transaction() as tx:
            tx.remove_form(form_id)

    def set_visibility(self, form_id: str, visible: bool) -> None:
        self._call("POST", f"/v1/forms/{segment(form_id)}/visibility", {"visible": visible})

    def fetch_form_data(self, form_id: str) -> FormData:
        """Asks refreshd for a form's data (network) and keeps it in the cache.
        Raises ``RefreshdError`` 404 ``no_form_data`` when there is none yet."""
        body = self._call("GET", f"/v1/forms/{segment(form_id)}/data")
        with self.cache.transaction() as tx:
            tx.put_form_data(form_id, body.get("data"), body.get("updated_at"), body.get("trigger"))
        cached = self.cache.form(form_id)
        return cached or FormData(form_id, None, None, body.get("data"), body.get("updated_at"), body.get("trigger"))

    def explain_form(self, form_id: str) -> Any:
        return self._call("GET", f"/v1/forms/{segment(form_id)}/explain")

    def report_network(self, online: bool, since: Union[None, str, datetime] = None) -> None:
        """Reports connectivity; after an outage, ``since`` says when it went offline."""
        body: Dict[str, Any] = {"online": online}
        if isinstance(since, datetime):
            if since.tzinfo is None:
                raise ValueError("since must be an aware datetime")
            since = since.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")
        if since is not None:
            body["since"] = since
        self._call("POST", "/v1/device/network", body)

    def set_zone(self, zone: str) -> None:
        """The device's IANA time zone, e.g. ``Europe/Berlin``."""
        self._call("PUT", "/v1/device/zone", {"zone": zone})

    def _call(self, method: str, path: str, body: Any = NO_BODY, query: Optional[Mapping[str, Any]] = None) -> Any:
        return self._http.request(method, path, body, query)[1]


def _sync_result(body: Any) -> SyncResult:
    if not isinstance(body, dict) or not isinstance(body.get("cursor"), str):
        raise RefreshdError(200, "invalid_response", "the sync answer has no cursor")
    forms = [
        FormData(
            str(form["form_id"]),
            form.get("provider"),
            form.get("form_name"),
            form.get("data"),
            form.get("updated_at"),
            form.get("trigger"),
        )
        for form in body.get("forms") or []
    ]
    return SyncResult(
        cursor=body["cursor"],
        reset=bool(body.get("reset")),
        apps=[app_from(app) for app in body.get("apps") or []],
        forms=forms,
        removed_forms=[str(form_id) for form_id in body.get("removed_forms") or []],
    )


class EventListener:
    """Listens to ``GET /v1/events`` in a daemon thread and applies each event to the
    device's cache (then calls ``on_event(event_type, data)``).

    The stream may end at any time; the listener reconnects with exponential backoff
    (with jitter, from ``initial_backoff`` up to ``max_backoff`` seconds, honouring
    ``Retry-After`` and the stream's ``retry:``) and sends ``Last-Event-ID`` so that
    refreshd replays what was missed. A 401 or another client error other than 429
    stops it: ``error`` holds the :class:`RefreshdError`. ``stop()`` ends it at once.
    """

    def __init__(
        self,
        device: Device,
        on_event: Optional[Callable[[str, Any], None]] = None,
        initial_backoff: float = 0.5,
        max_backoff: float = 30.0,
        read_timeout: float = 90.0,
    ) -> None:
        self.device = device
        self.on_event = on_event
        self.initial_backoff = initial_backoff
        self.max_backoff = max_backoff
        self.read_timeout = read_timeout
        self.error: Optional[RefreshdError] = None
        self.connections = 0  # streams opened so far
        self._connected = threading.Event()
        self._stopping = threading.Event()
        self._socket_lock = threading.Lock()
        self._socket: Optional[socket.socket] = None
        self._thread = threading.Thread(target=self._run, name="refreshd-events", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: Optional[float] = 10.0) -> bool:
        """Ends the stream and the thread; True when the thread has ended."""
        self._stopping.set()
        self._interrupt()
        if self._thread.ident is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)
        if self in self.device._listeners:
            self.device._listeners.remove(self)
        return not self._thread.is_alive()

    def join(self, timeout: Optional[float] = None) -> bool:
        """Waits for the thread to end by itself (after a fatal ``error``); True if it has."""
        self._thread.join(timeout)
        return not self._thread.is_alive()

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    def wait_connected(self, timeout: Optional[float] = None) -> bool:
        """Waits until a stream is open (True) or ``timeout`` passes (False)."""
        return self._connected.wait(timeout)

    def _interrupt(self) -> None:
        with self._socket_lock:
            sock = self._socket
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def _run(self) -> None:
        backoff = self.initial_backoff
        while not self._stopping.is_set():
            delay: Optional[float] = None
            opened_before = self.connections
            try:
                self._stream()
            except RefreshdError as error:
                if error.status == 429 or error.status >= 500 or error.status == 408:
                    delay = error.retry_after
                    log.info("event stream refused (%s); retrying", error)
                else:
                    self.error = error
                    log.error("event stream refused for good: %s", error)
                    return
            except (OSError, http.client.HTTPException) as error:
                if not self._stopping.is_set():
                    log.info("event stream lost: %s", error)
            except Exception:
                # Anything else (a full disk under the cache, say) is logged and retried
                # with backoff rather than silently ending the thread.
                if not self._stopping.is_set():
                    log.exception("event listener failed; retrying")
            finally:
                self._connected.clear()
            if self._stopping.is_set():
                return
            if self.connections > opened_before:
                backoff = self.initial_backoff  # the stream worked; start afresh
            if delay is None:
                delay = random.uniform(backoff / 2, backoff)
                backoff = min(self.max_backoff, backoff * 2)
            self._stopping.wait(delay)

    def _stream(self) -> None:
        """One connection: reads events until the stream ends."""
        transport = self.device._http
        headers = transport.headers({"Accept": "text/event-stream", "Cache-Control": "no-cache"})
        last_id = self.device.last_event_id
        if last_id:
            headers["Last-Event-ID"] = last_id
        conn = transport.connect(timeout=self.read_timeout)
        try:
            conn.connect()
            with self._socket_lock:
                self._socket = conn.sock
            if self._stopping.is_set():
                return
            conn.request("GET", transport.target("/v1/events"), headers=headers)
            response = conn.getresponse()
            if response.status != 200:
                raise RefreshdError.from_response(
                    response.status, response.read(), response.getheader("Retry-After")
                )
            self.connections += 1
            self._connected.set()
            parser = EventStreamParser(last_id)
            while not self._stopping.is_set():
                chunk = response.read1(65536)
                if not chunk:
                    break  # the server ended the stream
                for event in parser.feed(chunk):
                    self._deliver(event)
                if parser.retry_ms is not None:
                    self.initial_backoff = parser.retry_ms / 1000
        finally:
            with self._socket_lock:
                self._socket = None
            conn.close()

    def _deliver(self, event: Event) -> None:
        payload = self.device.apply_event(event)
        if self.on_event is not None:
            try:
                self.on_event(event.event, payload)
            except Exception:
                log.exception("the on_event callback failed")
