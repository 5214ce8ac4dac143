from __future__ import annotations

import pytest

from bot.config import load_config
from bot.store import Store
from tests.support.configs import write_config


@pytest.fixture
def make_config(tmp_path):
    """Write a real TOML file and load it the way the program does."""

    def make(**kwargs):
        return load_config(str(write_config(tmp_path, **kwargs)))

    return make


@pytest.fixture
def store(tmp_path):
    s = Store(tmp_path / "idm-upgrade.db")
    yield s
    s.close()
