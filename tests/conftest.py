from __future__ import annotations

import threading

import pytest
import pytest_timeout

from bot.core.config import load_config
from bot.store.store import Store
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


@pytest.hookimpl(tryfirst=True)
def pytest_timeout_set_timer(item, settings):
    """pytest-timeout's thread method, naming the test first.

    A timeout then ends the run with a clear line and every thread's stack; it can never interrupt pytest
    while it formats a report (the signal method did: an INTERNALERROR with no name). Each test's own
    waits are bounded well inside this backstop, so a slow machine fails a test, not the session.
    """
    if settings.timeout is None or settings.timeout <= 0:
        return None

    def expire() -> None:
        capture = item.config.pluginmanager.getplugin("capturemanager")
        if capture:
            capture.suspend_global_capture(item)
        item.config.get_terminal_writer().line(f"\nTIMEOUT: {item.nodeid} ran past {settings.timeout:.0f} s")
        pytest_timeout.timeout_timer(item, settings)

    timer = threading.Timer(settings.timeout, expire)
    timer.daemon = True
    timer.start()
    item.cancel_timeout = timer.cancel
    return True
