"""What moves a workflow on: its plan in the store, and the middleware that advances it.

A workflow (:mod:`paota.workflows`) is a tree of chains, groups and task steps. When it is sent,
its *plan* (the tree, each step's message with the previous result left out) is written to the
store as the document ``("paota.workflow", workflow_id)``, and its first steps are published.
Every step's message carries ``x-paota-workflow-id``, ``x-paota-parent-id`` and
``x-paota-workflow-step`` (the step's path in the tree) as text headers; a Go worker ignores them.

:class:`WorkflowMiddleware` runs on every worker whose store has the
:class:`~paota.core.protocols.Coordination` capability. Its ``after_outcome`` hook (the outcome is
durable, the message not yet acked) looks at the step's *stored* final state:

- SUCCEEDED: the step's node is complete. In a chain, the next node starts with the result; at the
  end of a chain, the chain is complete. In a group, the member's index is added to the group's
  set in the store (``add_member``, atomic and idempotent); the add that completes the set reads
  the members' results from the store, in order, and completes the group with that list. Complete
  nodes go up the tree the same way.
- FAILED, TIMED_OUT, CANCELLED (or dropped): the first failure of the workflow takes a claim;
  every step that would have followed the failed one (the rest of its chain, and whatever comes
  after each group it is in, up to the root) is recorded CANCELLED with the reason, and the claim's
  holder publishes the error callback.
- not final (a retry, a deferral): nothing; a later delivery finishes the step.

Every step's id is ``{workflow_id}.{path}``, so publishing a step twice publishes the same task,
which the store skips as a duplicate once it has run. A redelivered step (the worker died before
the ack, or the store failed in the hook) finds its state final and does the same work again: the
set add is idempotent, a set found complete completes the group again, and a step already
published (a ``paota.wf.sent`` marker, written after the publish is confirmed) is not published
again. A crash between a publish and its marker can publish a step twice; a copy that arrives
after the first run finished is skipped (at-least-once, deduplicated by id).
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, cast

from paota.core.middleware import Middleware
from paota.core.outcome import (
    Cancelled,
    Defer,
    Drop,
    Outcome,
    Park,
    Retry,
    Return,
    Succeeded,
    error_info,
)
from paota.core.protocols import (
    PARENT_HEADER,
    WORKFLOW_HEADER,
    Coordination,
    Store,
    has_coordination,
    header_text,
)
from paota.core.state import ErrorInfo, TaskStatus, task_state
from paota.middleware.workflow_plan import Plan, PlanNode

if TYPE_CHECKING:
    from paota.core.client import BaseClient as Client
    from paota.core.context import TaskContext
    from paota.core.pool import BaseWorkerPool as WorkerPool

__all__ = [
    "ERROR_PATH",
    "LEASE_S",
    "PLAN_KIND",
    "STEP_HEADER",
    "Engine",
    "Plan",
    "PlanNode",
    "WorkflowMiddleware",
    "failed_key",
    "uses_workflows",
]

logger = logging.getLogger("paota.workflows")

STEP_HEADER = "x-paota-workflow-step"
"""The path of a step in its workflow's plan (``"0"``, ``"1.2"``; ``"error"`` for the error
callback)."""
PLAN_KIND = "paota.workflow"
"""The kind of the store documents that hold workflow plans (keyed by workflow id)."""
ERROR_PATH = "error"
"""The path (and id suffix) of a workflow's error callback."""

_SENT = "paota.wf.sent"
_LEASE = "paota.wf.publishing"
_GROUP = "paota.wf.group"
_FAILED = "paota.wf.failed"
_PLAN_CACHE = 256
LEASE_S = 60.0
"""How long a worker publishing a step holds it (longer than a publish may take); another
delivery of the same step waits for it, and takes over when the lease has expired."""
_FANOUT = 64  # publishes or writes in flight at once when a group starts or steps are cancelled


def failed_key(workflow_id: str) -> str:
    """The claim that names the first step of ``workflow_id`` that failed."""
    return f"{_FAILED}:{workflow_id}"


