"""Wrong uses: each line marked with an error comment must be rejected by both checkers."""

from __future__ import annotations

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
