"""Sphinx configuration of paota's documentation site (``docs/``).

Built in strict mode by ``nox -s lint`` (``sphinx-build -W --keep-going -n``): a warning, a broken
cross-reference to paota's own API or a link to a missing page or heading fails the build. Pages
are Markdown (MyST); the API reference comes from the docstrings (autodoc), the command line from
the argparse parser's own help and the Go field table from ``paota.core.message.fields``.
"""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE / "_ext"))
sys.path.insert(0, str(HERE.parent))

import paota  # noqa: E402

project = "paota"
author = "the paota authors"
copyright = "2026, the paota authors"
release = paota.__version__
version = release

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "paota_docs",
]
source_suffix = {".md": "markdown", ".rst": "restructuredtext"}
exclude_patterns = ["_build", "screenshots/README.md"]
myst_heading_anchors = 4
myst_enable_extensions = ["colon_fence"]

html_theme = "furo"
html_title = f"paota {release}"
html_static_path: list[str] = []

autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_default_options = {"members": True, "show-inheritance": False}

# Strict about paota's own names, silent about the standard library's and the drivers': their
# inventories (intersphinx) would have to be downloaded, and no build here reaches the internet.
nitpicky = True
nitpick_ignore_regex = [
    (r"py:.*", r"(?!paota\b).*"),
    (r"py:.*", r"paota\..*\._.*"),  # private helpers named in signatures
]
suppress_warnings = ["myst.header"]
