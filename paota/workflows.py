"""Workflows: chains, groups and chords of typed tasks, moved on by a durable barrier in the store.

``inc.signature(1)`` is a step (:class:`TaskSignature`): a task and its arguments. A step may leave
its task's first parameter out (``inc.signature()``, ``add.signature(b=2)``): it then receives the
result of the step before it. Steps compose:

- :func:`chain` ``(a, b, c)`` runs them one after another; each step that leaves its first
  parameter out receives the previous step's result; the chain's result is the last one's.
- :func:`group` ``(a, b, c)`` (or ``group(iterable)``) runs them side by side; its result is the
  list of their results, in the group's order. In a chain, a group's members that leave their
  first parameter out each receive the previous result, and the next step receives the list.
- :func:`chord` ``(header, callback)`` is ``chain(group(header), callback)``: the callback
  receives the list of the group's results.

Chains and groups nest freely (a group in a chain, a chain as a chord's callback, chains in a
group, groups in a group). ``await workflow.send()`` writes the workflow's plan to the store,
publishes its first steps and returns a :class:`WorkflowHandle`, whose ``result()`` is the chain's
last result or the group's list of results.

Failure rules: a step that ends FAILED, TIMED_OUT or CANCELLED (after its retries) stops its
chain: every step that would have followed it, in its chain and after every group it belongs to,
is recorded CANCELLED with the reason and never runs; the other members of its groups run to their
end. The error callback (``.on_error(report.signature())``) is published once, for the first
failure; a callback that leaves its first parameter out receives a :class:`WorkflowFailure`.
``handle.result()`` raises the :class:`~paota.TaskFailedError` of the step that failed.

Workflows need a store with the Coordination capability (the memory or MongoDB store), the same
one for the producer and every worker. How the workers move a workflow on is described in
:mod:`paota.middleware.workflows`.
"""

from __future__ import annotations

import asyncio
import json
import math
import uuid
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any, Generic, TypedDict, TypeVar, overload

from paota.core.errors import ConfigError, ResultTimeoutError, TaskFailedError
from paota.core.message import Signature, encode_json
from paota.core.protocols import has_coordination
from paota.core.state import TaskState, TaskStatus
from paota.core.steps import Node, TaskSignature
from paota.core.tasks import Task, TaskSender
from paota.middleware.workflows import ERROR_PATH, Engine, Plan, PlanNode, failed_key

if TYPE_CHECKING:
    from paota.core.client import BaseClient as Client

__all__ = [
    "DEFAULT_TTL_S",
    "Chain",
    "Group",
    "Node",
    "TaskSignature",
    "WorkflowFailure",
    "WorkflowHandle",
    "chain",
    "chord",
    "group",
]

R = TypeVar("R")
R_co = TypeVar("R_co", covariant=True)

DEFAULT_TTL_S = 30 * 24 * 3600.0
"""How long a workflow's plan, barriers and markers are kept in the store (30 days), unless
``send(ttl_s=...)`` says otherwise. A workflow must finish within it."""


class WorkflowFailure(TypedDict):
    """What an error callback that leaves its first parameter out receives: the step that
    stopped the workflow, how it ended and why."""

    workflow_id: str
    task_id: str
    task_name: str
    status: str
    error_type: str
    error_message: str
    traceback: str


Step = Node[Any] | Signature
"""What a chain or group is made of: nodes, or Go :class:`~paota.Signature` objects (a task by
name, complete; its ``uuid`` and ``created_at`` are replaced by the workflow's)."""


# --- steps ---------------------------------------------------------------------------------------


def _step_template(step: TaskSignature[Any], client: Client) -> dict[str, Any]:
    options = step.options
    sig = Signature(
        step.name,
        args=step.go_args,
        priority=options.priority or 0,
        retry_count=options.retry_count or 0,
        task_timeout=options.task_timeout or 0,
        eta=options.eta,
    )
    return {
        "name": step.name,
        "message": encode_json(sig).decode(),
        "takes_previous": step.takes_previous,
        "hole_type": step.hole_type,
        "queue": options.queue or client.broker.default_queue,
        "delay_s": options.delay_s,
        "headers": _json_headers(options.headers, step.name),
    }


