"""A parser for ``text/event-stream`` (Server-Sent Events), fed with raw bytes."""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional


@dataclass(frozen=True)
class Event:
    """One dispatched event: ``event`` is its type (``"message"`` when unnamed),
    ``data`` its data lines joined with newlines, ``id`` the last event id seen."""

    event: str
    data: str
    id: Optional[str]


class EventStreamParser:
    """Turns chunks of an event stream into :class:`Event` values.

    Follows the HTML event-stream rules: lines end with CRLF, LF or CR (also across
    chunk boundaries); lines starting with ``:`` are comments; a field without a
    colon has an empty value; one space after the colon is dropped; an empty line
    dispatches the event (not when it has no data); ``id`` persists across events
    and is ignored when it contains NUL; ``retry`` sets :attr:`retry_ms`.
    """

    def __init__(self, last_event_id: Optional[str] = None) -> None:
        self.last_event_id = last_event_id
        self.retry_ms: Optional[int] = None
        self._pending = b""
        self._skip_lf = False
        self._first_line = True
        self._event = ""
        self._data: List[str] = []

    def feed(self, chunk: bytes) -> List[Event]:
        events: List[Event] = []
        if not chunk:
            return events
        if self._skip_lf and chunk[:1] == b"\n":
            chunk = chunk[1:]
        self._skip_lf = False
        buffer = self._pending + chunk
        start = 0
        length = len(buffer)
        while True:
            cr = buffer.find(b"\r", start)
            lf = buffer.find(b"\n", start)
            ends = [i for i in (cr, lf) if i >= 0]
            if not ends:
                break
            end = min(ends)
            line = buffer[start:end]
            if buffer[end:end + 1] == b"\r":
                if end + 1 < length:
                    start = end + 2 if buffer[end + 1:end + 2] == b"\n" else end + 1
                else:
                    start = end + 1
                    self._skip_lf = True  # a LF may start the next chunk
            else:
                start = end + 1
            event = self._line(line)
            if event is not None:
                events.append(event)
        self._pending = buffer[start:]
        return events

    def _line(self, raw: bytes) -> Optional[Event]:
        if self._first_line:
            self._first_line = False
            if raw.startswith(b"\xef\xbb\xbf"):
                raw = raw[3:]
        line = raw.decode("utf-8", "replace")
        if not line:
            return self._dispatch()
        if line.startswith(":"):
            return None
        name, colon, value = line.partition(":")
        if colon and value.startswith(" "):
            value = value[1:]
        if name == "event":
            self._event = value
        elif name == "data":
            self._data.append(value)
        elif name == "id":
            if "\0" not in value:
                self.last_event_id = value
        elif name == "retry":
            if value.isdigit() and value.isascii():
                self.retry_ms = int(value)
        return None

    def _dispatch(self) -> Optional[Event]:
        event_type, data = self._event or "message", self._data
        self._event, self._data = "", []
        if not data:
            return None
        return Event(event_type, "\n".join(data), self.last_event_id)
