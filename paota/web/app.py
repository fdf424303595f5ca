"""The ASGI app: the management API under ``/api/`` and the dashboard at ``/``.

:func:`create_app` builds a Starlette app around a :class:`~paota.Client` (a
:class:`~paota.WorkerPool` is one): serve it with ``paota web`` or any ASGI server, or mount it
into your own app (``Mount("/paota", app=create_app(pool, token=...))``; the dashboard finds the
API relative to where it is served).

Authentication is on by default: every ``/api/`` request but ``/api/openapi.json`` must carry
``Authorization: Bearer <token>``; one without it gets 401 before anything is read or changed.
``create_app(client, token=None)`` takes the token from ``PAOTA_WEB_TOKEN`` and refuses to build
an app without one unless ``open=True``: an open app answers clients on the loopback interface
only (127.0.0.0/8, ::1), and 403 to anyone else.

Errors are JSON, ``{"error": {"status", "message", "field"?, "allowed"?}}``: 400 for a bad value
(the field is named), 404 for what does not exist, 409 for an action the task's state does not
allow, 501 for what the backends cannot do, 503 when the broker or the store does not answer.
A bug is a 500 with a one-line message (the traceback goes to the log, never to the client).

The token and loopback checks and the security headers are in :mod:`paota.web.security`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

from paota.core.extras import missing_extra

try:
    from starlette.applications import Starlette
    from starlette.exceptions import HTTPException
    from starlette.requests import Request
    from starlette.responses import FileResponse, Response, StreamingResponse
    from starlette.routing import Mount, Route
    from starlette.staticfiles import StaticFiles
except ModuleNotFoundError as exc:
    raise missing_extra(exc, "the management API and dashboard (paota.web, paota web)") from None

from paota.client import Client
from paota.core.errors import BrokerError, ConfigError, StoreError
from paota.web import ops, ops_tasks
from paota.web.monitor import Monitor
from paota.web.openapi import openapi_document
from paota.web.params import (
    MAX_PAGE,
    WebError,
    check_fields,
    decode_cursor,
    json_body,
    opt_str,
    park_queue,
    query_int,
    query_status,
    query_str,
    query_time,
)
from paota.web.security import (
    JSON,
    MIN_TOKEN_LENGTH,
    TOKEN_ENV,
    Guard,
    SecurityHeaders,
    error_response,
    is_loopback,
    resolve_token,
)
from paota.web.views import dumps, task_detail, task_summary

__all__ = ["MIN_TOKEN_LENGTH", "TOKEN_ENV", "create_app", "is_loopback"]

logger = logging.getLogger("paota.web")

STATIC = Path(__file__).resolve().parent / "static"

_LIST_PARAMS = frozenset(
    {"status", "name", "queue", "created_after", "created_before", "cursor", "limit"}
)


def create_app(
    client: Client,
    *,
    token: str | None = None,
    open: bool = False,
    poll_interval_s: float = 0.5,
    monitor_interval_s: float = 5.0,
) -> Starlette:
    """The management API and dashboard for ``client``'s broker and store (see the module docs).

    ``token`` is the bearer token (default: ``PAOTA_WEB_TOKEN``; at least 16 characters);
    ``open=True`` runs without one, for loopback clients only. ``poll_interval_s`` is how often a
    live view reads the store for changes; ``monitor_interval_s`` how often the charts sample the
    queues and the workers' counters (:mod:`paota.web.monitor`; while the app runs under an ASGI
    server's lifespan). The app connects the client on its first request and never closes it:
    the client is the caller's. Raises :class:`~paota.ConfigError` without a token (and not open).
    """
    if isinstance(poll_interval_s, bool) or not isinstance(poll_interval_s, int | float):
        raise ConfigError(f"poll_interval_s={poll_interval_s!r} is not a number of seconds")
    if not 0.05 <= poll_interval_s <= 60:
        raise ConfigError(f"poll_interval_s={poll_interval_s!r} is not within 0.05..60 seconds")
    if isinstance(monitor_interval_s, bool) or not isinstance(monitor_interval_s, int | float):
        raise ConfigError(f"monitor_interval_s={monitor_interval_s!r} is not a number of seconds")
    if not 0.1 <= monitor_interval_s <= 600:
        raise ConfigError(
            f"monitor_interval_s={monitor_interval_s!r} is not within 0.1..600 seconds"
        )
    digest = resolve_token(token, open)
    monitor = Monitor(client, interval_s=float(monitor_interval_s))
    api = _Api(client, float(poll_interval_s), monitor)
    routes = [
        Route("/", _index, methods=["GET"]),
        Route("/api/openapi.json", api.openapi, methods=["GET"]),
        Route("/api/info", api.info, methods=["GET"]),
        _route("/api/tasks", GET=api.tasks, POST=api.send),
        Route("/api/stream/tasks", api.tasks_stream, methods=["GET"]),
        Route("/api/stream/tasks/{task_id:str}", api.task_stream, methods=["GET"]),
        _route("/api/tasks/{task_id:str}", GET=api.task, DELETE=api.delete),
        Route("/api/tasks/{task_id:str}/retry", api.retry, methods=["POST"]),
        Route("/api/tasks/{task_id:str}/cancel", api.cancel, methods=["POST"]),
        Route("/api/parked/{queue:str}", api.parked, methods=["GET"]),
        Route("/api/parked/{queue:str}/requeue", api.requeue, methods=["POST"]),
        Route("/api/queues", api.queues, methods=["GET"]),
        Route("/api/workers", api.workers, methods=["GET"]),
        Route("/api/monitor", api.monitor, methods=["GET"]),
        Route("/api/schedules", api.schedules, methods=["GET"]),
        Route("/api/schedules/{schedule_id:path}/pause", api.pause, methods=["POST"]),
        Route("/api/schedules/{schedule_id:path}/resume", api.resume, methods=["POST"]),
        Mount("/static", app=StaticFiles(directory=STATIC), name="static"),
    ]

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await monitor.start()
        try:
            yield
        finally:
            await monitor.stop()

    app = Starlette(
        routes=routes,
        lifespan=lifespan,
        exception_handlers={
            WebError: _web_error,
            HTTPException: _http_error,
            StoreError: _backend_error,
            BrokerError: _backend_error,
            Exception: _server_error,
        },
    )
    app.add_middleware(Guard, token_digest=digest)
    app.add_middleware(SecurityHeaders)
    app.state.paota_client = client
    app.state.paota_monitor = monitor
    return app


def _route(path: str, **handlers: Callable[[Request], Awaitable[Response]]) -> Route:
    """One route for several methods (one Route per path, so a 405 lists every method)."""

    async def dispatch(request: Request) -> Response:
        method = "GET" if request.method == "HEAD" else request.method
        return await handlers[method](request)

    return Route(path, dispatch, methods=list(handlers))


async def _index(request: Request) -> Response:
    return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})


async def _web_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, WebError)
    return error_response(exc)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    message = {404: "no such path", 405: "method not allowed here"}.get(
        exc.status_code, str(exc.detail)
    )
    path = request.url.path
    response = error_response(
        WebError(exc.status_code, f"{request.method} {path[:200]}: {message}")
    )
    response.headers.update(exc.headers or {})  # Allow, for a 405
    return response


async def _backend_error(request: Request, exc: Exception) -> Response:
    what = "store" if isinstance(exc, StoreError) else "broker"
    logger.warning("%s %s: the %s did not answer: %s", request.method, request.url.path, what, exc)
    return error_response(WebError(503, f"the {what} did not answer: {exc}"))


async def _server_error(request: Request, exc: Exception) -> Response:
    logger.error("%s %s failed", request.method, request.url.path, exc_info=(type(exc), exc, None))
    logger.debug("traceback", exc_info=exc)
    return error_response(
        WebError(500, f"internal error ({type(exc).__name__}); see the server's log")
    )


class _Api:
    """The endpoints (see :mod:`paota.web.openapi` for what each takes and answers)."""

    def __init__(self, client: Client, poll_interval_s: float, monitor: Monitor) -> None:
        self.client = client
        self.poll_interval_s = poll_interval_s
        self._monitor = monitor

    async def openapi(self, request: Request) -> Response:
        return JSON(openapi_document())

    async def info(self, request: Request) -> Response:
        check_fields(request.query_params, (), "query parameter")
        from paota._version import __version__

        client = self.client
        await client.connect()
        broker = client.broker
        return JSON(
            {
                "version": __version__,
                "client": client.name,
                "broker": type(broker).__name__,
                "store": type(client.store).__name__ if client.store is not None else None,
                "default_queue": broker.default_queue,
                "tasks": sorted(client.task_names),
                "poll_interval_s": self.poll_interval_s,
            }
        )

    # --- tasks -----------------------------------------------------------------------------------

    def _list_args(self, request: Request) -> dict[str, Any]:
        query = request.query_params
        check_fields(query, _LIST_PARAMS, "query parameter")
        cursor_text = query_str(query, "cursor")
        return {
            "status": query_status(query),
            "name": query_str(query, "name"),
            "queue": query_str(query, "queue"),
            "created_after": query_time(query, "created_after"),
            "created_before": query_time(query, "created_before"),
            "cursor": None if cursor_text is None else decode_cursor(cursor_text),
            "limit": query_int(query, "limit", default=50, lo=1, hi=MAX_PAGE),
        }

    async def tasks(self, request: Request) -> Response:
        return JSON(await ops_tasks.list_tasks(self.client, **self._list_args(request)))

    async def task(self, request: Request) -> Response:
        check_fields(request.query_params, (), "query parameter")
        return JSON(await ops_tasks.get_task(self.client, request.path_params["task_id"]))

    async def send(self, request: Request) -> Response:
        check_fields(request.query_params, (), "query parameter")
        body = await json_body(request, ops_tasks.SEND_FIELDS)
        return JSON(await ops_tasks.send_task(self.client, body), status_code=201)

    async def retry(self, request: Request) -> Response:
        check_fields(request.query_params, (), "query parameter")
        await json_body(request, ())
        return JSON(await ops_tasks.retry_task(self.client, request.path_params["task_id"]), 202)

    async def cancel(self, request: Request) -> Response:
        check_fields(request.query_params, (), "query parameter")
        body = await json_body(request, {"reason"})
        reason = opt_str(body, "reason")
        task_id = request.path_params["task_id"]
        return JSON(await ops_tasks.cancel_task(self.client, task_id, reason))

    async def delete(self, request: Request) -> Response:
        check_fields(request.query_params, (), "query parameter")
        await ops_tasks.delete_task(self.client, request.path_params["task_id"])
        return Response(status_code=204)

    # --- live views (server-sent events) ---------------------------------------------------------

    async def tasks_stream(self, request: Request) -> Response:
        args = self._list_args(request)
        args.pop("cursor")  # a live view is of the first page
        store = await ops_tasks.connected(self.client)

        async def read() -> Any:
            states = await store.list(**args)
            return {"items": [task_summary(s) for s in states]}

        return self._stream(request, "tasks", read)

    async def task_stream(self, request: Request) -> Response:
        check_fields(request.query_params, (), "query parameter")
        task_id = request.path_params["task_id"]
        store = await ops_tasks.connected(self.client)
        if await store.get(task_id) is None:
            raise WebError(404, f"task_id: no task {task_id[:200]!r} in the store", field="task_id")

        async def read() -> Any:
            state = await store.get(task_id)
            return None if state is None else task_detail(state)

        return self._stream(request, "task", read)

    def _stream(self, request: Request, event: str, read: Callable[[], Awaitable[Any]]) -> Response:
        """Server-sent events: ``event`` with what ``read()`` gives, each time it changed (read
        every ``poll_interval_s``), and a comment every 10 s to keep proxies from closing it."""
        interval_s = self.poll_interval_s

        async def events() -> AsyncIterator[bytes]:
            last = b""
            quiet_s = 0.0
            yield b"retry: 2000\n\n"
            while True:
                try:
                    data = dumps(await read())
                except (StoreError, BrokerError) as exc:
                    data = dumps({"error": {"status": 503, "message": str(exc)}})
                if data != last:
                    last, quiet_s = data, 0.0
                    yield b"event: " + event.encode() + b"\ndata: " + data + b"\n\n"
                elif quiet_s >= 10.0:
                    quiet_s = 0.0
                    yield b": keep-alive\n\n"
                if await request.is_disconnected():
                    return
                await asyncio.sleep(interval_s)
                quiet_s += interval_s

        return StreamingResponse(
            events(),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    # --- parking, queues, workers, schedules -----------------------------------------------------

    async def parked(self, request: Request) -> Response:
        query = request.query_params
        check_fields(query, {"reason", "limit"}, "query parameter")
        queue = park_queue(request.path_params["queue"])
        reason = query_str(query, "reason")
        limit = query_int(query, "limit", default=100, lo=1, hi=MAX_PAGE)
        return JSON(await ops.browse_parked(self.client, queue, reason=reason, limit=limit))

    async def requeue(self, request: Request) -> Response:
        check_fields(request.query_params, (), "query parameter")
        queue = park_queue(request.path_params["queue"])
        body = await json_body(request, ops.REQUEUE_FIELDS)
        return JSON(await ops.requeue_parked(self.client, queue, body))

    async def queues(self, request: Request) -> Response:
        check_fields(request.query_params, (), "query parameter")
        return JSON(await ops.list_queues(self.client))

    async def workers(self, request: Request) -> Response:
        check_fields(request.query_params, (), "query parameter")
        return JSON(await ops.list_workers(self.client))

    async def monitor(self, request: Request) -> Response:
        check_fields(request.query_params, (), "query parameter")
        return JSON(self._monitor.to_json())

    async def schedules(self, request: Request) -> Response:
        query = request.query_params
        check_fields(query, {"count"}, "query parameter")
        count = query_int(query, "count", default=3, lo=1, hi=50)
        return JSON(await ops.list_schedules(self.client, count=count))

    async def pause(self, request: Request) -> Response:
        return await self._pause(request, True)

    async def resume(self, request: Request) -> Response:
        return await self._pause(request, False)

    async def _pause(self, request: Request, paused: bool) -> Response:
        check_fields(request.query_params, (), "query parameter")
        await json_body(request, ())
        schedule_id = request.path_params["schedule_id"]
        return JSON(await ops.set_schedule_paused(self.client, schedule_id, paused))