def _go_template(sig: Signature, client: Client) -> dict[str, Any]:
    if sig.raw_args is not None:
        raise TypeError(
            f"workflow step {sig.name!r}: a Signature with raw_args (Go's header mode) cannot be a "
            "workflow step; give its args as Args"
        )
    registered = client.registered_task(sig.name)
    queue = registered.defaults.queue if registered is not None else None
    return {
        "name": sig.name,
        "message": encode_json(sig.replace(uuid="", created_at=None)).decode(),
        "takes_previous": False,
        "hole_type": None,
        "queue": queue or client.broker.default_queue,
        "delay_s": None,
        "headers": {},
    }


def _json_headers(headers: Mapping[str, Any], name: str) -> dict[str, Any]:
    try:
        json.dumps(dict(headers))
    except (TypeError, ValueError) as exc:
        raise TypeError(
            f"workflow step {name!r}: its headers must be JSON values to be kept in the plan: {exc}"
        ) from None
    return dict(headers)


# --- chains and groups ---------------------------------------------------------------------------


def _check_step(step: Any, where: str) -> Step:
    if isinstance(step, Node | Signature):
        return step
    hint = " (call .signature(...) on it)" if isinstance(step, Task | TaskSender) else ""
    raise TypeError(
        f"{where} must be a step: task.signature(...), paota.chain, paota.group or a "
        f"paota.Signature; got {type(step).__name__} {step!r:.80}{hint}"
    )


class _Composite(Node[R]):
    __slots__ = ("_on_error", "steps")

    def __init__(
        self, steps: Iterable[Any], on_error: TaskSignature[Any] | Signature | None
    ) -> None:
        kind = type(self).__name__.lower()
        items = tuple(_check_step(s, f"{kind} step {i}") for i, s in enumerate(steps))
        if not items:
            raise ValueError(f"a {kind} needs at least one step")
        if on_error is not None and not isinstance(on_error, TaskSignature | Signature):
            raise TypeError(
                f"on_error must be task.signature(...) or a paota.Signature, got "
                f"{type(on_error).__name__} {on_error!r:.80}"
            )
        self.steps: tuple[Step, ...] = items
        self._on_error = on_error

    def __repr__(self) -> str:
        inner = ", ".join(repr(s) for s in self.steps)
        return f"<{type(self).__name__} [{inner}]>"

    async def send(self, *, client: Client | None = None, ttl_s: float = DEFAULT_TTL_S) -> Any:
        """Write the plan to the store and publish the first steps (see the subclasses)."""
        return await _send(self, client, ttl_s)


class Chain(_Composite[R]):
    """Steps run one after another (made by :func:`chain`); the result is the last step's."""

    __slots__ = ()

    def on_error(self, callback: TaskSignature[Any] | Signature) -> Chain[R]:
        """This chain with an error callback, published once when a step fails (see
        :class:`WorkflowFailure` for what it receives)."""
        return Chain(self.steps, callback)

    async def send(
        self, *, client: Client | None = None, ttl_s: float = DEFAULT_TTL_S
    ) -> WorkflowHandle[R]:
        """Write the workflow's plan to the store, publish its first step; returns the handle.

        ``client`` defaults to the first typed step's task's client; ``ttl_s`` is how long the
        store keeps the workflow's plan and barriers. Raises TypeError for a step that leaves its
        first parameter out with nothing before it, :class:`~paota.ConfigError` when the client
        has no store with the Coordination capability.
        """
        return await _send(self, client, ttl_s)


class Group(_Composite[list[R]], Generic[R]):
    """Steps run side by side (made by :func:`group`); the result is the list of their results."""

    __slots__ = ()

    def on_error(self, callback: TaskSignature[Any] | Signature) -> Group[R]:
        """This group with an error callback, published once when a member fails."""
        return Group(self.steps, callback)

    async def send(
        self, *, client: Client | None = None, ttl_s: float = DEFAULT_TTL_S
    ) -> WorkflowHandle[list[R]]:
        """Write the workflow's plan to the store, publish every member; returns the handle
        (see :meth:`Chain.send`)."""
        return await _send(self, client, ttl_s)


@overload
def chain(s1: Node[R], /) -> Chain[R]: ...
@overload
def chain(s1: Step, s2: Node[R], /) -> Chain[R]: ...
@overload
def chain(s1: Step, s2: Step, s3: Node[R], /) -> Chain[R]: ...
@overload
def chain(s1: Step, s2: Step, s3: Step, s4: Node[R], /) -> Chain[R]: ...
@overload
def chain(s1: Step, s2: Step, s3: Step, s4: Step, s5: Node[R], /) -> Chain[R]: ...
@overload
def chain(s1: Step, s2: Step, s3: Step, s4: Step, s5: Step, s6: Node[R], /) -> Chain[R]: ...
@overload
def chain(*steps: Step) -> Chain[Any]: ...
def chain(*steps: Step) -> Chain[Any]:
    """Steps that run one after another: ``paota.chain(inc.signature(1), inc.signature())``.

    A step that leaves its first parameter out receives the previous step's result (a group's:
    the list of its results); a complete step runs as given. The result is the last step's.
    """
    return Chain(steps, None)


