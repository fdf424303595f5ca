"""Task registration and lookup, and routing (task -> queue). A registry belongs to one client or
pool; there is no global registry."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from paota.core.errors import RegistrationError
from paota.core.message import Signature
from paota.core.tasks import Task

__all__ = ["TaskFunc", "TaskRegistry"]

TaskFunc = Callable[[Signature], Any]
"""A Go-style task: ``fn(sig)``, sync or async. Raising means failure; the return value is the
result."""


class TaskRegistry:
    """Maps task names to :class:`~paota.core.tasks.Task` objects."""

    def __init__(self) -> None:
        self._tasks: dict[str, Task[Any, Any]] = {}

    def add(self, task: Task[Any, Any]) -> Task[Any, Any]:
        """Register ``task`` under its name and return the registered one.

        Raises :class:`RegistrationError` when the name is empty or already taken by a different
        function (registering the same function twice under one name returns the first task).
        """
        name = task.name
        if not isinstance(name, str) or not name:
            raise RegistrationError(f"task name must be a non-empty string, got {name!r}")
        existing = self._tasks.get(name)
        if existing is not None:
            if existing.fn is task.fn or existing.fn == task.fn:
                return existing
            raise RegistrationError(
                f"task {name!r} is already registered to {describe(existing.fn)}; "
                f"refusing to replace it with {describe(task.fn)}"
            )
        self._tasks[name] = task
        return task

    def add_all(self, tasks: list[Task[Any, Any]]) -> None:
        """Register every task; nothing is registered if one of them cannot be."""
        staged = TaskRegistry()
        staged._tasks = dict(self._tasks)
        for task in tasks:
            staged.add(task)
        self._tasks = staged._tasks

    def get(self, name: str) -> Task[Any, Any] | None:
        """The task registered under ``name``, or None."""
        return self._tasks.get(name)

    def queues(self) -> set[str]:
        """The queues the registered tasks name as their default (not the pool's default)."""
        return {t.defaults.queue for t in self._tasks.values() if t.defaults.queue}

    def __contains__(self, name: object) -> bool:
        return name in self._tasks

    def __iter__(self) -> Iterator[str]:
        return iter(self._tasks)

    def __len__(self) -> int:
        return len(self._tasks)


def describe(func: Callable[..., Any]) -> str:
    """``module.qualname`` of a function, for messages."""
    module = getattr(func, "__module__", None) or "?"
    qualname = getattr(func, "__qualname__", None) or repr(func)
    return f"{module}.{qualname}"
