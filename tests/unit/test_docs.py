"""The README and the documentation as a user meets them: every Python example runs, the README
stays a front door that keeps its two commands, and the reference tables name what the code has.

Examples: every ```` ```python ```` block of ``README.md`` and ``docs/**/*.md`` runs as a script
of its own, in a directory where the page's blocks that start with ``# NAME.py`` are written as
files first (a later block can import them). The tutorial is run by
``tests/integration/test_tutorial.py`` instead, on RabbitMQ and MongoDB.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from paota.core import settings
from paota.core.config import AMQPConfig, Config, MongoConfig

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
#: Pages whose examples need real servers: an integration test runs them.
INTEGRATION_PAGES = {"docs/tutorial.md"}
#: The README's two commands (the README contract): the main job, and the tests.
MAIN_JOB = "python3 -m venv .venv && .venv/bin/pip install -q -e . && .venv/bin/paota demo"
TESTS = (
    "python3 -m venv .venv && .venv/bin/pip install -q -e '.[dev]' && "
    ".venv/bin/nox -s tests lint typecheck integration"
)


def _pages() -> list[Path]:
    pages = [ROOT / "README.md", *sorted(DOCS.rglob("*.md"))]
    return [p for p in pages if "_build" not in p.parts]


def _blocks(page: Path) -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", page.read_text(), flags=re.S | re.M)


def _examples() -> list[tuple[str, int]]:
    found = []
    for page in _pages():
        name = page.relative_to(ROOT).as_posix()
        if name not in INTEGRATION_PAGES:
            found += [(name, i) for i in range(len(_blocks(page)))]
    return found


EXAMPLES = _examples()


def test_there_are_examples_in_the_readme_and_the_docs() -> None:
    pages = {name for name, _ in EXAMPLES}
    assert "README.md" in pages and len(pages) >= 10, pages


@pytest.mark.parametrize(("page", "index"), EXAMPLES, ids=[f"{p}:{i}" for p, i in EXAMPLES])
def test_example_runs(page: str, index: int, tmp_path: Path) -> None:
    blocks = _blocks(ROOT / page)
    for block in blocks:
        named = re.match(r"# (\w+\.py)\n", block)
        if named:
            (tmp_path / named.group(1)).write_text(block)
    script = tmp_path / f"example_{index}.py"
    script.write_text(blocks[index])
    result = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=60, cwd=tmp_path
    )
    assert result.returncode == 0, (
        f"{page} example {index} failed:\n{blocks[index]}\n{result.stderr}"
    )


def test_readme_is_a_front_door_with_the_two_commands() -> None:
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 250
    assert f"```sh\n{MAIN_JOB}\n```" in readme
    assert f"```sh\n{TESTS}\n```" in readme


def test_the_readme_links_to_pages_that_exist() -> None:
    readme = (ROOT / "README.md").read_text()
    links = re.findall(r"\]\((docs/[^)#]+)(?:#[^)]*)?\)", readme)
    assert links
    missing = [link for link in links if not (ROOT / link).exists()]
    assert not missing, missing


def _config_variables() -> set[str]:
    return {
        *settings.variables(Config),
        *settings.variables(AMQPConfig),
        *settings.variables(MongoConfig),
    }


def test_the_go_interop_table_lists_every_variable() -> None:
    page = (DOCS / "explanation" / "go-interop.md").read_text()
    listed = set(re.findall(r"^\| `(PAOTA_\w+)` \|", page, flags=re.M))
    assert listed == _config_variables()


def test_the_configuration_page_names_every_other_variable() -> None:
    # the Config variables are in its generated table; the others the code reads are named in it
    used = set()
    for path in (ROOT / "paota").rglob("*.py"):
        used |= set(re.findall(r"\b(PAOTA_[A-Z][A-Z0-9_]*[A-Z0-9])\b", path.read_text()))
    # the supervisor's link to a child, and a placeholder in a docstring
    internal = {"PAOTA_SUPERVISOR_ARGS", "PAOTA_SUPERVISOR_FD", "PAOTA_X"}
    others = used - _config_variables() - internal
    page = (DOCS / "reference" / "configuration.md").read_text()
    assert "```{paota-config}" in page
    assert others and not {v for v in others if f"`{v}" not in page}, others
