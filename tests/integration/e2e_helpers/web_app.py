"""The pool the worker process (and ``paota web --target``) of the web and webhook integration
tests load: configured by the ``PAOTA_*`` variables the test sets.

``Flaky`` fails while the file ``$WEB_MARKER`` does not exist and, once it does, holds for
``$WEB_HOLD_S`` seconds (so a page can see it running) and succeeds. With ``$WEBHOOK_URL`` set,
the pool sends succeeded and failed events there, signed with ``$WEBHOOK_SECRET``.
"""

from __future__ import annotations

import asyncio
import os

from paota import Config, Middleware, WorkerPool

middleware: list[Middleware] = []
if os.environ.get("WEBHOOK_URL"):
    from paota.middleware.webhooks import WebhookEndpoint, WebhookMiddleware

    middleware.append(
        WebhookMiddleware(
            [
                WebhookEndpoint(
                    os.environ["WEBHOOK_URL"],
                    os.environ["WEBHOOK_SECRET"],
                    events={"succeeded", "failed"},
                    name="sink",
                    timeout_s=2.0,
                )
            ],
            backoff_base_s=float(os.environ.get("WEBHOOK_BACKOFF_S", "0.2")),
            backoff_cap_s=2.0,
            poll_interval_s=0.2,
        )
    )

pool = WorkerPool(
    Config.from_env(),
    concurrency=4,
    name=os.environ.get("WEB_APP_NAME", "web-worker"),
    middleware=middleware,
)


@pool.task(name="Add")
async def add(a: int, b: int) -> int:
    return a + b


@pool.task(name="Flaky", retry_count=0)
async def flaky(n: int) -> int:
    if not os.path.exists(os.environ["WEB_MARKER"]):  # noqa: ASYNC240 - a stat, for a test
        raise RuntimeError("the marker file is missing")
    await asyncio.sleep(float(os.environ.get("WEB_HOLD_S", "1.0")))
    return n + 1


@pool.periodic(every=3600, id="hourly-report")
async def report() -> None:
    return None