@overload
def group(steps: Iterable[Node[R]], /) -> Group[R]: ...
@overload
def group(steps: Iterable[Step], /) -> Group[Any]: ...
@overload
def group(*steps: Node[R]) -> Group[R]: ...
@overload
def group(*steps: Step) -> Group[Any]: ...
def group(*steps: Any) -> Group[Any]:
    """Steps that run side by side: ``paota.group(inc.signature(i) for i in range(5))`` or
    ``paota.group(a, b, c)``; the result is the list of their results, in this order."""
    if len(steps) == 1 and not isinstance(steps[0], Node | Signature):
        try:
            items = list(steps[0])
        except TypeError:
            items = list(steps)
        return Group(items, None)
    return Group(steps, None)


def chord(header: Group[Any] | Iterable[Step], callback: Node[R]) -> Chain[R]:
    """A group and a callback that receives the list of its results (``chain(group(header),
    callback)``); the result is the callback's."""
    if not isinstance(header, Group):
        if isinstance(header, Node | Signature):
            raise TypeError(
                "chord(header, callback): header must be a paota.group or an iterable of steps, "
                f"got {header!r:.80}"
            )
        header = group(header)
    return Chain((header, callback), None)


# --- sending -------------------------------------------------------------------------------------


def _first_client(node: Step) -> Client | None:
    if isinstance(node, TaskSignature):
        return node.task.client
    if isinstance(node, _Composite):
        for step in node.steps:
            found = _first_client(step)
            if found is not None:
                return found
    return None


def _plan_node(
    step: Step, workflow_id: str, path: str, parent: str, index: int, client: Client, fed: bool
) -> PlanNode:
    """``step`` as a plan node; ``fed``: whether something comes before it (a previous result)."""
    node_id = f"{workflow_id}.{path}" if path else workflow_id
    if isinstance(step, _Composite):
        if step._on_error is not None and path:
            raise TypeError(
                f"on_error belongs to the outermost workflow: the {type(step).__name__.lower()} "
                f"at step {path} has one"
            )
        children = []
        for i, child in enumerate(step.steps):
            child_fed = fed or (isinstance(step, Chain) and i > 0)
            child_path = f"{path}.{i}" if path else str(i)
            children.append(
                _plan_node(child, workflow_id, child_path, node_id, i, client, child_fed)
            )
        kind = "chain" if isinstance(step, Chain) else "group"
        return PlanNode(kind, node_id, path, parent, index, tuple(children))
    if isinstance(step, TaskSignature):
        fields = _step_template(step, client)
    elif isinstance(step, Signature):
        fields = _go_template(step, client)
    else:  # pragma: no cover - _check_step lets nothing else in
        raise TypeError(f"not a workflow step: {step!r}")
    if fields["takes_previous"] and not fed:
        raise TypeError(
            f"workflow step {path} ({step!r}) leaves its first parameter for the previous step's "
            "result, but no step comes before it: give it its arguments"
        )
    return PlanNode("task", node_id, path, parent, index, **fields)


def build_plan(workflow: Chain[Any] | Group[Any], client: Client, ttl_s: float) -> Plan:
    """The plan of ``workflow`` under a new workflow id (raises for a step misplaced)."""
    workflow_id = f"wf_{uuid.uuid4()}"
    root = _plan_node(workflow, workflow_id, "", "", 0, client, False)
    on_error = None
    callback = workflow._on_error
    if callback is not None:
        fields = (
            _step_template(callback, client)
            if isinstance(callback, TaskSignature)
            else _go_template(callback, client)
        )
        on_error = PlanNode(
            "task", f"{workflow_id}.{ERROR_PATH}", ERROR_PATH, workflow_id, 0, **fields
        )
    return Plan(workflow_id, root, on_error, ttl_s)


