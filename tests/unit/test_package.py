"""The package as a user meets it: public names, no driver imports, runnable README examples."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import paota

ROOT = Path(__file__).resolve().parents[2]


def test_all_matches_public_names() -> None:
    public = {name for name in vars(paota) if not name.startswith("_")}
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
    }
    assert set(paota.__all__) - {"__version__"} == public - modules


def test_import_paota_imports_no_driver() -> None:
    code = "import sys, paota; print(sorted(m for m in ('aiormq', 'pamqp', 'pymongo') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_readme_python_examples_run(tmp_path: Path) -> None:
    readme = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", readme, flags=re.S)
    assert blocks, "README has no python examples"
    for i, block in enumerate(blocks):
        script = tmp_path / f"example_{i}.py"
        script.write_text(block)
        result = subprocess.run(
            [sys.executable, str(script)], capture_output=True, text=True, timeout=60
        )
        assert result.returncode == 0, f"README example {i} failed:\n{block}\n{result.stderr}"
