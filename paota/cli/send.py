"""``paota send NAME``: publish one task."""

from __future__ import annotations

import argparse
import inspect
import json
import logging
from datetime import timedelta
from typing import Any

from paota.cli._common import (
    INT32_MAX,
    UsageError,
    add_include,
    include_modules,
    int_in,
    load_pool,
    parse_arg,
    seconds,
)
from paota.client import Client
from paota.core.errors import ConfigError
from paota.core.message import Signature
from paota.core.replies import ReplyPath
from paota.core.tasks import Task
from paota.pool import WorkerPool

NAME = "send"
HELP = "publish one task"
DESCRIPTION = "Publish one task with the configured broker; prints its id."

logger = logging.getLogger("paota.cli")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The command's options."""
    parser.add_argument("name", help="task name")
    parser.add_argument(
        "--app",
        default=None,
        metavar="MODULE:POOL",
        help="the pool (or client) that registers the task: its defaults apply (retries, queue), "
        "the arguments are checked against the function before anything is sent, and "
        "--arg NAME=VALUE is parsed by the parameter's annotation",
    )
    add_include(parser)
    parser.add_argument(
        "--arg",
        action="append",
        default=[],
        metavar="[NAME:]TYPE=VALUE",
        help="an argument, e.g. int=5, who:string=Ada, tags:[]string='[\"a\"]' (repeatable)",
    )
    parser.add_argument(
        "--retry-count",
        type=int_in(0, INT32_MAX),
        default=None,
        help="retries on failure (default: the task's with --app, else 0)",
    )
    parser.add_argument(
        "--priority", type=int_in(0, 255), default=0, help="AMQP priority 0..255 (default 0)"
    )
    parser.add_argument(
        "--task-timeout",
        type=int_in(0, INT32_MAX),
        default=0,
        help="start deadline in seconds (0: none)",
    )
    parser.add_argument(
        "--delay", type=seconds, default=0.0, help="run no earlier than this many seconds from now"
    )
    parser.add_argument(
        "--queue", default=None, help="the queue to send to (default: the task queue)"
    )
    parser.add_argument(
        "--ignore-unregistered",
        action="store_true",
        help="drop the task if no worker knows it (Go IgnoreWhenTaskNotRegistered)",
    )
    parser.add_argument(
        "--wait",
        type=seconds,
        default=None,
        metavar="SECONDS",
        help="wait up to SECONDS for the result: from the store the worker writes, or without "
        "one sent back over RabbitMQ to this command",
    )


async def run(args: argparse.Namespace) -> int:
    pool: Client = load_pool(args.app) if args.app else WorkerPool(name="paota-send")
    include_modules(args.include)
    config = pool.config
    if config.broker == "memory":
        # the task would live in this process's memory and vanish when the command ends
        logger.error(
            "paota send: the broker is the in-memory one (PAOTA_BROKER unset or 'memory'), so the "
            "task would vanish when this command ends and no worker would run it; set "
            "PAOTA_BROKER=amqp and PAOTA_AMQP_URL=amqp://... to send to your workers' RabbitMQ"
        )
        return 2
    # --wait reads the result from the store the worker writes; without one (or with the
    # in-process memory store) the worker sends it back on the broker's reply path. Checked
    # before publishing: failing after it would invite a resend, and a duplicate.
    args.reply = args.wait is not None and config.store in ("", "memory")
    if args.reply and not isinstance(pool.broker, ReplyPath):
        logger.error(
            "paota send --wait: no store is configured (PAOTA_STORE) and the %s broker carries "
            "no replies; set PAOTA_STORE=mongodb and PAOTA_MONGO_URI (the worker's too), or send "
            "without --wait. Nothing was sent",
            config.broker,
        )
        return 2
    task = pool.registered_task(args.name) if args.app else None
    if args.app and task is None:
        raise ConfigError(
            f"{args.app} registers no task {args.name!r}; it registers: "
            + (", ".join(map(repr, pool.task_names)) or "none")
        )
    types = task.parameter_go_types() if task is not None else {}
    typed = task is not None and not task.go_style
    # The arguments are parsed and checked against the task before anything is sent: a mistake
    # never costs a connection, let alone a message.
    if typed:
        assert task is not None
        positional, named = _bind_typed(task, types, args)
        sender = _typed_sender(task, args)
    else:
        retry_count = args.retry_count
        if retry_count is None:
            retry_count = (task.defaults.retry_count or 0) if task is not None else 0
        sig = Signature(
            args.name,
            args=tuple(parse_arg(a) for a in args.arg),
            retry_count=retry_count,
            priority=args.priority,
            task_timeout=args.task_timeout,
            ignore_when_task_not_registered=args.ignore_unregistered,
        )
        queue = args.queue or (task.defaults.queue if task is not None else None)
    async with pool:
        if typed:
            handle = await sender.send(*positional, **named)
        else:
            if args.delay:
                sig = sig.replace(eta=pool.clock.now() + timedelta(seconds=args.delay))
            handle = await pool.send_task(sig, queue=queue, reply=args.reply)
        print(handle.id)
        if args.wait is not None:
            result = await handle.result(timeout=args.wait)
            print(json.dumps(result, default=repr))
    return 0


def _bind_typed(
    task: Task[Any, Any], types: dict[str, str | None], args: Any
) -> tuple[list[Any], dict[str, Any]]:
    """The --arg values for ``task`` as its function is called: NAME=VALUE parsed by the
    parameter's annotation, then checked against the signature. Raises :class:`UsageError`,
    naming the argument and what the parameter takes."""
    positional: list[Any] = []
    named: dict[str, Any] = {}
    for text in args.arg:
        spec, sep, raw = text.partition("=")
        if sep and ":" not in spec and spec.strip() in types:
            name = spec.strip()
            go_type = types[name]
            if go_type is None:
                named[name] = _loose(raw)
                continue
            try:
                named[name] = parse_arg(f"{name}:{go_type}={raw}").value
            except ConfigError:
                raise UsageError(
                    f"{task.name}: --arg {name}={raw!r} is not a valid {go_type} (the parameter "
                    f"{name} is annotated {_annotation(task, name)}); nothing was sent"
                ) from None
            continue
        arg = parse_arg(text)
        if arg.name:
            if arg.name not in types:
                raise UsageError(
                    f"{task.name}: --arg {text!r}: the task has no parameter {arg.name!r}; its "
                    f"parameters: {', '.join(types) or 'none'}; nothing was sent"
                )
            named[arg.name] = arg.value
        else:
            positional.append(arg.value)
    try:
        inspect.signature(task.fn).bind(*positional, **named)
    except TypeError as exc:
        raise UsageError(f"{task.name}: {exc}; nothing was sent") from None
    return positional, named


def _annotation(task: Task[Any, Any], name: str) -> str:
    annotation = inspect.signature(task.fn).parameters[name].annotation
    return getattr(annotation, "__name__", None) or str(annotation)


def _typed_sender(task: Task[Any, Any], args: Any) -> Any:
    """``task`` with the options given on the command line over its defaults."""
    return task.with_options(
        queue=args.queue,
        priority=args.priority or None,
        delay_s=args.delay or None,
        retry_count=args.retry_count,
        task_timeout=args.task_timeout or None,
        reply=getattr(args, "reply", False) or None,
    )


def _loose(raw: str) -> Any:
    """A value for a parameter without a typed annotation: JSON when it parses, else text."""
    try:
        return json.loads(raw)
    except ValueError:
        return raw
