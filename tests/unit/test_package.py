"""The package as a user meets it: public names, no driver imports (the examples: test_docs)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import paota

ROOT = Path(__file__).resolve().parents[2]


def test_all_matches_public_names() -> None:
    public = {name for name in dir(paota) if not name.startswith("_")}
    modules = {
        "core",
        "brokers",
        "stores",
        "cli",
        "middleware",
        "workflows",
        "scheduler",
        "supervisor",
        "web",
        "client",
        "pool",
    }
    assert set(paota.__all__) - {"__version__"} == public - modules
    for name in paota.__all__:
        assert getattr(paota, name) is not None


def test_a_worker_process_imports_only_what_it_uses() -> None:
    """The workflow API and engine, the limiter, the other subcommands and importlib.metadata
    (which aiormq asks for its version) are not imported by a worker that does not use them;
    each would cost every worker process memory (issue 11: <= 30 MB per process)."""
    code = (
        "import sys, paota, paota.cli, paota.brokers.amqp.broker;"
        "paota.cli._commands(['worker', 'x:pool']);"
        "print(sorted(n for n in ('paota.workflows', 'paota.middleware.workflows',"
        " 'paota.middleware.limits', 'paota.cli.web', 'paota.cli.demo', 'shutil',"
        " 'importlib.metadata') if n in sys.modules));"
        "import aiormq.connection, importlib.metadata as m;"
        "print(aiormq.connection.__version__ == m.version('aiormq'))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["[]", "True"]
    # The stand-in was only there while aiormq was imported: the real module answers now.
    code = (
        "import paota.brokers.amqp.driver, sys, importlib.metadata as m;"
        "print(type(m).__name__, 'email' in sys.modules, m.distribution('aiormq').name)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["module", "True", "aiormq"]


def test_workflow_names_are_the_workflow_modules_own() -> None:
    import paota.workflows

    assert paota.chain is paota.workflows.chain
    assert paota.TaskSignature is paota.workflows.TaskSignature
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        _ = paota.nope  # type: ignore[attr-defined]


def test_import_paota_imports_no_driver() -> None:
    code = "import sys, paota; print(sorted(m for m in ('aiormq', 'pamqp', 'pymongo') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
