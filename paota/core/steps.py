"""A call of a task, bound and not yet sent: :class:`TaskSignature`, made by
``task.signature(...)``; the value a workflow (:mod:`paota.workflows`) is made of.

It lives in the kernel because binding a call is the task's business; what a workflow does with
its steps (plans, barriers) is the feature's.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Generic, TypeVar

from paota.core.errors import ArgumentError
from paota.core.message import Signature

if TYPE_CHECKING:
    from collections.abc import Mapping

    from paota.core.tasks import Task, TaskHandle, TaskOptions

__all__ = ["Node", "TaskSignature"]

R = TypeVar("R")
R_co = TypeVar("R_co", covariant=True)


class Node(Generic[R_co]):
    """A piece of a workflow whose result is ``R_co``: a :class:`TaskSignature`, a :class:`Chain`
    or a :class:`Group`."""

    __slots__ = ()


class TaskSignature(Node[R]):
    """A typed task call, complete or leaving the first parameter for the previous result.

    Made by ``task.signature(...)`` (or ``task.with_options(...).signature(...)``, which keeps the
    options): arguments are bound when it is made, so missing, extra or wrong arguments raise
    TypeError (or :class:`~paota.ArgumentError`) there. ``takes_previous`` tells whether the
    first parameter was left out.
    """

    __slots__ = ("args", "go_args", "hole_type", "kwargs", "options", "takes_previous", "task")

    def __init__(
        self,
        task: Task[Any, R],
        args: tuple[Any, ...],
        kwargs: Mapping[str, Any],
        options: TaskOptions,
    ) -> None:
        binder = task._binder
        if binder is None:
            raise TypeError(
                f"task {task.name!r} takes a Signature (Go style): put a "
                f"paota.Signature({task.name!r}, args=[...]) in the workflow instead"
            )
        self.task = task
        self.args = args
        self.kwargs = dict(kwargs)
        self.options = options
        self.hole_type: str | None = None
        try:
            self.go_args = binder.to_args(args, self.kwargs)
            self.takes_previous = False
        except ArgumentError:
            raise
        except TypeError as exc:
            try:
                self.go_args, self.hole_type = binder.to_args_with_hole(args, self.kwargs)
            except ArgumentError:
                raise
            except TypeError as partial:
                why = str(partial).removeprefix(f"task {task.name!r}: ")
                raise TypeError(
                    f"{exc} (nor does it fit as a workflow step whose first parameter takes the "
                    f"previous step's result: {why})"
                ) from None
            self.takes_previous = True

    @property
    def name(self) -> str:
        """The task's name."""
        return self.task.name

    def __repr__(self) -> str:
        call = [repr(a) for a in self.args] + [f"{k}={v!r}" for k, v in self.kwargs.items()]
        if self.takes_previous:
            call.insert(0, "<previous>")
        return f"<TaskSignature {self.name}({', '.join(call)})>"

    def to_signature(self) -> Signature:
        """The Go :class:`~paota.Signature` that :meth:`send` publishes (without an id)."""
        self._require_complete("to_signature()")
        return self.task.wire_signature(self.args, self.kwargs, self.options)

    async def send(self) -> TaskHandle[R]:
        """Send this call as a task on its own (not a workflow); it must be complete."""
        self._require_complete("send()")
        return await self.task._send(self.args, self.kwargs, self.options)

    def _require_complete(self, what: str) -> None:
        if self.takes_previous:
            first = self.go_args[0].name
            raise TypeError(
                f"{self!r} leaves its first parameter {first!r} for the previous step's result: "
                f"it can only run in a workflow (paota.chain); for {what}, give {first!r} too"
            )
