"""Every test starts from the code's defaults: the ``PAOTA_*`` variables a config reads
(``Config()`` reads them, see :mod:`paota.core.config`) are removed from the test process's
environment before collection, so a developer's shell cannot change what a test sees. A test
that wants one sets it with ``monkeypatch.setenv``; ``PAOTA_TEST_*`` and the report variables
stay.
"""

from __future__ import annotations

import os

import pytest

from paota.core.config import AMQPConfig, Config, MongoConfig
from paota.core.settings import variables

CONFIG_VARIABLES = sorted({v for cls in (Config, AMQPConfig, MongoConfig) for v in variables(cls)})


def pytest_configure(config: pytest.Config) -> None:
    for name in CONFIG_VARIABLES:
        os.environ.pop(name, None)