async def _send(
    workflow: _Composite[Any], client: Client | None, ttl_s: float
) -> WorkflowHandle[Any]:
    if isinstance(ttl_s, bool) or not isinstance(ttl_s, int | float):
        raise TypeError(f"ttl_s must be a number of seconds, not {type(ttl_s).__name__}")
    if not math.isfinite(ttl_s) or ttl_s <= 0:
        raise ValueError(f"ttl_s must be a finite number of seconds > 0, got {ttl_s!r}")
    if client is None:
        client = _first_client(workflow)
        if client is None:
            raise TypeError(
                "this workflow has no typed step to take a client from: send(client=...)"
            )
    assert isinstance(workflow, Chain | Group)
    plan = build_plan(workflow, client, float(ttl_s))
    engine = Engine(client)
    await client.connect()
    await engine.save(plan)
    await engine.start(plan, plan.root, mark=False)
    return WorkflowHandle(plan, client)


# --- handles -------------------------------------------------------------------------------------


class WorkflowHandle(Generic[R_co]):
    """A sent workflow: its ``id``, its steps' ids, and its result (from the store)."""

    def __init__(self, plan: Plan, client: Client) -> None:
        self.plan = plan
        self._client = client

    @property
    def id(self) -> str:
        """The workflow id (``wf_<uuid4>``); every step's id is ``{id}.{path}``."""
        return self.plan.id

    @property
    def task_ids(self) -> list[str]:
        """The ids of the workflow's steps, in order (without the error callback)."""
        return [leaf.id for leaf in self.plan.root.leaves()]

    @property
    def error_task_id(self) -> str | None:
        """The id the error callback runs under (None without one)."""
        return None if self.plan.on_error is None else self.plan.on_error.id

    def __repr__(self) -> str:
        return f"<WorkflowHandle {self.id} ({len(self.task_ids)} steps)>"

    @classmethod
    async def load(cls, client: Client, workflow_id: str) -> WorkflowHandle[Any]:
        """A handle on a workflow sent earlier (by any process sharing the store).

        Raises LookupError when the store has no plan of that id (never sent, or expired).
        """
        engine = Engine(client)
        await client.connect()
        plan = await engine.plan(workflow_id)
        if plan is None:
            raise LookupError(f"the store has no workflow {workflow_id!r} (unknown or expired)")
        return cls(plan, client)

    async def result(self, timeout: float | None = 30.0) -> R_co:
        """The chain's last result, or the group's list of results, in order.

        Raises :class:`~paota.TaskFailedError` for the step that stopped the workflow (or the
        first failed member of a group, in the group's order), :class:`~paota.ResultTimeoutError`
        when the result is not there within ``timeout`` seconds.
        """
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout

        async def of(node: PlanNode) -> Any:
            if node.kind == "chain":
                return await of(node.children[-1])
            if node.kind == "group":
                return [await of(child) for child in node.children]
            left = None if deadline is None else max(0.0, deadline - loop.time())
            try:
                return await self._client.result(node.id, timeout=left)
            except TaskFailedError as exc:
                raise await self._cause(exc) from None
            except ResultTimeoutError as exc:
                raise ResultTimeoutError(
                    f"workflow {self.id} has no result after {timeout}s: {exc}", exc.task_id
                ) from None

        result: R_co = await of(self.plan.root)
        return result

    async def _cause(self, exc: TaskFailedError) -> TaskFailedError:
        """For a step CANCELLED because another failed: that step's error."""
        if exc.status != TaskStatus.CANCELLED.value:
            return exc
        owner = await self.failed_task_id()
        if owner is None or owner == exc.task_id:
            return exc
        store = self._client.require_store()
        state = await store.get(owner)
        if state is None or not state.status.is_final or state.status is TaskStatus.SUCCEEDED:
            return exc
        error = state.error
        return TaskFailedError(
            owner,
            state.status.value,
            error.type if error else "Unknown",
            error.message if error else "no error recorded",
            error.traceback if error else "",
        )

    async def failed_task_id(self) -> str | None:
        """The id of the step whose failure stopped the workflow (None while none failed)."""
        store = self._client.require_store()
        if not has_coordination(store):  # pragma: no cover - checked when sent
            raise ConfigError("workflows need a store with the Coordination capability")
        return await store.get_claim(failed_key(self.id))

    async def states(self) -> dict[str, TaskState | None]:
        """Every step's record (None for a step not sent yet), by id, in order; the error
        callback's last when there is one."""
        store = self._client.require_store()
        ids = self.task_ids
        if self.error_task_id is not None:
            ids.append(self.error_task_id)
        return {task_id: await store.get(task_id) for task_id in ids}
