"""Injected crash points, for proving that a crash at any persisted transition resumes correctly.

Off unless the environment asks for it, and only then does anything:
``IDM_UPGRADE_TRACE=FILE`` appends the name of every persisted transition to FILE;
``IDM_UPGRADE_KILL_AT=N:before`` or ``N:after`` SIGKILLs this process just before or just after the
N-th transition (counted from 1 in this process) is committed; ``NAME:before`` or ``NAME:after`` (a
transition's name, e.g. ``run.succeeded:after``) at the first transition of that name.
"""

from __future__ import annotations

import os
import signal

TRACE_ENV = "IDM_UPGRADE_TRACE"
KILL_ENV = "IDM_UPGRADE_KILL_AT"


class KillPoints:
    def __init__(self, environ: dict[str, str] | None = None):
        env = os.environ if environ is None else environ
        self.trace_path = env.get(TRACE_ENV)
        self.kill_at: tuple[int | str, str] | None = None
        if spec := env.get(KILL_ENV):
            where, _, when = spec.rpartition(":")
            if not where or when not in ("before", "after"):
                raise ValueError(
                    f"{KILL_ENV} must look like '7:before', '7:after' or 'run.succeeded:after', not {spec!r}"
                )
            self.kill_at = (int(where) if where.isdigit() else where, when)
        self.count = 0

    @property
    def active(self) -> bool:
        return bool(self.trace_path or self.kill_at)

    def before_commit(self, transition: str) -> None:
        self.count += 1
        self._maybe_kill("before", transition)

    def after_commit(self, transition: str) -> None:
        self._trace(transition)
        self._maybe_kill("after", transition)

    def _trace(self, line: str) -> None:
        if self.trace_path:
            with open(self.trace_path, "a", encoding="utf-8") as trace:
                trace.write(line + "\n")

    def _maybe_kill(self, when: str, transition: str) -> None:
        if self.kill_at in ((self.count, when), (transition, when)):
            self._trace(f"KILLED {self.count}:{when} {transition}")  # which transition a random index hit
            os.kill(os.getpid(), signal.SIGKILL)
