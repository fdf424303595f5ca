"""How tests wait: on a condition, or in virtual time; never a real-time sleep that "should be
enough" (``tests/README.md`` has the rule and its exceptions).

- :func:`until` polls a condition until it holds, with a deadline that only a hang reaches: a
  loaded machine makes it slower, never wrong.
- :func:`virtual_time` runs an async test on an event loop whose clock jumps to the next timer
  whenever nothing is ready, so ``asyncio.sleep``, ``asyncio.timeout`` and ``loop.call_at`` take
  no real time and happen in exactly the order their deadlines say, whatever the machine's load.
"""

from __future__ import annotations

import asyncio
import functools
import selectors
from collections.abc import Awaitable, Callable, Coroutine
from typing import IO, Any, ParamSpec, TypeVar

P = ParamSpec("P")
T = TypeVar("T")

#: How often :func:`until` looks again. A look is cheap; this only bounds the busy-waiting.
POLL_S = 0.001


async def until(
    condition: Callable[[], Any] | Callable[[], Awaitable[Any]],
    timeout_s: float = 10.0,
    what: str = "the condition",
) -> Any:
    """Wait until ``condition()`` (a plain or an async callable) returns something true; return it.

    ``timeout_s`` is a hang detector, not a speed assumption: pick it long enough for a loaded
    2-core machine (the default, 10 s, is hundreds of times what a quiet machine needs).
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while True:
        value = condition()
        if asyncio.iscoroutine(value) or isinstance(value, asyncio.Future):
            value = await value
        if value:
            return value
        if loop.time() > deadline:
            raise AssertionError(f"{what} did not hold within {timeout_s} s")
        await asyncio.sleep(POLL_S)


def read_until(stream: IO[str], marker: str, what: str) -> str:
    """Read lines of a child process's ``stream`` until one holds ``marker``; return all read.
    Fails with ``what`` when the stream ends first (a hung child fails at the test timeout)."""
    seen = ""
    while marker not in seen:
        line = stream.readline()
        assert line, f"{what}: {seen}"
        seen += line
    return seen


class _JumpingSelector(selectors.BaseSelector):
    """A selector that, when nothing is ready and a timer is due later, moves the loop's virtual
    clock to that timer instead of waiting."""

    def __init__(self, inner: selectors.BaseSelector, loop: VirtualTimeLoop) -> None:
        self._inner = inner
        self._loop = loop

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        ready = self._inner.select(0)
        if ready or timeout == 0:
            return ready
        if timeout is None:  # no timer at all: only I/O (or another thread) can wake the loop
            return self._inner.select(None)
        self._loop.now += timeout
        return []

    def register(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:
        return self._inner.register(fileobj, events, data)

    def unregister(self, fileobj: Any) -> selectors.SelectorKey:
        return self._inner.unregister(fileobj)

    def modify(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:
        return self._inner.modify(fileobj, events, data)

    def close(self) -> None:
        self._inner.close()

    def get_key(self, fileobj: Any) -> selectors.SelectorKey:
        return self._inner.get_key(fileobj)

    def get_map(self) -> Any:
        return self._inner.get_map()


class VirtualTimeLoop(asyncio.SelectorEventLoop):
    """An event loop whose ``time()`` is virtual: it starts at 0 and moves only when every ready
    callback has run and the next thing to happen is a timer."""

    def __init__(self) -> None:
        super().__init__()
        self.now = 0.0
        self._selector = _JumpingSelector(self._selector, self)  # type: ignore[has-type]

    def time(self) -> float:
        return self.now


def virtual_time(
    test: Callable[P, Coroutine[Any, Any, T]],
) -> Callable[P, T]:
    """Run the async test ``test`` to the end on a fresh :class:`VirtualTimeLoop`."""

    @functools.wraps(test)
    def run(*args: P.args, **kwargs: P.kwargs) -> T:
        with asyncio.Runner(loop_factory=VirtualTimeLoop) as runner:
            return runner.run(test(*args, **kwargs))

    return run
