"""Carrying out an outcome: the one publish-record-ack sequence of the worker.

:meth:`Settler.settle` is the only place that acknowledges a delivery. For every
:data:`~paota.core.outcome.Outcome` it does, in this order:

1. publish what must be published, with confirms: the retry copy, the deferred or returned copy,
   the parked copy (each keeps every header the message carried);
2. record the state in the store (retrying through a store outage, the delivery unacked);
3. run the middleware's ``after_outcome`` hooks (last middleware first);
4. acknowledge the delivery.

A failure of step 1 or 2 (:class:`~paota.BrokerError`, :class:`~paota.StoreError`) leaves the
delivery unacked: the caller returns it to the broker, which redelivers it (at-least-once). Nothing
is acked before its outcome is durable.

A cancelled task (:meth:`paota.Client.cancel` records CANCELLED in the store first) is told apart
here, at no cost on the path of a task that runs and succeeds: before an outcome that would send
the message on or skip it (retry, deferral, return, parking, a duplicate: what a refused STARTED
record gives) and after a final record the store refused, the record is read; when it is CANCELLED
for this run, the delivery is settled as :class:`~paota.core.outcome.Cancelled` instead (ack,
nothing published). A run's Cancelled outcome fires its hooks once: the first worker to settle it
claims it in the store (when the store has the Coordination capability); a later copy of the
message is a Duplicate.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from datetime import timedelta
from typing import Any, TypeVar

from paota.core.bounds import bounded_text, fitting_headers
from paota.core.clock import Clock
from paota.core.context import TaskContext
from paota.core.errors import StoreError
from paota.core.message import Signature
from paota.core.message.outgoing import outgoing
from paota.core.middleware import MiddlewareChain
from paota.core.outcome import (
    Cancelled,
    Defer,
    Drop,
    Duplicate,
    Outcome,
    Park,
    Retry,
    Return,
    Succeeded,
)
from paota.core.protocols import (
    RETURNS_HEADER,
    Broker,
    Delivery,
    Message,
    OutgoingMessage,
    ParkInfo,
    Store,
    has_coordination,
)
from paota.core.reconcile import FINAL_RUN, MAY_BE_CANCELLED, Facts, reconcile
from paota.core.state import ErrorInfo, TaskState, TaskStatus, task_state

__all__ = [
    "CANCEL_CLAIM_TTL_S",
    "Settler",
    "parked_copy",
    "resend",
    "result_lifetimes",
    "wire_args",
]

logger = logging.getLogger("paota.core.pool")
#: One INFO line per succeeded task (the others are WARNING or ERROR on ``logger``).
task_logger = logging.getLogger("paota.tasks")

T = TypeVar("T")

#: How much of an error message a log line of the settle step shows (the store keeps it whole).
LOG_TEXT_LIMIT = 1000


def wire_args(sig: Signature) -> list[dict[str, Any]]:
    """The signature's args as the store records them (as on the wire)."""
    return [{"Name": a.name, "Type": a.type, "Value": a.value} for a in sig.args]


def resend(
    message: Message, queue: str, *, headers: Mapping[str, Any], delay_s: float = 0.0
) -> OutgoingMessage:
    """``message`` (a delivery, say), body and properties unchanged, for ``queue`` with
    ``headers``: what a deferral, a return or a parked copy publishes."""
    return OutgoingMessage(
        message.body,
        queue,
        headers=headers,
        content_type=message.content_type,
        message_id=message.message_id or "",
        priority=message.priority or 0,
        delay_s=delay_s,
    )


def parked_copy(delivery: Delivery, queue: str, info: ParkInfo) -> OutgoingMessage:
    """The copy of ``delivery`` for parking queue ``queue``: every header it had, plus ``info``'s
    (when they would not fit the broker's frame together, the largest of its own are left out and
    named in ``x-paota-headers-dropped``)."""
    return resend(delivery, queue, headers=fitting_headers(delivery.headers, info.headers()))


#: How long the claim "this run's cancellation was settled" is kept in the store, in seconds.
CANCEL_CLAIM_TTL_S = 7 * 24 * 3600.0


def result_lifetimes(registry: Any) -> Callable[[str], float | None] | None:
    """For a :class:`Settler`: the result lifetime of a task by name (``result_ttl_s`` of the
    registered task), or None when no registered task has one (records then never expire early)."""
    if not any(getattr(registry.get(name), "result_ttl_s", None) for name in registry):
        return None

    def lifetime(name: str) -> float | None:
        task = registry.get(name)
        return None if task is None else task.result_ttl_s

    return lifetime


