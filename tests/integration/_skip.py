"""Skip on a laptop without a service; fail in CI, where every integration test must run."""

from __future__ import annotations

import os
from typing import NoReturn

import pytest


def in_ci() -> bool:
    """Whether ``CI`` is set to true (1, yes)."""
    return os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def skip_or_fail(reason: str) -> NoReturn:
    """``pytest.skip`` normally, ``pytest.fail`` when ``CI=true`` (a skip in CI is a failure)."""
    if in_ci():
        pytest.fail(f"integration test cannot run in CI: {reason}", pytrace=False)
    pytest.skip(reason)