def uses_workflows(pool: WorkerPool) -> bool:
    """Whether ``pool`` can advance workflows: its store has the Coordination capability."""
    return has_coordination(pool.store)


# --- the engine ----------------------------------------------------------------------------------

_NOTHING: Any = object()


async def _bounded(jobs: Iterable[Awaitable[Any]]) -> list[Any]:
    """Await ``jobs``, at most :data:`_FANOUT` at once, in order; the first error is raised."""
    gate = asyncio.Semaphore(_FANOUT)

    async def one(job: Awaitable[Any]) -> Any:
        async with gate:
            return await job

    return list(await asyncio.gather(*(one(job) for job in jobs)))


class _Lock:
    __slots__ = ("lock", "users")

    def __init__(self) -> None:
        self.lock = asyncio.Lock()
        self.users = 0


class Engine:
    """Starts, advances and stops workflows for one client or pool (see the module docs)."""

    def __init__(self, client: Client) -> None:
        store = client.require_store()
        if not has_coordination(store):
            from paota.core.errors import ConfigError

            raise ConfigError(
                f"workflows need a store with the Coordination capability (memory or mongodb); "
                f"{type(store).__name__} has none"
            )
        self._client = client
        self._store: Store = store
        self._coord: Coordination = cast(Coordination, store)
        self._plans: dict[str, Plan] = {}
        self._locks: dict[str, _Lock] = {}

    @property
    def worker(self) -> str:
        """The name written into the records this engine makes."""
        return self._client.name

    # --- plans ---------------------------------------------------------------------------------

    async def save(self, plan: Plan) -> None:
        """Write ``plan`` to the store (before any of its steps is published)."""
        await self._coord.put_doc(PLAN_KIND, plan.id, plan.to_doc(), ttl_s=plan.ttl_s)
        self._remember(plan)

    async def plan(self, workflow_id: str) -> Plan | None:
        """The plan of ``workflow_id`` (kept in memory once read: plans never change)."""
        plan = self._plans.get(workflow_id)
        if plan is None:
            doc = await self._coord.get_doc(PLAN_KIND, workflow_id)
            if doc is None:
                return None
            plan = Plan.from_doc(doc)
            self._remember(plan)
        return plan

    def _remember(self, plan: Plan) -> None:
        if len(self._plans) >= _PLAN_CACHE:
            self._plans.pop(next(iter(self._plans)))
        self._plans[plan.id] = plan

    # --- starting nodes ------------------------------------------------------------------------

    async def start(
        self, plan: Plan, node: PlanNode, previous: Any = _NOTHING, *, mark: bool = True
    ) -> None:
        """Start ``node`` with the previous result (if there is one): publish its first steps.

        ``mark=False`` (the producer's first steps, which nothing else publishes) skips the
        published markers.
        """
        if node.kind == "task":
            await self.publish(plan, node, previous, mark=mark)
        elif node.kind == "chain":
            await self.start(plan, node.children[0], previous, mark=mark)
        else:
            await _bounded(self.start(plan, child, previous, mark=mark) for child in node.children)

    async def publish(
        self, plan: Plan, node: PlanNode, previous: Any = _NOTHING, *, mark: bool = True
    ) -> None:
        """Publish task step ``node`` (once: a step already published is not published again)."""
        if not mark:
            await self._publish(plan, node, previous, mark=False)
            return
        # Two copies of one step advancing at once in this process publish the next step once.
        entry = self._locks.get(node.id)
        if entry is None:
            entry = self._locks[node.id] = _Lock()
        entry.users += 1
        try:
            async with entry.lock:
                await self._publish_once(plan, node, previous)
        finally:
            entry.users -= 1
            if not entry.users:
                del self._locks[node.id]

    async def _publish_once(self, plan: Plan, node: PlanNode, previous: Any) -> None:
        # A lease picks one publisher among deliveries advancing at once (a redelivered copy of
        # a step beside the original, on another worker); the others wait for its marker. A
        # lease left by a worker that died while publishing expires, and the next one publishes.
        coord = self._coord
        sent, lease = f"{_SENT}:{node.id}", f"{_LEASE}:{node.id}"
        me = f"{self.worker}:{uuid.uuid4().hex}"
        while True:
            if await coord.claim(lease, me, ttl_s=LEASE_S):
                if await coord.get_claim(sent) is None:
                    await self._publish(plan, node, previous, mark=True)
                return
            wait_s = 0.01
            while await coord.get_claim(sent) is None:
                if await coord.get_claim(lease) is None:
                    break  # its publisher is gone: take over
                await asyncio.sleep(wait_s)
                wait_s = min(wait_s * 2, 1.0)
            else:
                return  # published by the lease's holder

    async def _publish(self, plan: Plan, node: PlanNode, previous: Any, *, mark: bool) -> None:
        try:
            sig = node.signature(previous, has_previous=previous is not _NOTHING)
        except (TypeError, ValueError) as exc:
            # The previous result cannot travel as this step's argument: the step fails here.
            error = error_info(exc)
            logger.error(
                "workflow %s: step %s (%s) cannot be sent: %s",
                plan.id,
                node.id,
                node.name,
                exc,
                extra={"task_id": node.id, "task_name": node.name},
            )
            await self._record(plan, node, TaskStatus.FAILED, error)
            await self.failed(plan, node, TaskStatus.FAILED.value, error)
            return
        headers = {
            **node.headers,
            WORKFLOW_HEADER: plan.id,
            PARENT_HEADER: node.parent,
            STEP_HEADER: node.path,
        }
        await self._client.send_task(sig, queue=node.queue, delay_s=node.delay_s, headers=headers)
        if mark:
            await self._coord.claim(f"{_SENT}:{node.id}", self.worker, ttl_s=plan.ttl_s)

    # --- advancing -----------------------------------------------------------------------------

    async def completed(self, plan: Plan, node: PlanNode, result: Any) -> None:
        """``node`` finished with ``result``: start what follows it, up the tree."""
        parent = plan.parent(node)
        while parent is not None:
            if parent.kind == "chain":
                if node.index + 1 < len(parent.children):
                    await self.start(plan, parent.children[node.index + 1], result)
                    return
            else:
                size, _ = await self._coord.add_member(
                    f"{_GROUP}:{parent.id}", str(node.index), ttl_s=plan.ttl_s
                )
                if size < len(parent.children):
                    return
                # This add completed the set (or a redelivery found it complete): every member's
                # result is in the store.
                result = await _bounded(self.result_of(plan, child) for child in parent.children)
            node, parent = parent, plan.parent(parent)

    async def result_of(self, plan: Plan, node: PlanNode) -> Any:
        """The result of a complete node, from the store: a step's result, a chain's last
        result, a group's list of results."""
        if node.kind == "chain":
            return await self.result_of(plan, node.children[-1])
        if node.kind == "group":
            return await _bounded(self.result_of(plan, child) for child in node.children)
        state = await self._store.get(node.id)
        if state is None or state.status is not TaskStatus.SUCCEEDED:
            logger.warning(
                "workflow %s: step %s (%s) has no result in the store (%s); its place in the "
                "group's results is None",
                plan.id,
                node.id,
                node.name,
                "no record" if state is None else state.status.value,
                extra={"task_id": node.id, "task_name": node.name},
            )
            return None
        return state.result

    async def failed(self, plan: Plan, node: PlanNode, status: str, error: ErrorInfo) -> None:
        """Step ``node`` ended ``status``: cancel what would have followed it; the workflow's
        first failure publishes the error callback."""
        key = failed_key(plan.id)
        first = await self._coord.claim(key, node.id, ttl_s=plan.ttl_s)
        owner = node.id if first else await self._coord.get_claim(key)
        reason = (
            f"workflow {plan.id} stopped: step {node.id} ({node.name}) ended {status}: "
            f"{error.type}: {error.message[:500]}"
        )
        cancelled = ErrorInfo("Cancelled", reason)
        later = plan.downstream(node)
        await _bounded(self._record(plan, leaf, TaskStatus.CANCELLED, cancelled) for leaf in later)
        if first:
            logger.warning(
                "workflow %s stopped: step %s (%s) ended %s (%s: %s); %d later step(s) cancelled",
                plan.id,
                node.id,
                node.name,
                status,
                error.type,
                error.message,
                len(later),
                extra={"task_id": node.id, "task_name": node.name},
            )
        if owner == node.id and plan.on_error is not None:
            failure = {
                "workflow_id": plan.id,
                "task_id": node.id,
                "task_name": node.name,
                "status": status,
                "error_type": error.type,
                "error_message": error.message,
                "traceback": error.traceback,
            }
            await self.publish(plan, plan.on_error, failure)

    async def _record(
        self, plan: Plan, node: PlanNode, status: TaskStatus, error: ErrorInfo
    ) -> None:
        """A final record for a step that will not run (never replacing a final one)."""
        now = self._client.clock.now()
        args = [{"Name": a.name, "Type": a.type, "Value": a.value} for a in node.template().args]
        await self._store.record(
            task_state(
                node.id,
                node.name,
                status,
                args=args,
                attempts=0,
                replays=0,
                worker=self.worker,
                created_at=now,
                updated_at=now,
                error=error,
                finished_at=now,
                queue=node.queue,
                parent_id=node.parent,
                workflow_id=plan.id,
            )
        )

    async def final(self, task_id: str, outcome: Outcome) -> tuple[TaskStatus | str, Any, Any]:
        """``(status, result, error)`` of a step's run: the store's final state when it has one
        (two copies of a step that raced agree on it), else the outcome's; status "" when the
        step is not final."""
        state = await self._store.get(task_id)
        if state is not None and state.status.is_final:
            return state.status, state.result, state.error or ErrorInfo("Unknown", "no error")
        if isinstance(outcome, Succeeded):
            return TaskStatus.SUCCEEDED, outcome.result, None
        if isinstance(outcome, Park):
            return outcome.status, None, outcome.error
        if isinstance(outcome, Cancelled):
            return TaskStatus.CANCELLED, None, ErrorInfo("Cancelled", outcome.reason)
        if isinstance(outcome, Drop):
            return "DROPPED", None, ErrorInfo("Dropped", outcome.reason)
        return "", None, None


