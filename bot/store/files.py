"""The bot's own files are private: the database, its -wal, -shm and -journal, and the lease file are 0600,
a database directory the bot creates is 0700, whatever the process umask.

SQLite creates -wal and -shm with the database file's permission bits (and fchmods them to those bits
through the umask), so a database file created 0600 keeps them 0600. A file found with group or other
bits (an older version, a copy, a restore) is tightened to 0600 at start-up with a warning: these are the
tool's own files, so it fixes them and says so. A file it may not change (owned by someone else) stops
start-up with what to do.
"""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Iterable
from pathlib import Path

log = logging.getLogger(__name__)

FILE_MODE = 0o600
DIR_MODE = 0o700
SIDE_FILES = ("-wal", "-shm", "-journal")


class PrivateFileError(ValueError):
    """A file of the bot's is readable by others and cannot be made private (a ValueError: front ends print it)."""


def database_files(database: str | Path) -> list[Path]:
    """The database and every file SQLite keeps beside it."""
    return [Path(database), *(Path(f"{database}{suffix}") for suffix in SIDE_FILES)]


def make_private_dir(directory: Path) -> None:
    """Create ``directory`` and any missing parents 0700 (an existing directory is left as it is)."""
    missing: list[Path] = []
    current = directory
    while not current.exists():
        missing.append(current)
        if current.parent == current:
            break
        current = current.parent
    for path in reversed(missing):
        try:
            path.mkdir(mode=DIR_MODE)
        except FileExistsError:  # another process made it meanwhile: its business
            continue
        os.chmod(path, DIR_MODE)  # the umask may have taken bits from 0700: set exactly that


def create_private(path: Path) -> None:
    """Create ``path`` empty and 0600 if it does not exist (so what SQLite derives from it is 0600 too)."""
    make_private_dir(path.parent)
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, FILE_MODE)
    except FileExistsError:
        return
    try:
        os.fchmod(fd, FILE_MODE)
    finally:
        os.close(fd)


def tighten(paths: Iterable[Path]) -> list[Path]:
    """Any of ``paths`` that exists with group or other bits is set to 0600, with a warning; the tightened."""
    changed = []
    for path in paths:
        try:
            mode = stat.S_IMODE(os.stat(path).st_mode)
        except FileNotFoundError:
            continue
        if not mode & 0o077:
            continue
        try:
            os.chmod(path, FILE_MODE)
        except PermissionError:
            raise PrivateFileError(
                f"{path} is readable by others (mode {mode:04o}) and this process may not change it; "
                f"make it the bot's own file (chown) or run: chmod 600 {path}"
            ) from None
        log.warning("%s was mode %04o (readable by others); set it to 0600", path, mode)
        changed.append(path)
    return changed
