"""Correct uses of the typed API: mypy --strict and pyright accept every line."""

from __future__ import annotations

from paota import AsyncTask, Config, SyncTask, TaskHandle, WorkerPool

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
