"""Task registration and lookup. A registry belongs to one pool; there is no global registry."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from paota.core.errors import RegistrationError
from paota.core.signature import Signature

__all__ = ["RegisteredTask", "TaskFunc", "TaskRegistry"]

TaskFunc = Callable[[Signature], Any]
"""A task: ``fn(sig)``, sync or async. Raising means failure; the return value is the result."""


@dataclass(frozen=True)
class RegisteredTask:
    """A registered task function and whether calling it gives a coroutine."""

    name: str
    func: TaskFunc
    is_async: bool


def _is_async(func: Callable[..., Any]) -> bool:
    while isinstance(func, functools.partial):
        func = func.func
    if inspect.iscoroutinefunction(func):
        return True
    call = getattr(func, "__call__", None)  # noqa: B004 - callable objects with async __call__
    return call is not None and inspect.iscoroutinefunction(call)


class TaskRegistry:
    """Maps task names to functions for one pool."""

    def __init__(self) -> None:
        self._tasks: dict[str, RegisteredTask] = {}

    def register(self, name: str, func: TaskFunc) -> RegisteredTask:
        """Register ``func`` under ``name``.

        Raises :class:`RegistrationError` when the name is empty, ``func`` is not callable, or the
        name is already taken by a different function (registering the same function twice is fine).
        """
        if not isinstance(name, str) or not name:
            raise RegistrationError(f"task name must be a non-empty string, got {name!r}")
        if not callable(func):
            raise RegistrationError(
                f"task {name!r}: expected a callable fn(sig), got {type(func).__name__} {func!r}"
            )
        existing = self._tasks.get(name)
        if existing is not None:
            if existing.func is func or existing.func == func:
                return existing
            raise RegistrationError(
                f"task {name!r} is already registered to {_describe(existing.func)}; "
                f"refusing to replace it with {_describe(func)}"
            )
        task = RegisteredTask(name, func, _is_async(func))
        self._tasks[name] = task
        return task

    def register_many(self, tasks: Mapping[str, TaskFunc]) -> None:
        """Register every ``name: func`` pair; nothing is registered if one of them is invalid."""
        if not isinstance(tasks, Mapping):
            raise RegistrationError(
                f"register_tasks expects a mapping of name to function, got {type(tasks).__name__}"
            )
        staged = TaskRegistry()
        staged._tasks = dict(self._tasks)
        for name, func in tasks.items():
            staged.register(name, func)
        self._tasks = staged._tasks

    def get(self, name: str) -> RegisteredTask | None:
        """The task registered under ``name``, or None."""
        return self._tasks.get(name)

    def __contains__(self, name: object) -> bool:
        return name in self._tasks

    def __iter__(self) -> Iterator[str]:
        return iter(self._tasks)

    def __len__(self) -> int:
        return len(self._tasks)


def _describe(func: Callable[..., Any]) -> str:
    module = getattr(func, "__module__", None) or "?"
    qualname = getattr(func, "__qualname__", None) or repr(func)
    return f"{module}.{qualname}"
