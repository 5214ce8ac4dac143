"""Failures a test can switch on while a simulated host is serving.

Tests set these from their own thread while the server's event loop reads them, so every counter is
consumed under a lock. Refusing connections outright is not a flag here: the server really stops
listening (see `WinRMHostServer.refuse_connections`), because that is what a client must cope with.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

HOLD_SECONDS = 30.0  # the longest a held command waits for the others


@dataclass
class Faults:
    delay_seconds: float = 0.0  # added before every WinRM response (a slow or overloaded host)
    command_delay_seconds: float = 0.0  # every command runs this much longer (a hung script), wall-clock
    # Every command waits (at most HOLD_SECONDS) until this many commands are in flight across the fleet:
    # proves commands overlap without racing a timer on a busy machine.
    hold_until_fleet_in_flight: int = 0
    unauthorized: int = 0  # answer the next N requests with 401, as if the credentials expired
    server_errors: int = 0  # answer the next N requests with a 500 that is not the Receive timeout
    server_error_body: bool = True  # the 500 carries a SOAP WSManFault (False: an empty body)
    drop_receives: int = 0  # close the connection without a response on the next N Receive requests
    # A chatty script: this many bytes of 1 MB log lines on stdout before its JSON document, or on stderr
    # after its own; only for the script named noise_script ("" every script).
    noise_stdout_bytes: int = 0
    noise_stderr_bytes: int = 0
    noise_script: str = ""
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def take(self, name: str) -> bool:
        """Use up one of the counted faults `name`; True when it applies to this request."""
        with self._lock:
            left = getattr(self, name)
            if left <= 0:
                return False
            setattr(self, name, left - 1)
            return True

    def clear(self) -> None:
        with self._lock:
            self.delay_seconds = self.command_delay_seconds = 0.0
            self.hold_until_fleet_in_flight = 0
            self.unauthorized = self.server_errors = self.drop_receives = 0
            self.noise_stdout_bytes = self.noise_stderr_bytes = 0
            self.noise_script = ""
            self.server_error_body = True


NOISE_LINE_BYTES = 1_000_000  # the reported case: log lines of a megabyte each


def noise(size: int) -> bytes:
    """``size`` bytes of log lines of NOISE_LINE_BYTES each (the last one shorter)."""
    if size <= 0:
        return b""
    line = (b"2024-03-04 05:07:31,412 WARN  (pool-1) [;;] com.vmware.horizon.connector - " + b"x" * NOISE_LINE_BYTES)[
        : NOISE_LINE_BYTES - 2
    ] + b"\r\n"
    return (line * (size // len(line) + 1))[:size]
