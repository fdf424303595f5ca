"""The sender of webhook events: delivers what :class:`~paota.middleware.webhooks.WebhookMiddleware`
wrote into the store's outbox, over HTTP, signed, retried with backoff (see
:mod:`paota.middleware.webhooks` for the whole journey). Imports httpx when it starts.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from paota.core.errors import StoreError
from paota.core.protocols import Coordination
from paota.middleware.webhook_endpoints import (
    DEAD_KIND,
    EVENT_KIND,
    SENT_KIND,
    WebhookEndpoint,
    quiet_httpx_request_log,
    sign,
)

if TYPE_CHECKING:
    import httpx

__all__ = ["WebhookSender"]

# The middleware's logger: its sender's lines are the webhooks' lines.
logger = logging.getLogger("paota.middleware.webhooks")


class WebhookSender:
    """Sends the due events of the outbox of ``store`` (set by its middleware) to ``endpoints``:
    :meth:`start` runs a background loop that calls :meth:`send_due` whenever :attr:`wake` is set,
    or every ``poll_interval_s``. ``owner`` names this worker in the claims that keep two workers
    from sending one event at once; the other options are the middleware's (already checked).
    """

    def __init__(
        self,
        endpoints: Sequence[WebhookEndpoint],
        *,
        owner: str,
        retention_s: float,
        backoff_base_s: float,
        backoff_cap_s: float,
        poll_interval_s: float,
        concurrency: int,
    ) -> None:
        self.endpoints = endpoints
        self.owner = owner
        self.retention_s = retention_s
        self.backoff_base_s = backoff_base_s
        self.backoff_cap_s = backoff_cap_s
        self.poll_interval_s = poll_interval_s
        self.concurrency = concurrency
        self.store: Coordination | None = None
        """The outbox (None: nothing to send)."""
        self.clock: Any = None
        self.wake = asyncio.Event()
        """Set when an event was written: the loop looks at the outbox at once."""
        self.sent = 0
        """Events delivered (2xx)."""
        self.failures = 0
        """Requests that failed (each is retried)."""
        self._task: asyncio.Task[None] | None = None
        self._http: httpx.AsyncClient | None = None

    def start(self, name: str) -> None:
        """Open the HTTP client and start the loop (an asyncio task called ``name``)."""
        import httpx

        # httpx logs every request's URL at INFO; a webhook URL holds a credential
        quiet_httpx_request_log()
        self._http = httpx.AsyncClient(follow_redirects=False)
        self.wake = asyncio.Event()
        self._task = asyncio.create_task(self._sending(), name=name)

    async def stop(self) -> None:
        """Stop the loop, close the HTTP client and forget the store (events in flight stay in
        the outbox, and are sent again later)."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        http, self._http = self._http, None
        if http is not None:
            await http.aclose()
        self.store = None

    async def _sending(self) -> None:
        failing = False
        while True:
            self.wake.clear()
            try:
                await self.send_due()
                if failing:
                    logger.info("webhooks: the store answers again")
                failing = False
            except StoreError as exc:
                if not failing:
                    logger.warning("webhooks: reading the outbox failed (%s); retrying", exc)
                failing = True
            except Exception:
                logger.exception("webhooks: the sender failed; it goes on")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wake.wait(), self.poll_interval_s)

    async def send_due(self) -> int:
        """Send every event that is due now (what the loop does each round); returns how many
        were delivered."""
        store = self.store
        if store is None:
            return 0
        delivered = 0
        for endpoint in self.endpoints:
            kind = f"{EVENT_KIND}:{endpoint.name}"
            docs = await store.list_docs(kind, limit=max(100, 25 * self.concurrency))
            now = self.clock.now()
            due = [d for d in docs if _time(d.get("next_at")) <= now]
            for start in range(0, len(due), self.concurrency):
                batch = due[start : start + self.concurrency]
                results = await asyncio.gather(*(self._deliver(store, endpoint, d) for d in batch))
                delivered += sum(results)
        return delivered

    async def _deliver(
        self, store: Coordination, endpoint: WebhookEndpoint, listed: Mapping[str, Any]
    ) -> bool:
        kind = f"{EVENT_KIND}:{endpoint.name}"
        key = str(listed["_key"])
        claim = f"paota.webhook-send:{endpoint.name}:{key}"
        if not await store.claim(claim, self.owner, ttl_s=endpoint.timeout_s + 30.0):
            return False  # another worker is sending it
        try:
            doc = await store.get_doc(kind, key)
            if doc is None or _time(doc.get("next_at")) > self.clock.now():
                return False  # sent (or rescheduled) by another worker meanwhile
            attempts = int(doc.get("attempts") or 0) + 1
            body = str(doc.get("body", "")).encode()
            error, retry_after_s = await self._post(endpoint, key, doc, body, attempts)
            now = self.clock.now()
            doc.pop("_key", None)
            if error is None:
                await store.put_doc(
                    f"{SENT_KIND}:{endpoint.name}",
                    key,
                    {"sent_at": now.isoformat(), "attempts": attempts, "type": doc.get("type")},
                    ttl_s=self.retention_s,
                )
                await store.delete_doc(kind, key)
                self.sent += 1
                logger.debug("webhook %s: event %s delivered", endpoint.name, key)
                return True
            self.failures += 1
            created = _time(doc.get("created_at"))
            delay_s = max(self._backoff(attempts), retry_after_s or 0.0)
            if (now - created).total_seconds() + delay_s > self.retention_s:
                await store.put_doc(
                    f"{DEAD_KIND}:{endpoint.name}",
                    key,
                    {
                        **doc,
                        "attempts": attempts,
                        "last_error": error,
                        "gave_up_at": now.isoformat(),
                    },
                    ttl_s=self.retention_s,
                )
                await store.delete_doc(kind, key)
                logger.error(
                    "webhook %s: event %s (%s of task %s) not delivered after %d attempts over "
                    "%.0f s; given up (last error: %s)",
                    endpoint.name,
                    key,
                    doc.get("type"),
                    doc.get("task_id"),
                    attempts,
                    (now - created).total_seconds(),
                    error,
                )
                return False
            await store.put_doc(
                kind,
                key,
                {
                    **doc,
                    "attempts": attempts,
                    "last_error": error,
                    "next_at": (now + timedelta(seconds=delay_s)).isoformat(),
                },
                ttl_s=self.retention_s * 2,
            )
            log = logger.warning if attempts in (1, 5, 10) or attempts % 50 == 0 else logger.info
            log(
                "webhook %s: event %s attempt %d failed (%s); next in %.1f s",
                endpoint.name,
                key,
                attempts,
                error,
                delay_s,
            )
            return False
        finally:
            with contextlib.suppress(StoreError):
                await store.release_claim(claim, self.owner)

    async def _post(
        self,
        endpoint: WebhookEndpoint,
        key: str,
        doc: Mapping[str, Any],
        body: bytes,
        attempts: int,
    ) -> tuple[str | None, float | None]:
        """POST one event: (None, None) on a 2xx answer, else (what went wrong, Retry-After)."""
        import httpx

        http = self._http
        assert http is not None
        headers = {
            **endpoint.headers,
            "Content-Type": "application/json",
            "User-Agent": "paota-webhooks",
            "X-Paota-Event-Id": key,
            "X-Paota-Event": str(doc.get("type", "")),
            "X-Paota-Delivery-Attempt": str(attempts),
            "X-Paota-Signature": sign(
                endpoint.secret,
                body,
                event_id=key,
                event_type=str(doc.get("type", "")),
                timestamp=int(time.time()),
            ),
        }
        try:
            response = await http.post(
                endpoint.url, content=body, headers=headers, timeout=endpoint.timeout_s
            )
        except httpx.HTTPError as exc:
            # httpx may quote the URL (and its credential): never in a log or the outbox
            text = f"{type(exc).__name__}: {exc}".replace(endpoint.url, endpoint.shown_url)
            return text[:500], None
        if 200 <= response.status_code < 300:
            return None, None
        retry_after = response.headers.get("retry-after", "")
        try:
            retry_after_s = min(float(retry_after), self.backoff_cap_s) if retry_after else None
        except ValueError:
            retry_after_s = None
        return f"HTTP {response.status_code}", retry_after_s

    def _backoff(self, attempts: int) -> float:
        doubled: float = self.backoff_base_s * 2.0 ** min(attempts - 1, 40)
        # Jitter, so that workers retrying after the same outage do not all call at once.
        return min(self.backoff_cap_s, doubled) * random.uniform(0.9, 1.1)


def _time(value: Any) -> datetime:
    if isinstance(value, str):
        with contextlib.suppress(ValueError):
            return datetime.fromisoformat(value)
    return _LONG_AGO


_LONG_AGO = datetime.min.replace(tzinfo=UTC)
