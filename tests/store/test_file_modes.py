"""The database, its -wal and -shm, and the lease file are 0600 whatever the umask; a directory the bot
creates is 0700; files found readable by others are tightened at start-up, with a warning."""

from __future__ import annotations

import logging
import os
import stat
from contextlib import contextmanager
from pathlib import Path

import pytest

from bot.store.lease import EngineLease
from bot.store.store import Store
from tests.support.configs import REQUESTER


def mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@contextmanager
def umask(value: int):
    old = os.umask(value)
    try:
        yield
    finally:
        os.umask(old)


@pytest.mark.parametrize("mask", [0o022, 0o000])
def test_database_wal_shm_lease_and_new_directories_are_private_whatever_the_umask(tmp_path, mask):
    db = tmp_path / "state" / "deeper" / "idm-upgrade.db"
    with umask(mask):
        lease = EngineLease(db).acquire()
        store = Store(db)
        try:
            store.create_runs(["host01"], requester=REQUESTER, plan=["alpha"])  # a write: -wal and -shm exist
            files = [db, Path(f"{db}-wal"), Path(f"{db}-shm"), Path(f"{db}.lock")]
            assert all(f.exists() for f in files)
            assert {f.name: oct(mode(f)) for f in files} == {f.name: "0o600" for f in files}
            assert oct(mode(tmp_path / "state")) == oct(mode(tmp_path / "state" / "deeper")) == "0o700"
        finally:
            store.close()
            lease.release()


def test_an_existing_directory_keeps_its_mode(tmp_path):
    shared = tmp_path / "var"
    shared.mkdir(mode=0o755)
    os.chmod(shared, 0o755)
    with umask(0o022):
        Store(shared / "idm-upgrade.db").close()
    assert oct(mode(shared)) == "0o755"
    assert oct(mode(shared / "idm-upgrade.db")) == "0o600"


def test_files_readable_by_others_are_tightened_at_start_with_a_warning(tmp_path, caplog):
    db = tmp_path / "idm-upgrade.db"
    with umask(0o022):
        first = Store(db)
        first.create_runs(["host01"], requester=REQUESTER, plan=["alpha"])
        # An older version (or a restore) left them world-readable; -wal and -shm are still open here.
        wal, shm, lock = Path(f"{db}-wal"), Path(f"{db}-shm"), Path(f"{db}.lock")
        lock.write_text("")
        for f in (db, wal, shm, lock):
            os.chmod(f, 0o644)
        caplog.set_level(logging.WARNING, logger="bot.store.files")
        lease = EngineLease(db).acquire()
        second = Store(db)
        try:
            assert {f.name: oct(mode(f)) for f in (db, wal, shm, lock)} == {
                f.name: "0o600" for f in (db, wal, shm, lock)
            }
            warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
            for f in (db, wal, shm, lock):
                assert any(msg.startswith(f"{f} was mode 0644") and "0600" in msg for msg in warned), warned
            assert second.get_run(first.runs()[0].id).host == "host01"  # the data is untouched
        finally:
            second.close()
            first.close()
            lease.release()
