"""The device's local cache: a SQLite file holding what refreshd last told it.

Readers never touch the network. Writers are the sync call and the event listener;
a lock serialises them within a process and SQLite's own locking across processes.
"""
from __future__ import annotations

import json
import re
import sqlite3
import threading
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, Iterable, List, Mapping, Optional

SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS apps (
    appid        TEXT PRIMARY KEY,
    fetched_data TEXT NOT NULL,
    time_stamp   INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS forms (
    form_id       TEXT PRIMARY KEY,
    provider      TEXT,
    form_name     TEXT,
    data          TEXT,     -- JSON text; NULL while the form has no data
    updated_at    TEXT,
    updated_at_ms INTEGER,  -- updated_at as epoch ms, to keep the newest data
    trigger       TEXT
);
"""


@dataclass(frozen=True)
class FetchedData:
    """A mini-program's prefetched data, as ``getBackgroundFetchData`` gives it."""

    appid: str
    fetched_data: str
    time_stamp: int


@dataclass(frozen=True)
class FormData:
    """A widget placed on this device and its latest data (``data`` is None and
    ``updated_at`` None while refreshd has none for it)."""

    form_id: str
    provider: Optional[str]
    form_name: Optional[str]
    data: Any
    updated_at: Optional[str]
    trigger: Optional[str]


_RFC3339 = re.compile(
    r"(\d{4})-(\d\d)-(\d\d)[Tt ](\d\d):(\d\d):(\d\d)(?:\.(\d+))?(?:([Zz])|([+-])(\d\d):(\d\d))$"
)


def instant_ms(value: Optional[str]) -> Optional[int]:
    """An RFC 3339 instant as epoch milliseconds (None when absent or unreadable)."""
    if not value:
        return None
    match = _RFC3339.match(value.strip())
    if not match:
        return None
    year, month, day, hour, minute, second, fraction, zulu, sign, off_h, off_m = match.groups()
    try:
        at = datetime(int(year), int(month), int(day), int(hour), int(minute), int(second), tzinfo=timezone.utc)
    except ValueError:
        return None
    if not zulu:
        offset = timedelta(hours=int(off_h), minutes=int(off_m))
        at -= offset if sign == "+" else -offset
    millis = int((fraction or "0")[:3].ljust(3, "0"))
    return int(at.timestamp()) * 1000 + millis


def app_from(value: Mapping[str, Any]) -> FetchedData:
    return FetchedData(str(value["appid"]), str(value["fetched_data"]), int(value["time_stamp"]))


class Cache:
    """The SQLite file behind a :class:`~refreshd_client.Device`."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._lock = threading.RLock()
        self._db = sqlite3.connect(path, timeout=10.0, isolation_level=None, check_same_thread=False)
        with self._lock:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.executescript(_SCHEMA)
            self._db.execute(
                "INSERT OR IGNORE INTO meta(key, value) VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),)
            )

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # Reads -------------------------------------------------------------------------

    def meta(self, key: str) -> Optional[str]:
        with self._lock:
            row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    def app(self, appid: str) -> Optional[FetchedData]:
        with self._lock:
            row = self._db.execute(
                "SELECT appid, fetched_data, time_stamp FROM apps WHERE appid = ?", (appid,)
            ).fetchone()
        return FetchedData(*row) if row else None

    def apps(self) -> List[FetchedData]:
        with self._lock:
            rows = self._db.execute("SELECT appid, fetched_data, time_stamp FROM apps ORDER BY appid").fetchall()
        return [FetchedData(*row) for row in rows]

    def form(self, form_id: str) -> Optional[FormData]:
        with self._lock:
            row = self._db.execute(
                "SELECT form_id, provider, form_name, data, updated_at, trigger FROM forms WHERE form_id = ?",
                (form_id,),
            ).fetchone()
        return _form(row) if row else None

    def forms(self) -> List[FormData]:
        with self._lock:
            rows = self._db.execute(
                "SELECT form_id, provider, form_name, data, updated_at, trigger FROM forms ORDER BY form_id"
            ).fetchall()
        return [_form(row) for row in rows]

    # Writes: only inside ``with cache.transaction() as tx`` -----------------------------

    def transaction(self) -> "_Transaction":
        """``with cache.transaction() as tx:`` applies every write in it or none."""
        return _Transaction(self)

    def set_meta(self, key: str, value: Optional[str]) -> None:
        if value is None:
            self._db.execute("DELETE FROM meta WHERE key = ?", (key,))
        else:
            self._db.execute("INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)", (key, value))

    def put_app(self, app: FetchedData) -> bool:
        """Stores the app's data unless the cache already has newer; True when stored."""
        cursor = self._db.execute(
            "INSERT INTO apps(appid, fetched_data, time_stamp) VALUES (?, ?, ?) "
            "ON CONFLICT(appid) DO UPDATE SET fetched_data = excluded.fetched_data, "
            "time_stamp = excluded.time_stamp WHERE excluded.time_stamp >= apps.time_stamp",
            (app.appid, app.fetched_data, app.time_stamp),
        )
        return cursor.rowcount > 0

    def put_form(self, form_id: str, provider: Optional[str] = None, form_name: Optional[str] = None) -> None:
        self._db.execute(
            "INSERT INTO forms(form_id, provider, form_name) VALUES (?, ?, ?) "
            "ON CONFLICT(form_id) DO UPDATE SET provider = coalesce(excluded.provider, forms.provider), "
            "form_name = coalesce(excluded.form_name, forms.form_name)",
            (form_id, provider, form_name),
        )

    def put_form_data(self, form_id: str, data: Any, updated_at: Optional[str], trigger: Optional[str]) -> bool:
        """Stores a form's data unless the cache already has newer; True when stored."""
        if updated_at is None:
            return False  # "no data yet" never replaces data
        self.put_form(form_id)
        at = instant_ms(updated_at)
        cursor = self._db.execute(
            "UPDATE forms SET data = ?, updated_at = ?, updated_at_ms = ?, trigger = ? "
            "WHERE form_id = ? AND (updated_at_ms IS NULL OR ? IS NULL OR ? >= updated_at_ms)",
            (json.dumps(data), updated_at, at, trigger, form_id, at, at),
        )
        return cursor.rowcount > 0

    def remove_form(self, form_id: str) -> bool:
        return self._db.execute("DELETE FROM forms WHERE form_id = ?", (form_id,)).rowcount > 0

    def keep_only(self, appids: Iterable[str], form_ids: Iterable[str]) -> None:
        """Drops every app and form not named (a reset: the server listed them all)."""
        self._db.execute("CREATE TEMP TABLE IF NOT EXISTS keep_apps (appid TEXT PRIMARY KEY)")
        self._db.execute("CREATE TEMP TABLE IF NOT EXISTS keep_forms (form_id TEXT PRIMARY KEY)")
        self._db.execute("DELETE FROM keep_apps")
        self._db.execute("DELETE FROM keep_forms")
        self._db.executemany("INSERT OR IGNORE INTO keep_apps VALUES (?)", [(a,) for a in appids])
        self._db.executemany("INSERT OR IGNORE INTO keep_forms VALUES (?)", [(f,) for f in form_ids])
        self._db.execute("DELETE FROM apps WHERE appid NOT IN (SELECT appid FROM keep_apps)")
        self._db.execute("DELETE FROM forms WHERE form_id NOT IN (SELECT form_id FROM keep_forms)")

    def clear_form_data(self, form_id: str) -> None:
        self._db.execute(
            "UPDATE forms SET data = NULL, updated_at = NULL, updated_at_ms = NULL, trigger = NULL WHERE form_id = ?",
            (form_id,),
        )


class _Transaction:
    def __init__(self, cache: Cache) -> None:
        self.cache = cache

    def __enter__(self) -> Cache:
        self.cache._lock.acquire()
        try:
            self.cache._db.execute("BEGIN IMMEDIATE")
        except BaseException:
            self.cache._lock.release()
            raise
        return self.cache

    def __exit__(self, kind, value, traceback) -> None:
        try:
            self.cache._db.execute("COMMIT" if kind is None else "ROLLBACK")
        finally:
            self.cache._lock.release()


def _form(row: Iterable[Any]) -> FormData:
    form_id, provider, form_name, data, updated_at, trigger = row
    return FormData(form_id, provider, form_name, None if data is None else json.loads(data), updated_at, trigger)
