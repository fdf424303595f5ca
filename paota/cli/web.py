"""``paota web --port N``: serve the management API (``/api/``) and the dashboard (``/``)."""

from __future__ import annotations

import argparse
import logging
import os

from paota.cli._common import int_in, load_pool
from paota.client import Client
from paota.core.config import Config
from paota.core.errors import ConfigError

NAME = "web"
HELP = "serve the management API and the dashboard"
DESCRIPTION = (
    "Serve the management API under /api/ (OpenAPI at /api/openapi.json) and the dashboard at /, "
    "reading the broker and the store of the PAOTA_* configuration (PAOTA_STORE=mongodb to see "
    "the workers' tasks). Every API request needs 'Authorization: Bearer $PAOTA_WEB_TOKEN'; "
    "without PAOTA_WEB_TOKEN the server refuses to start unless --insecure-open is given, which "
    "is allowed on a loopback address only. Needs paota[web] (starlette, uvicorn)."
)

logger = logging.getLogger("paota.web")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The command's options."""
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (127.0.0.1)")
    parser.add_argument(
        "--port", type=int_in(0, 65535), default=8080, help="port (8080; 0 picks a free one)"
    )
    parser.add_argument(
        "--target",
        default=None,
        metavar="MODULE:POOL",
        help="a pool to take task defaults and code schedules from (it is not started)",
    )
    parser.add_argument(
        "--insecure-open",
        action="store_true",
        help="run without a token (only with a loopback --host, e.g. 127.0.0.1)",
    )
    parser.add_argument(
        "--poll-interval",
        type=float,
        default=0.5,
        help="how often live views read the store, in seconds (0.5)",
    )
    parser.add_argument(
        "--monitor-interval",
        type=float,
        default=5.0,
        help="how often the charts sample the queues and the workers' counters, in seconds (5)",
    )


async def run(args: argparse.Namespace) -> int:
    from paota.core.extras import require

    uvicorn = require("uvicorn", "paota web")
    from paota.web.app import TOKEN_ENV, create_app, is_loopback

    token = os.environ.get(TOKEN_ENV, "")
    if args.insecure_open:
        if not is_loopback(args.host):
            raise ConfigError(
                f"--insecure-open serves the API without a token and is allowed on a loopback "
                f"address only (127.0.0.1, ::1, localhost), not --host {args.host}; set "
                f"{TOKEN_ENV} instead"
            )
        if token:
            raise ConfigError(f"--insecure-open and {TOKEN_ENV} both given: choose one")
    client: Client = (
        load_pool(args.target) if args.target else Client(Config.from_env(), name="paota-web")
    )
    _warn_about_memory_backends(client.config)
    app = create_app(
        client,
        token=None if args.insecure_open else token,
        open=args.insecure_open,
        poll_interval_s=args.poll_interval,
        monitor_interval_s=args.monitor_interval,
    )
    config = uvicorn.Config(
        app,
        host=args.host,
        port=args.port,
        log_level=logging.getLevelName(logging.getLogger().getEffectiveLevel()).lower(),
        access_log=False,
        # Open live views (server-sent events) never end by themselves: do not wait long.
        timeout_graceful_shutdown=2,
    )
    server = uvicorn.Server(config)
    try:
        await client.connect()
        await server.serve()
    finally:
        await client.close()
    return 0


def _warn_about_memory_backends(config: Config) -> None:
    """A web process on the in-process memory broker or store sees nothing of the workers: its
    queues and records are its own. Said once, at start, with the fix."""
    for what, value, fix in (
        ("broker", config.broker, "PAOTA_BROKER=amqp and PAOTA_AMQP_URL"),
        ("store", config.store, "PAOTA_STORE=mongodb and PAOTA_MONGO_URI"),
    ):
        if value == "memory":
            logger.warning(
                "paota web: the %s is the in-process memory %s, which no worker of another "
                "process shares: the dashboard shows only what this process does; set %s as "
                "the workers have them",
                what,
                what,
                fix,
            )