class Settler:
    """Settles deliveries for one worker pool (see the module docs).

    ``result_ttl(name)`` gives a task's result lifetime in seconds (None: the store's): final
    records of that task get ``expires_at`` that long after they finished.
    """

    def __init__(
        self,
        *,
        broker: Broker,
        store: Store | None,
        clock: Clock,
        worker: str,
        middleware: MiddlewareChain,
        stopping: Callable[[], bool],
        result_ttl: Callable[[str], float | None] | None = None,
    ) -> None:

        self._broker = broker
        self._store = store
        self._clock = clock
        self._worker = worker
        self._middleware = middleware
        self._stopping = stopping
        self._result_ttl = result_ttl
        self._coordination = store if has_coordination(store) else None

    # --- the sequence ----------------------------------------------------------------------------

    async def settle(
        self,
        delivery: Delivery,
        sig: Signature | None,
        outcome: Outcome,
        ctx: TaskContext,
    ) -> None:
        """Publish, record, run the hooks, ack (see the module docs). The outcome changes only
        through :func:`~paota.core.reconcile.reconcile`, with the facts the store gives."""
        store = self._store
        recorded = False  # the store holds this outcome already (it was read from there)
        if type(outcome) in MAY_BE_CANCELLED and store is not None and sig is not None:
            reason = await self._cancelled_run(ctx, sig)
            if reason is not None:
                outcome, recorded = reconcile(outcome, Facts(cancelled=reason)), True
        copy = self._copy(delivery, sig, outcome)
        if copy is not None:
            await self._broker.publish(copy)
        if sig is not None and store is not None:
            state = None if recorded else self._state_after(sig, outcome, ctx)
            if state is not None:
                if self._result_ttl is not None and state.status.is_final:
                    state = self._expiring(state)
                try:
                    applied = await self.record(state)
                except StoreError as exc:
                    if not exc.permanent:
                        raise
                    rejected = reconcile(outcome, Facts(rejected=str(exc)))
                    await self._store_rejected(delivery, sig, outcome, rejected, ctx, exc)
                    outcome, applied = rejected, True
                if not applied and type(outcome) in FINAL_RUN:
                    # Refused: the run was cancelled while it ran (or a duplicate finished first).
                    reason = await self._cancelled_run(ctx, sig)
                    outcome = reconcile(outcome, Facts(cancelled=reason, refused=True))
            if type(outcome) is Cancelled:
                lost = not await self._first_to_settle(ctx, sig)
                outcome = reconcile(outcome, Facts(claim_lost=lost))
        _log(outcome, sig, delivery, ctx, self._clock)
        if self._middleware:
            await self._middleware.after_outcome(ctx, outcome)
        await delivery.ack()

    # --- step 1: what to publish -----------------------------------------------------------------

    def _copy(
        self, delivery: Delivery, sig: Signature | None, outcome: Outcome
    ) -> OutgoingMessage | None:
        if isinstance(outcome, Succeeded | Duplicate | Drop | Cancelled):
            return None
        if isinstance(outcome, Retry):
            assert sig is not None
            retry = sig.replace(
                retries_done=outcome.attempt,
                retry_timeout=int(outcome.delay_s),
                eta=self._clock.now() + timedelta(seconds=outcome.delay_s),
            )
            return outgoing(
                retry, delivery.queue, headers=delivery.headers, delay_s=outcome.delay_s
            )
        if isinstance(outcome, Defer):
            extra = outcome.headers
            headers = {**delivery.headers, **extra} if extra else delivery.headers
            return resend(delivery, delivery.queue, headers=headers, delay_s=outcome.delay_s)
        if isinstance(outcome, Return):
            headers = {**delivery.headers, RETURNS_HEADER: outcome.returns}
            return resend(delivery, delivery.queue, headers=headers, delay_s=outcome.delay_s)
        error = outcome.error
        info = ParkInfo(
            reason=outcome.reason,
            error_type=error.type,
            error_message=error.message,
            worker=self._worker,
            parked_at=self._clock.now(),
            traceback=error.traceback,
            origin_queue=delivery.queue,
        )
        return parked_copy(delivery, self._broker.parking_queue(outcome.queue), info)

    # --- a record the store refuses for good ------------------------------------------------------

    async def _store_rejected(
        self,
        delivery: Delivery,
        sig: Signature,
        outcome: Outcome,
        rejected: Outcome,
        ctx: TaskContext,
        exc: StoreError,
    ) -> None:
        """Carry out ``rejected``, what ``outcome`` became when the store refused its record for
        good (:func:`~paota.core.reconcile.reconcile`): nothing more for a retry, deferral or
        return (its copy is published); for a parking, a smaller record (its error cut); for
        another outcome, the ``store-rejected`` parked copy and a smaller FAILED record (no
        result, the error cut; then without the arguments), where the store takes it."""
        logger.error(
            "task %s (%s): the store refused its %s record for good: %s",
            sig.uuid,
            sig.name,
            type(outcome).__name__,
            exc,
            extra={"task_id": sig.uuid, "task_name": sig.name},
        )
        if not isinstance(rejected, Park):
            return
        if isinstance(outcome, Park):  # parked already: record its own error, cut
            cut = ErrorInfo(
                rejected.error.type,
                bounded_text(rejected.error.message, 2000),
                rejected.error.traceback[-4000:],
            )
            smaller = Park(rejected.queue, rejected.reason, cut, rejected.status)
        else:
            smaller = rejected
            copy = self._copy(delivery, sig, rejected)
            assert copy is not None
            await self._broker.publish(copy)
        small = self._state_after(sig, smaller, ctx)
        assert small is not None
        for state in (small, small.replace(args=[])):
            try:
                await self.record(state)
                break
            except StoreError as again:
                if not again.permanent:
                    raise

    # --- cancellations and lifetimes -------------------------------------------------------------

    async def _cancelled_run(self, ctx: TaskContext, sig: Signature) -> str | None:
        """The reason, when the store has this run (task and replays) as CANCELLED."""
        store = self._store
        assert store is not None
        state = await self._patiently(lambda: store.get(sig.uuid), "read", sig.uuid, sig.name)
        if state is None or state.status is not TaskStatus.CANCELLED:
            return None
        if state.replays != ctx.info.replays:
            return None  # an older run was cancelled, or this message is of an older run
        return state.error.message if state.error is not None else "cancelled"

    async def _first_to_settle(self, ctx: TaskContext, sig: Signature) -> bool:
        """Whether this worker is the first to settle the run's cancellation (its hooks fire)."""
        coordination = self._coordination
        if coordination is None:
            return True
        key = f"paota.cancel-settled:{sig.uuid}:{ctx.info.replays}"
        return await self._patiently(
            lambda: coordination.claim(key, self._worker, ttl_s=CANCEL_CLAIM_TTL_S),
            "claim",
            sig.uuid,
            sig.name,
        )

    def _expiring(self, state: TaskState) -> TaskState:
        """``state`` with ``expires_at`` when its task has a result lifetime."""
        assert self._result_ttl is not None
        ttl_s = self._result_ttl(state.name)
        if ttl_s is None:
            return state
        finished = state.finished_at or self._clock.now()
        return state.replace(expires_at=finished + timedelta(seconds=ttl_s))

    async def _patiently(
        self, call: Callable[[], Awaitable[T]], what: str, task_id: str, name: str
    ) -> T:
        """``await call()``, waiting out a store outage with backoff up to 5 s (the delivery stays
        unacked meanwhile); raises :class:`~paota.StoreError` once the pool is stopping."""
        delay_s = 0.1
        while True:
            try:
                return await call()
            except StoreError as exc:
                if exc.permanent or self._stopping():
                    raise
                logger.warning(
                    "task %s: store %s failed: %s; retrying in %.1fs",
                    task_id,
                    what,
                    exc,
                    delay_s,
                    extra={"task_id": task_id, "task_name": name},
                )
                await asyncio.sleep(delay_s)
                delay_s = min(delay_s * 2, 5.0)

    # --- step 2: what to record ------------------------------------------------------------------

    def _state_after(self, sig: Signature, outcome: Outcome, ctx: TaskContext) -> TaskState | None:
        if isinstance(outcome, Succeeded):
            return self.state(
                sig,
                TaskStatus.SUCCEEDED,
                ctx,
                result=outcome.result,
                started_at=ctx.started_at,
                finished_at=self._clock.now(),
            )
        if isinstance(outcome, Retry):
            return self.state(
                sig, TaskStatus.RETRYING, ctx, error=outcome.error, started_at=ctx.started_at
            )
        if isinstance(outcome, Park):
            return self.state(
                sig,
                outcome.status,
                ctx,
                error=outcome.error,
                started_at=ctx.started_at,
                finished_at=self._clock.now(),
            )
        if isinstance(outcome, Cancelled):
            return self.state(
                sig,
                TaskStatus.CANCELLED,
                ctx,
                error=ErrorInfo("Cancelled", outcome.reason),
                started_at=ctx.started_at,
                finished_at=self._clock.now(),
            )
        return None

    def state(
        self,
        sig: Signature,
        status: TaskStatus,
        ctx: TaskContext,
        *,
        result: Any = None,
        error: ErrorInfo | None = None,
        started_at: Any = None,
        finished_at: Any = None,
    ) -> TaskState:
        """The record of ``sig`` in ``status`` for the delivery of ``ctx``, written by this
        worker (with the workflow links the message's headers carry)."""
        info = ctx.info
        return task_state(
            sig.uuid,
            sig.name,
            status,
            args=wire_args(sig),
            attempts=sig.retries_done,
            replays=info.replays,
            worker=self._worker,
            created_at=sig.created_at,
            updated_at=self._clock.now(),
            result=result,
            error=error,
            started_at=started_at,
            finished_at=finished_at,
            queue=ctx.queue,
            parent_id=info.parent_id,
            workflow_id=info.workflow_id,
        )

    async def record(self, state: TaskState) -> bool:
        """Write a state, waiting out a store outage (the delivery stays unacked meanwhile).

        Returns whether the store applied it (False: its record is final or further along). Raises
        :class:`~paota.StoreError` once the pool is stopping.
        """
        store = self._store
        assert store is not None
        return await self._patiently(
            lambda: store.record(state),
            f"write ({state.status.value})",
            state.task_id,
            state.name,
        )


