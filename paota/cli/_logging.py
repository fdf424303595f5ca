"""The ``paota`` command's logging: ``--log-level`` (a level, and ``LOGGER=LEVEL`` pairs) and
``--log-format`` (``text`` for people, ``json``: one object a line, for log shippers)."""

from __future__ import annotations

import argparse
import json
import logging
from datetime import UTC, datetime

__all__ = ["LEVEL_HELP", "JsonFormatter", "configure", "log_levels", "levels_text"]

LEVEL_HELP = (
    "logging level (default INFO); LOGGER=LEVEL pairs, comma-separated, set one logger's, e.g. "
    "DEBUG,aiormq=DEBUG (aiormq's frame dumps show only when asked for); "
    "paota.tasks=WARNING hides the line per succeeded task"
)
FORMAT_HELP = "text (default) or json: one JSON object a line with task_id and task_name fields"
_LEVELS = ("CRITICAL", "ERROR", "WARNING", "INFO", "DEBUG")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def log_levels(text: str) -> dict[str, int]:
    """``--log-level``: ``LEVEL`` and/or ``LOGGER=LEVEL`` items -> {logger name ("" root): level}."""
    levels: dict[str, int] = {}
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        name, sep, level = item.rpartition("=")
        if level.upper() not in _LEVELS:
            raise argparse.ArgumentTypeError(
                f"{level!r} is not a logging level: expected one of {', '.join(_LEVELS)}"
                + (f" (in {item!r})" if sep else "")
            )
        levels[name.strip()] = getattr(logging, level.upper())
    return levels


def levels_text(levels: dict[str, int]) -> str:
    """The ``--log-level`` text of ``levels`` (for child processes)."""
    return ",".join(
        f"{name}={logging.getLevelName(number)}" if name else logging.getLevelName(number)
        for name, number in levels.items()
    )


class JsonFormatter(logging.Formatter):
    """One JSON object per record: ``time`` (RFC 3339, UTC), ``level``, ``logger``, ``message``,
    ``task_id`` and ``task_name`` when the record is about a task, ``process``, and ``error`` (the
    formatted exception) when there is one."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "process": record.process,
        }
        for key in ("task_id", "task_name"):
            value = getattr(record, key, None)
            if value:
                line[key] = value
        if record.exc_info:
            line["error"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str)


def configure(levels: dict[str, int], log_format: str, command: str) -> None:
    """Set up the root handler and the levels for ``command``."""
    root = levels.get("", logging.INFO)
    logging.basicConfig(level=root, format=TEXT_FORMAT)
    if log_format == "json":
        for handler in logging.getLogger().handlers:
            handler.setFormatter(JsonFormatter())
    if command == "demo" and "" not in levels:
        logging.getLogger("paota").setLevel(logging.WARNING)
    if "aiormq" not in levels:
        # aiormq logs every refused reconnect at ERROR with a traceback and every frame at DEBUG;
        # paota's broker already says what happens, once per backoff step.
        logging.getLogger("aiormq").setLevel(logging.CRITICAL)
    for name, level in levels.items():
        if name:
            logging.getLogger(name).setLevel(level)
