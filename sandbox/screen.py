"""How `idm-upgrade sandbox` draws the channel: in place on a terminal, as a log on a pipe.

On a terminal the channel is drawn on the alternate screen (as `less` and `top` do), redrawn only when it
changed, so the scrollback keeps no frames; on leaving, the normal screen is back and the final channel is
printed there once. On a pipe each message's new lines are printed once, under the heading of the host whose
thread it belongs to: a line two messages share is printed for each, and a reply that arrives after another
host's lines is printed under its own host.
"""

from __future__ import annotations

import shutil
import unicodedata
from collections import Counter
from collections.abc import Mapping
from typing import TextIO

from sandbox.slack_render import RenderedMessage

ENTER_ALTERNATE_SCREEN = "\x1b[?1049h"
LEAVE_ALTERNATE_SCREEN = "\x1b[?1049l"
CLEAR = "\x1b[H\x1b[2J"  # cursor home, erase the screen
CLEAR_LINE = "\r\x1b[2K"
HOLD_UNPLACED_DRAWINGS = 3
CONTEXT_MARK = "… "  # a message's first line repeated to say which message the new lines below belong to


def screen_rows(line: str, columns: int) -> int:
    """How many rows of a terminal `columns` wide the line takes (wide characters, such as ✅, count two)."""
    width = sum(0 if unicodedata.combining(c) else 2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in line)
    return max(1, -(-width // max(columns, 1)))


def heading(host: str) -> str:
    return f"── {host} ──"


class PipedScreen:
    """Each message's lines once, in the order they appear, under a heading naming the host's thread."""

    def __init__(self, out: TextIO, channel: str):
        self.out, self.channel = out, channel
        self._printed: dict[str, Counter[str]] = {}
        self._last_heading: str | None = None
        self._last_message: str | None = None
        self._held: Counter[str] = Counter()

    def __enter__(self) -> PipedScreen:
        return self

    def __exit__(self, *exc_info: object) -> None:
        return None

    def draw(self, messages: list[RenderedMessage], hosts: Mapping[str, str], status: str) -> None:
        for message in messages:
            host = hosts.get(message.thread)
            if host is None and self._held[message.key] < HOLD_UNPLACED_DRAWINGS:
                # a run's card is known as the run's only once the bot recorded the ts Slack gave it, just after
                # the post: held back a few drawings rather than printed under the channel's heading
                self._held[message.key] += 1
                continue
            new = self._new_lines(message)
            if not new:
                continue
            title = heading(host or f"#{self.channel}")
            if title != self._last_heading:
                self.out.write(f"\n{title}\n")
                self._last_heading = title
            if message.key != self._last_message and new[0] != message.lines[0]:
                self.out.write(CONTEXT_MARK + message.lines[0].strip() + "\n")
            self.out.writelines(line + "\n" for line in new)
            self._last_message = message.key
        self.out.flush()

    def _new_lines(self, message: RenderedMessage) -> list[str]:
        """The message's lines not printed for it yet (a line it has twice is printed twice)."""
        printed = self._printed.setdefault(message.key, Counter())
        unseen = Counter(printed)
        new: list[str] = []
        for line in message.lines:
            if not line.strip():
                continue
            if unseen[line] > 0:
                unseen[line] -= 1
            else:
                new.append(line)
                printed[line] += 1
        return new

    def invalidate(self) -> None:
        """After a prompt: nothing to do, a log goes on below it."""

    def final(self, rendered: str) -> None:
        self.out.write("\n--- the channel at the end ---\n" + rendered + "\n")
        self.out.flush()


class TerminalScreen:
    """The channel on the alternate screen, redrawn when it changed; the status line alone is rewritten in place."""

    def __init__(self, out: TextIO, channel: str, rows: int | None = None, columns: int | None = None):
        self.out, self.channel, self._rows, self._columns = out, channel, rows, columns
        self._shown: list[str] | None = None
        self._status: str | None = None
        self._entered = False
        self.redraws = 0

    def __enter__(self) -> TerminalScreen:
        self.out.write(ENTER_ALTERNATE_SCREEN)
        self.out.flush()
        self._entered = True
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.leave()

    def leave(self) -> None:
        if self._entered:
            self._entered = False
            self.out.write(LEAVE_ALTERNATE_SCREEN)
            self.out.flush()

    def draw(self, messages: list[RenderedMessage], hosts: Mapping[str, str], status: str) -> None:
        lines = self._fit([f"#{self.channel}"], messages)
        if lines != self._shown:
            self.out.write(CLEAR + "\n".join(lines) + "\n\n" + status)
            self._shown, self._status = lines, status
            self.redraws += 1
        elif status != self._status:
            self.out.write(CLEAR_LINE + status)
            self._status = status
        self.out.flush()

    def invalidate(self) -> None:
        """A prompt wrote below the status line: the next draw redraws all."""
        self._shown = None

    def _fit(self, header: list[str], messages: list[RenderedMessage]) -> list[str]:
        """As much as the window holds: every card (top-level message) stays; the oldest replies give way.

        Rows, not lines, are counted: a long line (a failure's log tail) wraps over several."""
        size = shutil.get_terminal_size()
        rows, columns = self._rows or size.lines, self._columns or size.columns
        room = max(rows - 3, 5)  # a blank line, the status line, and a line for a prompt

        def height(lines: list[str]) -> int:
            return sum(screen_rows(line, columns) for line in lines)

        kept = list(messages)
        dropped = 0
        while height(header) + sum(height(m.lines) for m in kept) + (1 if dropped else 0) > room:
            oldest = next((i for i, m in enumerate(kept) if m.key != m.thread), None)
            if oldest is None:
                break
            dropped += 1
            del kept[oldest]
        lines = [*header]
        if dropped:
            lines.append(f"  ↳ … {dropped} earlier repl{'y' if dropped == 1 else 'ies'} not shown")
        lines += [line for m in kept for line in m.lines]
        while len(lines) > 1 and height(lines) > room:  # cards alone are too many: the newest stay
            del lines[1]
        return lines

    def final(self, rendered: str) -> None:
        self.leave()  # the final channel goes to the normal screen, once
        self.out.write(rendered + "\n")
        self.out.flush()


def make_screen(out: TextIO, channel: str, terminal: bool | None = None) -> PipedScreen | TerminalScreen:
    """A terminal gets the live screen; anything else (a pipe, a file, a test) the log."""
    if terminal is None:
        terminal = out.isatty()
    return TerminalScreen(out, channel) if terminal else PipedScreen(out, channel)
