"""A feature used without its package names the extra to install (issue 17): never a bare
``ModuleNotFoundError`` from inside paota, never an ERROR line and a feature silently off."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from paota import ConfigError
from paota.core.extras import EXTRAS, MissingExtraError, missing_extra, require


def _without(modules: list[str], code: str) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a fresh interpreter where importing ``modules`` fails as if missing."""
    blocked = "".join(f"sys.modules[{m!r}] = None\n" for m in modules)
    script = "import sys\n" + blocked + textwrap.dedent(code)
    return subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
    )


@pytest.mark.parametrize(
    ("modules", "module", "extra"),
    [
        (["prometheus_client"], "paota.middleware.metrics", "metrics"),
        (["opentelemetry"], "paota.middleware.tracing", "tracing"),
        (["starlette"], "paota.web", "web"),
    ],
)
def test_importing_a_feature_without_its_package_names_the_extra(
    modules: list[str], module: str, extra: str
) -> None:
    result = _without(
        modules,
        f"""
        from paota.core.extras import MissingExtraError
        try:
            import {module}
        except MissingExtraError as exc:
            assert isinstance(exc, ModuleNotFoundError) and isinstance(exc, ValueError)
            print(exc)
        """,
    )
    assert result.returncode == 0, result.stderr
    assert f"pip install 'paota[{extra}]'" in result.stdout
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("modules", "argv", "says"),
    [
        (["uvicorn"], ["web", "--insecure-open"], "paota web needs uvicorn"),
        (["starlette"], ["web", "--insecure-open"], "pip install 'paota[web]'"),
        (["watchfiles"], ["worker", "app:pool", "--reload"], "--reload needs watchfiles"),
        (["prometheus_client"], ["worker", "app:pool", "--metrics-port", "0"], "[metrics]"),
    ],
)
def test_a_command_without_its_package_says_so_in_one_line_and_exits_2(
    modules: list[str], argv: list[str], says: str
) -> None:
    app = "from paota import WorkerPool\\npool = WorkerPool()\\npool.task(name='t')(print)\\n"
    result = _without(
        modules,
        f"""
        import os, tempfile
        os.chdir(tempfile.mkdtemp())
        open("app.py", "w").write("{app}")
        sys.path.insert(0, os.getcwd())
        from paota.cli import main
        sys.exit(main({argv!r}))
        """,
    )
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert says in result.stderr
    assert "paota: configuration error:" in result.stderr
    assert "Traceback" not in result.stderr


def test_missing_extra_keeps_other_import_errors() -> None:
    other = ModuleNotFoundError("No module named 'nothere'", name="nothere")
    assert missing_extra(other, "x") is other
    with pytest.raises(ModuleNotFoundError, match="nothere"):
        require("nothere.sub", "a feature")
    assert {extra for _, extra in EXTRAS.values()} <= {
        "amqp", "mongo", "metrics", "tracing", "schedules", "web", "webhooks", "reload", "uvloop"
    }  # fmt: skip
    assert issubclass(MissingExtraError, ConfigError)


def test_the_all_extra_names_every_extra() -> None:
    import tomllib
    from pathlib import Path

    project = tomllib.loads(Path("pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    [everything] = extras["all"]
    named = set(everything.removeprefix("paota[").removesuffix("]").split(","))
    assert named == set(extras) - {"all", "test", "dev", "docs"}  # tools, not features
    assert any(d.startswith("opentelemetry-sdk") for d in extras["tracing"])
