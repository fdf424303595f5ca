"""Webhooks for task events: :class:`WebhookMiddleware` POSTs signed JSON events to endpoints.

How an event travels, and why it is never lost nor in the way of a task:

1. **Outbox.** When a delivery's outcome is durable (``after_outcome``, before the ack), the
   middleware writes one small document per subscribed endpoint into the store's
   :class:`~paota.core.protocols.Coordination` documents (kind ``webhook-event:<endpoint>``). That
   is the only work on the task's path: one store write, never a network call to the endpoint, so
   a slow, failing or unreachable endpoint cannot delay a task. A write that fails raises
   :class:`~paota.StoreError`, which returns the message to the broker like any store failure;
   its redelivery is recognised as a duplicate and writes the event then (so a crash between the
   task's record and its event loses nothing either).
2. **Sender.** Every worker with the middleware runs a sender in the background that reads the
   outbox, oldest first, claims each event in the store before sending it (so two workers do not
   send the same event at once) and POSTs it. A 2xx answer deletes the event and leaves a small
   ``webhook-sent`` marker for ``retention_s``; anything else (an error status, a timeout, a
   refused connection) is retried with exponential backoff (``backoff_base_s`` doubling up to
   ``backoff_cap_s``, or the endpoint's ``Retry-After``).
3. **Retention.** An event is retried for ``retention_s`` (3 days by default) after it happened;
   then it moves to ``webhook-dead:<endpoint>`` documents, kept another ``retention_s``, with an
   ERROR log. An endpoint that is down for less than ``retention_s`` receives every event when it
   comes back.

Delivery is at least once: an endpoint may receive an event twice (a worker that dies after the
POST and before deleting the event; two workers running a redelivered task), always with the same
``X-Paota-Event-Id``, which is derived from the task, its run, its attempt and the event type. Use
it to ignore repeats. Order is not guaranteed (oldest first, several in flight, retries).

Each request: ``POST`` with ``Content-Type: application/json``, ``X-Paota-Event-Id``,
``X-Paota-Event`` (the type), ``X-Paota-Delivery-Attempt`` (1, 2, ...), and
``X-Paota-Signature: t=<unix seconds>,v1=<hex>`` (Stripe's scheme): ``v1`` is the HMAC-SHA256,
with the endpoint's secret, of ``"<t>.<event id>.<event type>."`` followed by the exact body
bytes. It covers when the request was signed, which event it is and what it says, so a captured
request cannot be replayed later or under another id. Check it with :func:`verify_signature`,
which also refuses a ``t`` more than ``tolerance_s`` (300 s) away from the receiver's clock. The
body::

    {"id": "evt_...", "type": "task.failed", "created_at": "2026-05-04T12:00:00.123456+00:00",
     "task": {"id", "name", "queue", "status", "attempt", "replays", "worker",
              "error": {"type", "message"} | null, "result"?},
     "parked": {"queue": "failed", "reason": "retries-exhausted"} | null,
     "retry": {"attempt": 2, "delay_s": 1.0} | null}

Event types (an endpoint's ``events``): ``succeeded``, ``retrying`` (a failed attempt that will be
retried), ``failed`` and ``timed_out`` (final; the message was parked), ``cancelled``, and
``parked``, which subscribes to every event whose message was parked (``failed`` and
``timed_out``). The sender (:mod:`paota.middleware.webhook_sender`) imports httpx
(``paota[webhooks]``) when it starts.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import uuid
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from paota.core.context import TaskContext
from paota.core.errors import ConfigError
from paota.core.middleware import Middleware
from paota.core.outcome import Cancelled, Duplicate, Outcome, Park, Retry, Succeeded
from paota.core.protocols import (
    Coordination,
    ParkQueue,
    has_coordination,
)
from paota.core.state import TaskStatus
from paota.middleware.webhook_endpoints import (
    DEAD_KIND,
    EVENT_KIND,
    EVENT_TYPES,
    SENT_KIND,
    WebhookEndpoint,
    event_id,
    quiet_httpx_request_log,
    redact_webhook_url,
    seconds_option,
    sign,
    verify_signature,
)
from paota.middleware.webhook_sender import WebhookSender

if TYPE_CHECKING:
    from paota.core.services import WorkerServices

__all__ = [
    "DEAD_KIND",
    "EVENT_KIND",
    "EVENT_TYPES",
    "SENT_KIND",
    "WebhookEndpoint",
    "WebhookMiddleware",
    "event_id",
    "quiet_httpx_request_log",
    "redact_webhook_url",
    "sign",
    "verify_signature",
]

logger = logging.getLogger("paota.middleware.webhooks")


class WebhookMiddleware(Middleware):
    """Sends task events to ``endpoints`` (see the module docs): an outbox written in
    ``after_outcome``, a sender started by ``startup``.

    ``retention_s`` is how long an event is retried (3 days); ``backoff_base_s`` and
    ``backoff_cap_s`` shape the retries (1 s doubling, at most 5 minutes, with 10 % jitter);
    ``poll_interval_s`` is how often the sender looks for events written by other workers (its
    own wake it at once); ``concurrency`` is how many requests one worker has in flight per
    endpoint. ``send=False`` writes the outbox only (another process sends). Needs a store with
    the Coordination capability; without one, ``startup`` logs an ERROR and events are not
    written (they could not be kept).
    """

    def __init__(
        self,
        endpoints: Sequence[WebhookEndpoint],
        *,
        retention_s: float = 3 * 24 * 3600.0,
        backoff_base_s: float = 1.0,
        backoff_cap_s: float = 300.0,
        poll_interval_s: float = 1.0,
        concurrency: int = 4,
        send: bool = True,
    ) -> None:
        endpoints = list(endpoints)
        if not endpoints or not all(isinstance(e, WebhookEndpoint) for e in endpoints):
            raise ConfigError("WebhookMiddleware needs one or more WebhookEndpoint(...)")
        names = [e.name for e in endpoints]
        if len(set(names)) != len(names):
            raise ConfigError(f"webhook endpoint names must differ, got {names}")
        self.endpoints = endpoints
        self.retention_s = seconds_option(retention_s, "retention_s", low=1.0)
        self.backoff_base_s = seconds_option(backoff_base_s, "backoff_base_s", low=0.001)
        self.backoff_cap_s = seconds_option(backoff_cap_s, "backoff_cap_s", low=self.backoff_base_s)
        self.poll_interval_s = seconds_option(poll_interval_s, "poll_interval_s", low=0.01)
        if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
            raise ConfigError(f"concurrency={concurrency!r} is not valid: expected an int >= 1")
        self.concurrency = concurrency
        self.send = bool(send)
        if self.send:
            try:
                import httpx  # noqa: F401
            except ImportError as exc:
                raise ConfigError(
                    f"webhooks need httpx to send: pip install 'paota[webhooks]' ({exc})"
                ) from None
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._store: Coordination | None = None
        self._worker: Any = None
        self._clock: Any = None
        self._sender = WebhookSender(
            endpoints,
            owner=self.owner,
            retention_s=self.retention_s,
            backoff_base_s=self.backoff_base_s,
            backoff_cap_s=self.backoff_cap_s,
            poll_interval_s=self.poll_interval_s,
            concurrency=self.concurrency,
        )

    @property
    def sent(self) -> int:
        """Events this worker delivered (2xx)."""
        return self._sender.sent

    @property
    def failures(self) -> int:
        """Requests of this worker that failed (each is retried)."""
        return self._sender.failures

    # --- lifecycle -------------------------------------------------------------------------------

    async def startup(self, services: WorkerServices) -> None:
        """Use the pool's store as the outbox; start the sender."""
        store = services.store
        if not has_coordination(store):
            logger.error(
                "worker pool %s: webhooks are off: the store %s has no Coordination capability to "
                "keep events in (use the memory or MongoDB store)",
                services.name,
                type(store).__name__ if store is not None else "(none)",
            )
            return
        self._store, self._worker, self._clock = store, services, services.clock
        self._sender.store, self._sender.clock = store, services.clock
        if self.send:
            self._sender.start(f"{services.name}-webhooks")

    async def shutdown(self, services: WorkerServices) -> None:
        """Stop the sender (events in flight stay in the outbox, and are sent again later)."""
        await self._sender.stop()
        self._store = None

    # --- the outbox ------------------------------------------------------------------------------

    async def after_outcome(self, task: TaskContext, outcome: Outcome) -> None:
        """Write the outcome's event for each endpoint that wants it (one store write each)."""
        store = self._store
        if store is None:
            return
        if isinstance(outcome, Duplicate):
            await self._after_duplicate(store, task)
            return
        described = _describe(outcome)
        if described is None:
            return
        type_, parked, extra, status = described
        wanting = [e for e in self.endpoints if e.wants(type_, parked is not None)]
        if not wanting:
            return
        replays = task.info.replays
        result = outcome.result if isinstance(outcome, Succeeded) else None
        error = getattr(outcome, "error", None)
        if isinstance(outcome, Cancelled):
            error_doc: dict[str, str] | None = {"type": "Cancelled", "message": outcome.reason}
        else:
            error_doc = None if error is None else {"type": error.type, "message": error.message}
        await self._write(
            store,
            wanting,
            task_id=task.id,
            type_=type_,
            replays=replays,
            attempt=task.attempt,
            task_doc={
                "id": task.id,
                "name": task.name,
                "queue": task.queue,
                "status": status,
                "attempt": task.attempt,
                "replays": replays,
                "worker": task.worker,
                "error": error_doc,
            },
            result=result,
            parked=parked,
            retry=extra,
        )

    async def _after_duplicate(self, store: Coordination, task: TaskContext) -> None:
        """A redelivered copy of a finished run: write its final event unless it was written
        (pending, or sent) already: the first copy's worker may have died in between."""
        records = getattr(self._worker, "store", None)
        if records is None or not task.id:
            return
        state = await records.get(task.id)
        replays = task.info.replays
        if state is None or not state.status.is_final or state.replays != replays:
            return
        type_ = _STATUS_TYPES[state.status]
        parked = None
        if state.status in (TaskStatus.FAILED, TaskStatus.TIMED_OUT):
            queue = ParkQueue.FAILED if state.status is TaskStatus.FAILED else ParkQueue.TIMEOUT
            parked = {"queue": queue.value, "reason": None}
        key = event_id(task.id, replays, state.attempts, type_)
        wanting = []
        for endpoint in self.endpoints:
            if not endpoint.wants(type_, parked is not None):
                continue
            if await store.get_doc(f"{EVENT_KIND}:{endpoint.name}", key) is not None:
                continue
            if await store.get_doc(f"{SENT_KIND}:{endpoint.name}", key) is not None:
                continue
            wanting.append(endpoint)
        if not wanting:
            return
        error = state.error
        await self._write(
            store,
            wanting,
            task_id=task.id,
            type_=type_,
            replays=replays,
            attempt=state.attempts,
            task_doc={
                "id": task.id,
                "name": state.name,
                "queue": state.queue,
                "status": state.status.value,
                "attempt": state.attempts,
                "replays": replays,
                "worker": state.worker,
                "error": None if error is None else {"type": error.type, "message": error.message},
            },
            result=state.result,
            parked=parked,
            retry=None,
        )

    async def _write(
        self,
        store: Coordination,
        endpoints: Sequence[WebhookEndpoint],
        *,
        task_id: str,
        type_: str,
        replays: int,
        attempt: int,
        task_doc: dict[str, Any],
        result: Any,
        parked: dict[str, Any] | None,
        retry: dict[str, Any] | None,
    ) -> None:
        now = self._clock.now()
        key = event_id(task_id or uuid.uuid4().hex, replays, attempt, type_)
        for endpoint in endpoints:
            body: dict[str, Any] = {
                "id": key,
                "type": f"task.{type_}",
                "created_at": now.isoformat(),
                "task": dict(task_doc),
                "parked": parked,
                "retry": retry,
            }
            if endpoint.include_result and type_ == "succeeded":
                body["task"]["result"] = result
            text = json.dumps(body, separators=(",", ":"), sort_keys=True, default=str)
            doc = {
                "event": key,
                "type": body["type"],
                "task_id": task_id,
                "body": text,
                "created_at": now.isoformat(),
                "next_at": now.isoformat(),
                "attempts": 0,
                "last_error": "",
            }
            await store.put_doc(
                f"{EVENT_KIND}:{endpoint.name}", key, doc, ttl_s=self.retention_s * 2
            )
        self._sender.wake.set()

    # --- the sender ------------------------------------------------------------------------------

    async def send_due(self) -> int:
        """Send every event that is due now (what the sender does each round); returns how many
        were delivered."""
        return await self._sender.send_due()


_STATUS_TYPES = {
    TaskStatus.SUCCEEDED: "succeeded",
    TaskStatus.FAILED: "failed",
    TaskStatus.TIMED_OUT: "timed_out",
    TaskStatus.CANCELLED: "cancelled",
}


def _describe(
    outcome: Outcome,
) -> tuple[str, dict[str, Any] | None, dict[str, Any] | None, str] | None:
    """(type, parked, retry, status) of an outcome that makes an event, else None."""
    if isinstance(outcome, Succeeded):
        return "succeeded", None, None, TaskStatus.SUCCEEDED.value
    if isinstance(outcome, Retry):
        return (
            "retrying",
            None,
            {"attempt": outcome.attempt, "delay_s": outcome.delay_s},
            TaskStatus.RETRYING.value,
        )
    if isinstance(outcome, Park):
        parked = {"queue": outcome.queue.value, "reason": outcome.reason.value}
        return _STATUS_TYPES.get(outcome.status, "failed"), parked, None, outcome.status.value
    if isinstance(outcome, Cancelled):
        return "cancelled", None, None, TaskStatus.CANCELLED.value
    return None
