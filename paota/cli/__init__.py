"""The ``paota`` command. Each subcommand is a module of this package with ``NAME``, ``HELP``,
``DESCRIPTION``, ``add_arguments(parser)`` and ``async run(args) -> int`` (the exit status);
:data:`COMMANDS` lists them in help order.

Configuration comes from the ``PAOTA_*`` environment variables (see ``Config.from_env``).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import os
import sys
from collections.abc import Callable, Sequence
from types import ModuleType

from paota._version import __version__
from paota.cli._common import UsageError, parse_arg, parse_queues
from paota.cli._logging import FORMAT_HELP, LEVEL_HELP, configure, log_levels
from paota.core.errors import ConfigError, PaotaError

__all__ = ["COMMANDS", "build_parser", "main", "parse_arg", "parse_queues"]

#: The subcommands' modules (``paota.cli.<name>``), in help order.
COMMANDS = [
    "worker",
    "send",
    "demo",
    "requeue",
    "parked",
    "cancel",
    "status",
    "result",
    "scheduler",
    "schedules",
    "workers",
    "workflow",
    "ladders",
    "web",
]


def _commands(argv: Sequence[str] = ()) -> dict[str, ModuleType]:
    """The subcommands' modules: only the one ``argv`` names when it names one (a worker process
    does not hold the code of the other nine), else all of them (for help and errors)."""
    named = [arg for arg in argv if arg in COMMANDS][:1]
    return {name: importlib.import_module(f"paota.cli.{name}") for name in named or COMMANDS}


class _Formatter(argparse.HelpFormatter):
    """argparse's help formatter, sized like it sizes itself (``COLUMNS``, else the terminal,
    else 80) without importing :mod:`shutil` for that: shutil imports ``bz2`` and ``lzma``, half
    a MiB of every worker process."""

    def __init__(
        self,
        prog: str,
        indent_increment: int = 2,
        max_help_position: int = 24,
        width: int | None = None,
    ) -> None:
        if width is None:
            width = _columns() - 2
        super().__init__(prog, indent_increment, max_help_position, width)


def _columns() -> int:
    try:
        columns = int(os.environ.get("COLUMNS", "0"))
    except ValueError:
        columns = 0
    if columns <= 0:
        try:
            columns = os.get_terminal_size(sys.__stdout__.fileno()).columns  # type: ignore[union-attr]
        except (AttributeError, ValueError, OSError):
            columns = 0
    return columns if columns > 0 else 80


def _parser(commands: dict[str, ModuleType]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="paota",
        formatter_class=_Formatter,
        description="paota: an asyncio task queue. Configured by PAOTA_* environment variables "
        "(PAOTA_BROKER=memory|amqp, PAOTA_AMQP_URL, PAOTA_STORE=memory|mongodb, PAOTA_MONGO_URI, ...).",
    )
    parser.add_argument("--version", action="version", version=f"paota {__version__}")
    parser.add_argument("--log-level", default=None, type=log_levels, help=LEVEL_HELP)
    parser.add_argument("--log-format", default="text", choices=("text", "json"), help=FORMAT_HELP)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, module in commands.items():
        command = sub.add_parser(
            name, help=module.HELP, description=module.DESCRIPTION, formatter_class=_Formatter
        )
        module.add_arguments(command)
        # also after the command (paota worker app:pool --log-level DEBUG); SUPPRESS: given
        # before the command only, the top-level value stands
        command.add_argument(
            "--log-level", default=argparse.SUPPRESS, type=log_levels, help=LEVEL_HELP
        )
        command.add_argument(
            "--log-format", default=argparse.SUPPRESS, choices=("text", "json"), help=FORMAT_HELP
        )
    return parser


def build_parser() -> argparse.ArgumentParser:
    """The ``paota`` command's whole parser, every subcommand included (the CLI reference of the
    documentation is generated from it)."""
    return _parser(_commands())


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's event loop when it is installed (``pip install 'paota[uvloop]'``: about 15 % less
    CPU per task on RabbitMQ) and ``PAOTA_UVLOOP`` is not ``0``; else asyncio's own."""
    if os.environ.get("PAOTA_UVLOOP", "").strip().lower() in {"0", "false", "no", "off"}:
        return None
    try:
        import uvloop
    except ImportError:
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``paota`` command; returns the exit status."""
    commands = _commands(sys.argv[1:] if argv is None else argv)
    args = _parser(commands).parse_args(argv)
    configure(args.log_level or {}, args.log_format, args.command)
    try:
        with asyncio.Runner(loop_factory=_loop_factory()) as runner:
            status: int = runner.run(commands[args.command].run(args))
        return status
    except UsageError as exc:
        print(f"paota: {exc}", file=sys.stderr)
        return 2
    except ConfigError as exc:
        print(f"paota: configuration error: {exc}", file=sys.stderr)
        return 2
    except PaotaError as exc:
        print(f"paota: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
