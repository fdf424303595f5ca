"""The AMQP driver, imported without :mod:`importlib.metadata`: ``from paota.brokers.amqp.driver
import aiormq``.

aiormq reads its own version when it is imported (``importlib.metadata.version("aiormq")``, a
string it sends RabbitMQ in its client properties). Importing :mod:`importlib.metadata` loads
``email``, ``zipfile``, ``csv``, ``bz2``, ``lzma``, ``tempfile`` and more: about 1.8 MiB of every
worker process's resident memory (a sixteenth of it), for that one string. So the first import of
aiormq in a process goes through a stand-in ``importlib.metadata`` whose ``version()`` reads the
``Version:`` line of the distribution's ``METADATA`` file on ``sys.path``; the stand-in is removed
from ``sys.modules`` as soon as aiormq is imported.

The stand-in can only differ from the real module in cost: any other name asked of it (or a
version it cannot find) loads the real :mod:`importlib.metadata` and answers from it. When the real
module is already imported, or aiormq is, nothing is stood in for.
"""

from __future__ import annotations

import os
import sys
import types
from typing import Any

__all__ = ["aiormq", "distribution_version"]

_METADATA = "importlib.metadata"


def distribution_version(name: str) -> str | None:
    """The version of the installed distribution ``name``, read from the ``METADATA`` file of its
    ``*.dist-info`` directory on ``sys.path`` (None when there is none)."""
    prefix = name.replace("-", "_").lower() + "-"
    for entry in sys.path:
        try:
            names = os.listdir(entry or ".")
        except OSError:
            continue
        for found in names:
            if not (found.endswith(".dist-info") and found.lower().startswith(prefix)):
                continue
            try:
                with open(os.path.join(entry or ".", found, "METADATA"), encoding="utf-8") as f:
                    for line in f:
                        if line.startswith("Version:"):
                            return line.partition(":")[2].strip()
                        if not line.strip():  # the headers end at the first empty line
                            break
            except OSError:
                continue
    return None


class _StandIn(types.ModuleType):
    """``importlib.metadata`` while aiormq is imported: ``version()`` without the real module's
    imports; anything else from the real module."""

    def __init__(self) -> None:
        super().__init__(_METADATA)

    @staticmethod
    def _real() -> types.ModuleType:
        if sys.modules.get(_METADATA) is _STAND_IN:
            del sys.modules[_METADATA]
        import importlib.metadata

        return importlib.metadata

    def version(self, distribution_name: str) -> str:
        found = distribution_version(distribution_name)
        if found is not None:
            return found
        return str(self._real().version(distribution_name))

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        return getattr(self._real(), name)


_STAND_IN = _StandIn()


def _import_aiormq() -> None:
    if "aiormq" in sys.modules or _METADATA in sys.modules:
        return
    sys.modules[_METADATA] = _STAND_IN
    try:
        import aiormq  # noqa: F401
    finally:
        if sys.modules.get(_METADATA) is _STAND_IN:
            del sys.modules[_METADATA]


_import_aiormq()

import aiormq  # noqa: E402  (imported above, under the stand-in)
