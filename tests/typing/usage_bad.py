"""Wrong uses: each line marked with an error comment must be rejected by both checkers."""

from __future__ import annotations

import paota
from paota import Config, WorkerPool

pool = WorkerPool(Config(), concurrency=4)


@pool.task
async def add(a: int, b: int) -> int:
    return a + b


async def main() -> None:
    await add.send(1, "x")  # error: wrong argument type
    await add.send(1)  # error: missing argument
    handle = await add.send(1, 2)
    result: str = await handle.result()  # error: the result is an int
    await add.with_options(queue="q").send(1, b="2")  # error: wrong argument type
    print(result)


async def workflows() -> None:
    add.signature("x")  # error: wrong argument type for the first parameter
    add.signature(1, 2, 3)  # error: too many arguments
    add.signature(b="2")  # error: wrong argument type for the rest
    handle = await paota.chain(add.signature(1, 2), add.signature(b=1)).send()
    text: str = await handle.result()  # error: the chain's result is an int
    group = await paota.group(add.signature(1, i) for i in range(3)).send()
    one: int = await group.result()  # error: a group's result is a list
    print(text, one)


@pool.task(max_concurrency="3")  # error: max_concurrency is an int
async def limited() -> None: ...


@pool.task(limit_scope="cluster")  # error: limit_scope is "worker" or "global"
async def scoped() -> None: ...