def _log(
    outcome: Outcome, sig: Signature | None, delivery: Delivery, ctx: TaskContext, clock: Clock
) -> None:
    """One line per outcome. Successes go to ``paota.tasks`` at INFO (``paota worker`` shows them,
    as Celery's worker does; a library user's default WARNING skips them at the cost of one
    level check; ``--log-level paota.tasks=WARNING`` turns them off for speed)."""
    if isinstance(outcome, Succeeded):
        if task_logger.isEnabledFor(logging.INFO):
            took = ""
            if ctx.started_at is not None:
                took = f" in {(clock.now() - ctx.started_at).total_seconds() * 1000:.1f} ms"
            task_logger.info(
                "task %s (%s) succeeded%s: %s",
                ctx.id,
                ctx.name,
                took,
                bounded_text(repr(outcome.result), 100),
                extra=ctx.log_extra,
            )
        return
    extra = ctx.log_extra
    if isinstance(outcome, Retry):
        assert sig is not None
        logger.warning(
            "task %s (%s) failed (%s: %s); retry %d of %d in %gs",
            ctx.id,
            ctx.name,
            outcome.error.type,
            bounded_text(outcome.error.message, LOG_TEXT_LIMIT),
            outcome.attempt,
            sig.retry_count,
            outcome.delay_s,
            extra=extra,
        )
    elif isinstance(outcome, Park):
        logger.error(
            "task %s (%s) parked in the %s queue (%s): %s: %s",
            ctx.id or "(undecodable)",
            ctx.name,
            outcome.queue.value,
            outcome.reason.value,
            outcome.error.type,
            bounded_text(outcome.error.message, LOG_TEXT_LIMIT),
            extra=extra,
        )
    elif isinstance(outcome, Return):
        logger.warning(
            "task %s: no task %r registered in pool %s; returned for another worker (%d)",
            ctx.id,
            ctx.name,
            ctx.worker,
            outcome.returns,
            extra=extra,
        )
    elif isinstance(outcome, Drop):
        logger.warning(
            "task %s: no task %r registered in pool %s; dropped (%s)",
            ctx.id,
            ctx.name,
            ctx.worker,
            outcome.reason,
            extra=extra,
        )
    elif isinstance(outcome, Duplicate):
        logger.info(
            "task %s (%s) attempt %d already finished or moved on; duplicate skipped",
            ctx.id,
            ctx.name,
            ctx.attempt,
            extra=extra,
        )
    elif isinstance(outcome, Cancelled):
        logger.info("task %s (%s) cancelled: %s", ctx.id, ctx.name, outcome.reason, extra=extra)
    elif isinstance(outcome, Defer) and logger.isEnabledFor(logging.DEBUG):
        logger.debug(
            "task %s (%s) deferred %.3fs (%s)",
            ctx.id,
            ctx.name,
            outcome.delay_s,
            outcome.reason,
            extra=extra,
        )