# --- the middleware ------------------------------------------------------------------------------


class WorkflowMiddleware(Middleware):
    """Advances the workflows whose steps this pool runs (see the module docs).

    Installed by every pool whose store has the Coordination capability; for a task that is not a
    workflow step it costs one header lookup.
    """

    def __init__(self, pool: WorkerPool) -> None:
        self._pool = pool
        self._engine: Engine | None = None

    async def after_outcome(self, task: TaskContext, outcome: Outcome) -> None:
        """Move the workflow on after a step's final outcome (before its ack)."""
        headers = task.headers
        if not headers or WORKFLOW_HEADER not in headers:
            return
        if isinstance(outcome, Retry | Defer | Return):
            return  # not final: a later delivery of the step moves the workflow on
        await self._advance(task, outcome, headers)

    async def _advance(
        self, task: TaskContext, outcome: Outcome, headers: Mapping[str, Any]
    ) -> None:
        engine = self._engine
        if engine is None:
            engine = self._engine = Engine(self._pool)
        workflow_id = header_text(headers[WORKFLOW_HEADER])
        path = header_text(headers.get(STEP_HEADER))
        if path == ERROR_PATH:
            return  # the error callback ends the workflow, however it ends itself
        plan = await engine.plan(workflow_id)
        node = None if plan is None else plan.node(path)
        if plan is None or node is None or node.kind != "task":
            logger.error(
                "task %s: step %r of workflow %s is not in the store (its plan expired, or "
                "was written to another database): the workflow cannot go on",
                task.id,
                path,
                workflow_id,
                extra=task.log_extra,
            )
            return
        status, result, error = await engine.final(task.id, outcome)
        if not status:
            return
        if status is TaskStatus.SUCCEEDED:
            await engine.completed(plan, node, result)
        else:
            await engine.failed(plan, node, str(getattr(status, "value", status)), error)
