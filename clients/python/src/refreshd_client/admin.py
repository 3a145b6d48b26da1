"""Calls of an operator, an app developer and a widget provider."""
from __future__ import annotations

from typing import Any, Dict, Mapping, Optional, Union

from ._http import NO_BODY, Transport, segment

_KINDS = ("apps", "providers", "devices")


class _Client:
    def __init__(self, base_url: str, key: str, timeout: float = 30.0, ssl_context=None) -> None:
        self._http = Transport(base_url, key, timeout, ssl_context)

    def _call(self, method: str, path: str, body: Any = NO_BODY, query=None) -> Any:
        return self._http.request(method, path, body, query)[1]


class Operator(_Client):
    """The operator key (``rfdo_``): creates apps, providers and devices, rotates keys."""

    def create_app(self, appid: str, subject: str = "individual") -> Dict[str, Any]:
        """``{"appid", "developer_key", "signing_secret"}``; the secret is shown once."""
        return self._call("POST", "/v1/admin/apps", {"appid": appid, "subject": subject})

    def create_provider(
        self, provider: str, refresh_url: str, system_app: bool = False, api_version: int = 1
    ) -> Dict[str, Any]:
        """``{"provider", "provider_key", "signing_secret"}``."""
        body = {
            "provider": provider,
            "refresh_url": refresh_url,
            "system_app": system_app,
            "api_version": api_version,
        }
        return self._call("POST", "/v1/admin/providers", body)

    def create_device(self, device_id: str, user_id: str, zone: str) -> Dict[str, Any]:
        """``{"device_id", "device_key"}``; ``zone`` is an IANA zone such as ``Asia/Shanghai``."""
        body = {"device_id": device_id, "user_id": user_id, "zone": zone}
        return self._call("POST", "/v1/admin/devices", body)

    def rotate_key(self, kind: str, id: str) -> Dict[str, Any]:
        """A new key for ``kind`` (``"apps"``, ``"providers"`` or ``"devices"``) ``id``;
        the old key answers 401 from then on."""
        if kind not in _KINDS:
            raise ValueError(f"kind must be one of {_KINDS}, not {kind!r}")
        return self._call("POST", f"/v1/admin/{kind}/{segment(id)}/rotate-key")

    def rotate_app_signing_secret(self, appid: str, overlap_minutes: Optional[int] = None) -> Dict[str, Any]:
        """A new secret for signing the app's periodic fetches: ``{"appid",
        "signing_secret", "previous_valid_until"}``; until the overlap ends, fetches
        carry a signature under each secret, the new one first."""
        return self._rotate_signing_secret("apps", appid, overlap_minutes)

    def rotate_provider_signing_secret(self, provider: str, overlap_minutes: Optional[int] = None) -> Dict[str, Any]:
        """A new secret for signing the provider's deliveries; until the overlap ends
        (default 1,440 minutes), deliveries carry a signature under each secret."""
        return self._rotate_signing_secret("providers", provider, overlap_minutes)

    def _rotate_signing_secret(self, kind: str, id: str, overlap_minutes: Optional[int]) -> Dict[str, Any]:
        body = {} if overlap_minutes is None else {"overlap_minutes": overlap_minutes}
        return self._call("POST", f"/v1/admin/{kind}/{segment(id)}/rotate-signing-secret", body)

    def set_market_update_duration(self, provider: str, update_duration: Optional[int]) -> Any:
        """The app-market override of a provider's interval (1..336, or None to clear)."""
        return self._call(
            "PUT",
            f"/v1/admin/providers/{segment(provider)}/market-update-duration",
            {"update_duration": update_duration},
        )


class Developer(_Client):
    """An app developer's key (``rfda_``): the periodic fetch of one app."""

    def put_periodic_fetch(
        self,
        appid: str,
        source: Union[str, Mapping[str, Any]],
        enabled: bool = True,
        gray: Optional[Mapping[str, Any]] = None,
    ) -> Dict[str, Any]:
        """Replaces the app's periodic-fetch setting; returns the stored setting.

        ``source`` is the data address (a URL string, sent as ``{"url": ...}``) or a
        source object such as ``{"cloud": {"env": ..., "function": ...}}``.
        ``gray`` is ``{"url", "percent", "testers"}`` or None.
        """
        if isinstance(source, str):
            source = {"url": source}
        body = {"enabled": enabled, "source": dict(source), "gray": None if gray is None else dict(gray)}
        return self._call("PUT", f"/v1/apps/{segment(appid)}/periodic-fetch", body)

    def fetch_now(self, appid: str, user_id: str) -> Dict[str, Any]:
        """Fetches at once for ``user_id``; ``{"outcome", "http_status", "time_stamp"}``
        once the fetch finished, whatever its outcome."""
        return self._call("POST", f"/v1/apps/{segment(appid)}/periodic-fetch/fetch-now", {"user_id": user_id})

    def fetch_log(self, appid: str, user_id: str) -> Any:
        """The last 100 attempts for the user, newest first (``{"attempts": [...]}``)."""
        return self._call("GET", f"/v1/apps/{segment(appid)}/periodic-fetch/log", query={"user_id": user_id})

    def explain(self, appid: str, user_id: str) -> Any:
        """Why the user's next fetch is due when it is, and whether it may happen."""
        return self._call("GET", f"/v1/apps/{segment(appid)}/periodic-fetch/explain", query={"user_id": user_id})


class Provider(_Client):
    """A widget provider's key (``rfdp_``)."""

    def put_form_config(self, provider: str, config: Mapping[str, Any]) -> Dict[str, Any]:
        """Uploads a ``form_config.json`` document; ``{"warnings": [...]}``. An invalid
        document raises ``RefreshdError`` 400 ``invalid_config`` with every problem in
        ``details``."""
        return self._call("PUT", f"/v1/providers/{segment(provider)}/form-config", dict(config))

    def next_refresh(self, form_id: str, minutes: int) -> Dict[str, Any]:
        """Asks for the form's next refresh in ``minutes``; ``{"due_at"}``."""
        return self._call("POST", f"/v1/forms/{segment(form_id)}/next-refresh", {"minutes": minutes})

    def put_form_data(self, form_id: str, data: Any) -> Any:
        """The provider's own update of a form's data (any JSON, at most 262,144 bytes)."""
        return self._call("PUT", f"/v1/forms/{segment(form_id)}/data", data)

    def explain_form(self, form_id: str) -> Any:
        """Today's count, deferred kinds, the last decisions and the next planned refreshes."""
        return self._call("GET", f"/v1/forms/{segment(form_id)}/explain")
