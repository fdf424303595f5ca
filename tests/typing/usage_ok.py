"""Correct uses of the typed API: mypy --strict and pyright accept every line."""

from __future__ import annotations

import paota
from paota import AsyncTask, Config, SyncTask, TaskHandle, WorkerPool, WorkflowHandle

pool = WorkerPool(Config(), concurrency=4)


@pool.task
async def add(a: int, b: int) -> int:
    return a + b


@pool.task(name="Greet", queue="emails", retry_count=3)
def greet(who: str, punctuation: str = "!") -> str:
    return f"hello {who}{punctuation}"


async def main() -> None:
    handle: TaskHandle[int] = await add.send(2, 3)
    total: int = await handle.result(timeout=5)
    later = await add.with_options(queue="math", delay_s=5, priority=3).send(a=1, b=2)
    also: int = await later.result()
    text: str = await (await greet.send("Ada")).result()
    direct: int = await add(1, 2)  # calling the task runs the function
    plain: str = greet("Bob", punctuation="?")
    typed_async: AsyncTask[[int, int], int] = add
    typed_sync: SyncTask[[str, str], str] = greet
    print(total, also, text, direct, plain, typed_async, typed_sync)


@pool.task
async def inc(x: int) -> int:
    return x + 1


@pool.task
async def total(xs: list[int]) -> int:
    return sum(xs)


async def workflows() -> None:
    # a step leaves out its first parameter for the previous result; the rest is checked
    chained: WorkflowHandle[int] = await paota.chain(
        inc.signature(1), inc.signature(), add.signature(b=2)
    ).send()
    last: int = await chained.result()
    grouped: WorkflowHandle[list[int]] = await paota.group(
        inc.signature(i) for i in range(3)
    ).send()
    results: list[int] = await grouped.result()
    chord = paota.chord([inc.signature(1), inc.signature(2)], total.signature())
    summed: int = await (await chord.send()).result()
    nested = paota.chain(inc.signature(1), paota.group(inc.signature(), add.signature(5)))
    lists: list[int] = await (await nested.send()).result()
    print(last, results, summed, lists)


async def batches() -> None:
    # a batch of one task's signatures keeps the result type; a task's send_many too
    sums: list[TaskHandle[int]] = await pool.send_many([add.signature(1, 2), inc.signature(3)])
    added: list[TaskHandle[int]] = await add.send_many([(1, 2), (3, 4)])
    greeted: list[TaskHandle[str]] = await greet.with_options(queue="x").send_many([("Ada",)])
    first: int = await sums[0].result()
    print(added, greeted, first)


@pool.task(max_concurrency=3, rate="10/s", limit_scope="global", retry_count=2)
async def limited(n: int) -> int:
    return n


async def limited_sends() -> int:
    return await (await limited.send(1)).result()
