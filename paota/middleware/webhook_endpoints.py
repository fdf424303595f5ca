"""Webhook endpoints, events and their signatures (:mod:`paota.middleware.webhooks` sends them).

:class:`WebhookEndpoint` is where events go and which ones; :func:`sign` and
:func:`verify_signature` are the HMAC both sides compute (a receiver checks a request with
:func:`verify_signature`); :func:`event_id` names an event the same way on every worker, so a
receiver can drop a second copy.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import math
import re
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from paota.core.errors import ConfigError

__all__ = [
    "DEAD_KIND",
    "EVENT_KIND",
    "EVENT_TYPES",
    "SENT_KIND",
    "SIGNATURE_TOLERANCE_S",
    "WebhookEndpoint",
    "event_id",
    "quiet_httpx_request_log",
    "redact_webhook_url",
    "sign",
    "verify_signature",
]

EVENT_TYPES = frozenset({"succeeded", "retrying", "failed", "timed_out", "cancelled", "parked"})
"""What an endpoint may subscribe to (``parked`` matches ``failed`` and ``timed_out``)."""
EVENT_KIND = "webhook-event"
"""Document kind prefix of events waiting to be sent (``webhook-event:<endpoint>``)."""
SENT_KIND = "webhook-sent"
"""Document kind prefix of the markers of events sent (``webhook-sent:<endpoint>``)."""
DEAD_KIND = "webhook-dead"
"""Document kind prefix of events given up on after the retention time."""

_NAME = re.compile(r"^[A-Za-z0-9_.\-]{1,64}$")
_DEFAULT_EVENTS = frozenset({"succeeded", "failed", "timed_out", "cancelled"})


#: How far a signature's timestamp may be from the receiver's clock, by default (seconds).
SIGNATURE_TOLERANCE_S = 300.0


def _mac(secret: str | bytes, timestamp: int, event_id: str, event_type: str, body: bytes) -> str:
    key = secret.encode() if isinstance(secret, str) else secret
    signed = f"{timestamp}.{event_id}.{event_type}.".encode() + body
    return hmac.new(key, signed, hashlib.sha256).hexdigest()


def sign(
    secret: str | bytes, body: bytes, *, event_id: str, event_type: str, timestamp: int
) -> str:
    """The ``X-Paota-Signature`` value: ``t=<timestamp>,v1=<hex HMAC-SHA256>`` of
    ``"<timestamp>.<event_id>.<event_type>."`` and ``body``."""
    return f"t={timestamp},v1={_mac(secret, timestamp, event_id, event_type, body)}"


def verify_signature(
    secret: str | bytes,
    body: bytes,
    headers: Mapping[str, str],
    *,
    tolerance_s: float = SIGNATURE_TOLERANCE_S,
    now: float | None = None,
) -> bool:
    """Whether a webhook request is authentic and fresh: ``headers`` (the request's, any case)
    carry an ``X-Paota-Signature`` whose ``v1`` (one of them, during a secret rotation) is the
    HMAC of ``X-Paota-Event-Id``, ``X-Paota-Event`` and ``body`` (the raw bytes) with ``secret``,
    compared in constant time, and whose ``t`` is within ``tolerance_s`` of ``now`` (default: this
    machine's clock). A receiver that also remembers the event ids it has handled (they are the
    idempotency keys) refuses replays altogether."""
    lower = {k.lower(): v for k, v in headers.items()}
    header = lower.get("x-paota-signature", "")
    timestamp: int | None = None
    macs: list[str] = []
    for part in header.split(","):
        key, _, value = part.strip().partition("=")
        if key == "t" and value.isdigit():
            timestamp = int(value)
        elif key == "v1" and value:
            macs.append(value)
    if timestamp is None or not macs:
        return False
    current = time.time() if now is None else now
    if abs(current - timestamp) > tolerance_s:
        return False
    expected = _mac(
        secret, timestamp, lower.get("x-paota-event-id", ""), lower.get("x-paota-event", ""), body
    )
    return any(hmac.compare_digest(expected, mac) for mac in macs)


def event_id(task_id: str, replays: int, attempt: int, type_: str) -> str:
    """The idempotency id of an event: the same for every copy of it, from any worker."""
    digest = hashlib.sha256(f"{task_id}\x00{replays}\x00{attempt}\x00{type_}".encode()).hexdigest()
    return f"evt_{digest[:32]}"


@dataclass(frozen=True)
class WebhookEndpoint:
    """Where events go: ``url`` (http or https), the ``secret`` the bodies are signed with, the
    event types it wants (``events``, default succeeded, failed, timed_out and cancelled; ``"*"``
    for all), ``name`` (default: derived from the URL; it names the endpoint's outbox, so keep it
    stable), ``timeout_s`` per request, ``include_result`` (a succeeded task's result in the
    body) and extra request ``headers``. Bad values raise :class:`~paota.ConfigError`."""

    url: str = field(repr=False)
    secret: str = field(repr=False)
    events: frozenset[str] | Iterable[str] = _DEFAULT_EVENTS
    name: str = ""
    timeout_s: float = 10.0
    include_result: bool = False
    headers: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.url, str) or not re.match(r"^https?://[^\s/]+", self.url):
            raise ConfigError(
                f"webhook url={redact_webhook_url(str(self.url))!r} is not valid: expected "
                "http://HOST[:PORT]/PATH or https://..."
            )
        if not isinstance(self.secret, str | bytes) or not self.secret:
            raise ConfigError(
                f"webhook {self.shown_url}: secret must be a non-empty string (the bodies are signed "
                "with it)"
            )
        events = self.events
        if isinstance(events, str):
            events = {events}
        events = frozenset(events)
        if "*" in events:
            events = EVENT_TYPES
        unknown = events - EVENT_TYPES
        if unknown or not events:
            raise ConfigError(
                f"webhook {self.shown_url}: events={sorted(unknown) or '(none)'} not valid: choose from "
                f"{', '.join(sorted(EVENT_TYPES))} (or '*')"
            )
        object.__setattr__(self, "events", events)
        name = self.name or "ep-" + hashlib.sha256(self.url.encode()).hexdigest()[:12]
        if not isinstance(name, str) or not _NAME.match(name):
            raise ConfigError(
                f"webhook name={self.name!r} is not valid: 1 to 64 letters, digits, _ . -"
            )
        object.__setattr__(self, "name", name)
        timeout = self.timeout_s
        if isinstance(timeout, bool) or not isinstance(timeout, int | float):
            raise ConfigError(f"webhook {self.shown_url}: timeout_s={timeout!r} is not a number")
        if not 0 < timeout <= 300:
            raise ConfigError(
                f"webhook {self.shown_url}: timeout_s={timeout!r} not within (0, 300]"
            )

    @property
    def shown_url(self) -> str:
        """The URL as logs and errors show it (:func:`redact_webhook_url`)."""
        return redact_webhook_url(self.url)

    def wants(self, type_: str, parked: bool) -> bool:
        """Whether this endpoint subscribed to an event of ``type_`` (``parked``: its message
        was parked)."""
        return type_ in self.events or (parked and "parked" in self.events)


def quiet_httpx_request_log() -> None:
    """Raise the ``httpx`` logger to WARNING unless the application set its level: at INFO it
    logs each request line with the full URL. An application that wants those lines sets the
    level itself (``logging.getLogger("httpx").setLevel(logging.INFO)``)."""
    http_logger = logging.getLogger("httpx")
    if http_logger.level == logging.NOTSET:
        http_logger.setLevel(logging.WARNING)


def redact_webhook_url(url: str) -> str:
    """``url`` as a log line may show it: scheme, host and port only. A webhook URL often carries
    its credential in the user info, the path (``/services/T0/B0/secret``) or the query
    (``?token=...``); each is replaced by ``***``."""
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = parts.port
    except ValueError:
        return "(a webhook URL that does not parse)"
    if ":" in host:
        host = f"[{host}]"
    shown = f"{parts.scheme}://{host}{f':{port}' if port else ''}"
    if parts.username is not None or parts.password is not None:
        shown = f"{parts.scheme}://***@{shown.partition('://')[2]}"
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        shown += "/***"
    return shown


def seconds_option(value: Any, name: str, *, low: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ConfigError(f"{name}={value!r} is not a number of seconds")
    if value < low:
        raise ConfigError(f"{name}={value!r} is not valid: expected at least {low:g} s")
    return float(value)
