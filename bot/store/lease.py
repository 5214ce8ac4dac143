"""One engine per database: two processes driving the same runs would run steps twice.

An exclusive flock on a file beside the database; the kernel drops it when the process dies, even
by SIGKILL, so a crashed bot never blocks its own restart.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from bot.store.files import make_private_dir, tighten


class EngineBusy(Exception):
    pass


class EngineLease:
    def __init__(self, database_path: str | Path):
        self.path = Path(f"{database_path}.lock")
        self._fd: int | None = None

    def acquire(self) -> EngineLease:
        make_private_dir(self.path.parent)
        tighten([self.path])
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        os.fchmod(fd, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise EngineBusy(
                f"another idm-upgrade process (pid {holder}) is already running runs from {self.path.stem}; "
                "use that one, or stop it first"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> EngineLease:
        return self.acquire()

    def __exit__(self, *exc_info: object) -> None:
        self.release()
