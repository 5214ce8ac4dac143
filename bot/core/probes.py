"""What `check-config --probe` found about one system: one line, ok or FAILED with why."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Probe:
    what: str  # the system and what was asked of it, e.g. "host01: WinRM https://host01:5986/wsman"
    ok: bool
    detail: str  # what it answered, or why it failed (never a secret)

    def line(self) -> str:
        return f"probe {self.what}: {'ok' if self.ok else 'FAILED'}: {self.detail}"


def one_line(exc: BaseException) -> str:
    """An exception's first line, or its type when it says nothing."""
    first = (str(exc).strip().splitlines() or [""])[0]
    return first or type(exc).__name__
