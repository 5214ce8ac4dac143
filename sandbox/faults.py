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
            self.server_error_body = True
