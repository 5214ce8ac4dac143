"""How `idm-upgrade sandbox` draws: a log on a pipe (each message's lines once, under its host), the alternate
screen on a terminal (redrawn only on change, left on exit), and at `--approve prompt` the request before the
question, in words that say what the approval does and what to type."""

from __future__ import annotations

import io
import itertools
import os
import pty
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from sandbox.run import run_sandbox
from sandbox.screen import (
    CLEAR,
    CONTEXT_MARK,
    ENTER_ALTERNATE_SCREEN,
    LEAVE_ALTERNATE_SCREEN,
    PipedScreen,
    TerminalScreen,
    heading,
)
from sandbox.slack_render import RenderedMessage

ROOT = Path(__file__).resolve().parents[2]
END_MARK = "--- the channel at the end ---"
HOST = re.compile(r"\bhost0\d\b")


def test_piped_output_of_three_hosts_has_each_message_once_under_its_own_host():
    proc = subprocess.run(
        [sys.executable, "-m", "bot", "sandbox", "--hosts", "3"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        stdin=subprocess.DEVNULL,
        timeout=240,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    log, end = proc.stdout.split(END_MARK)
    final = end.rsplit("\nsandbox: ", 1)[0]  # the channel, without the result line
    # under each host's heading, only that host is named
    host = None
    headings = []
    for line in log.splitlines()[1:]:  # after the slash command
        if match := re.fullmatch(r"── (\S+) ──", line):
            host = match.group(1)
            headings.append(host)
            continue
        # a thread may name the host of an earlier run of the batch that did the tenant-wide change
        named = set(HOST.findall(re.sub(r"turned off by run-\w+ \(\w+\)", "", line)))
        if host is not None and host.startswith("#"):
            continue  # the channel's own messages (the batch recap) name every host
        assert not named or named == {host}, f"{line!r} printed under {host}"
    assert {"host01", "host02", "host03"} <= set(headings)
    # nothing hidden, nothing repeated: every line of the final channel is in the log as often as in the channel
    # (a line two requests share, such as their approvers, is printed for each)
    logged = log.splitlines()
    for line in set(final.splitlines()[2:]):
        if line.strip():
            assert logged.count(line) == final.splitlines().count(line), line
    assert final.count("*Approvers:* @approver") >= 3


def _message(key: str, thread: str, *lines: str) -> RenderedMessage:
    return RenderedMessage(key, thread, list(lines))


def test_piped_screen_prints_new_lines_of_a_message_under_its_host_and_names_the_message():
    out = io.StringIO()
    screen = PipedScreen(out, "idm-ops")
    hosts = {"1.0": "host01", "2.0": "host02"}
    card1 = _message("1.0", "1.0", "card host01", "    State: running")
    card2 = _message("2.0", "2.0", "card host02", "    State: running")
    reply1 = _message("1.1", "1.0", "  ↳ request", "        Approvers: @approver")
    reply2 = _message("2.1", "2.0", "  ↳ request", "        Approvers: @approver")
    screen.draw([card1, reply1, card2, reply2], hosts, "")
    screen.draw([card1, reply1, card2, reply2], hosts, "")  # unchanged: nothing printed
    done = _message("1.0", "1.0", "card host01", "    State: succeeded")
    screen.draw([done, reply1, card2, reply2], hosts, "")
    assert out.getvalue().splitlines() == [
        "",
        heading("host01"),
        "card host01",
        "    State: running",
        "  ↳ request",
        "        Approvers: @approver",
        "",
        heading("host02"),
        "card host02",
        "    State: running",
        "  ↳ request",  # the same words in another message: printed again
        "        Approvers: @approver",
        "",
        heading("host01"),  # host01's card changed after host02's lines: back under host01
        CONTEXT_MARK + "card host01",  # which message the new line belongs to
        "    State: succeeded",
    ]
    screen.draw(
        [done, _message("1.1", "1.0", "  ↳ request", "        Approvers: @approver", "  GRANTED"), card2], hosts, ""
    )
    assert out.getvalue().splitlines()[-2:] == [CONTEXT_MARK + "↳ request", "  GRANTED"]


def test_piped_screen_holds_back_a_card_until_it_is_known_as_a_runs():
    out = io.StringIO()
    screen = PipedScreen(out, "idm-ops")
    card = _message("1.0", "1.0", "card host01")
    screen.draw([card], {}, "")  # posted; its run's thread not recorded yet
    assert out.getvalue() == ""
    screen.draw([card], {"1.0": "host01"}, "")
    assert out.getvalue().splitlines() == ["", heading("host01"), "card host01"]
    notice = _message("0.5", "0.5", "checkpoint at start-up")  # of no run: under the channel, a moment later
    for _ in range(4):
        screen.draw([notice], {}, "")
    assert out.getvalue().splitlines()[-2:] == [heading("#idm-ops"), "checkpoint at start-up"]


def test_terminal_screen_redraws_only_when_the_channel_changed():
    out = io.StringIO()
    one = [_message("1.0", "1.0", "card", "    State: running")]
    two = [_message("1.0", "1.0", "card", "    State: succeeded")]
    with TerminalScreen(out, "idm-ops", rows=40, columns=80) as screen:
        screen.draw(one, {}, "sandbox: 1 s")
        screen.draw(one, {}, "sandbox: 1 s")
        screen.draw(one, {}, "sandbox: 2 s")  # the status line alone is rewritten in place
        screen.draw(two, {}, "sandbox: 3 s")
    text = out.getvalue()
    assert text.startswith(ENTER_ALTERNATE_SCREEN) and text.endswith(LEAVE_ALTERNATE_SCREEN)
    assert text.count(CLEAR) == 2 and screen.redraws == 2
    assert text.count("sandbox: 2 s") == 1


def test_terminal_screen_leaves_the_alternate_screen_on_ctrl_c():
    out = io.StringIO()
    with pytest.raises(KeyboardInterrupt), TerminalScreen(out, "idm-ops", rows=40, columns=80):
        raise KeyboardInterrupt
    assert out.getvalue() == ENTER_ALTERNATE_SCREEN + LEAVE_ALTERNATE_SCREEN


def test_terminal_screen_keeps_the_cards_when_the_window_is_short():
    out = io.StringIO()
    card = _message("1.0", "1.0", "card host01", "    State: running")
    replies = [_message(f"1.{i}", "1.0", f"  ↳ reply {i}") for i in range(1, 20)]
    with TerminalScreen(out, "idm-ops", rows=10, columns=80) as screen:
        screen.draw([card, *replies], {}, "sandbox: 1 s")
    frame = out.getvalue().split(CLEAR)[1].split("\n\n")[0].splitlines()
    # 10 rows: 7 for the channel (a blank line, the status line and a prompt's line below it)
    assert frame == ["#idm-ops", "  ↳ … 16 earlier replies not shown", "card host01", "    State: running"] + [
        f"  ↳ reply {i}" for i in (17, 18, 19)
    ]


def test_terminal_screen_counts_the_rows_a_long_line_wraps_over():
    out = io.StringIO()
    card = _message("1.0", "1.0", "card host01", "    Result: failed: " + "log line " * 40)  # 379 characters
    replies = [_message(f"1.{i}", "1.0", f"  ↳ reply {i}") for i in range(1, 6)]
    with TerminalScreen(out, "idm-ops", rows=13, columns=80) as screen:
        screen.draw([card, *replies], {}, "sandbox: 1 s")
    frame = out.getvalue().split(CLEAR)[1].split("\n\n")[0].splitlines()
    # 10 rows: the header, the marker, the card's title and its result over 5 rows, 2 replies
    assert frame[1] == "  ↳ … 3 earlier replies not shown" and frame[-2:] == ["  ↳ reply 4", "  ↳ reply 5"]


def test_on_a_terminal_the_sandbox_draws_on_the_alternate_screen_and_prints_the_end_once():
    master, slave = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "bot", "sandbox"],
        stdin=subprocess.DEVNULL,
        stdout=slave,
        stderr=subprocess.PIPE,
        cwd=ROOT,
        env={**os.environ, "LINES": "200", "COLUMNS": "200"},
    )
    os.close(slave)
    chunks: list[bytes] = []

    def read() -> None:
        while True:
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: the child closed the terminal
                return
            if not data:
                return
            chunks.append(data)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        assert proc.wait(timeout=180) == 0, proc.stderr.read().decode()
    finally:
        if proc.poll() is None:
            proc.kill()
    reader.join(30)
    os.close(master)
    text = b"".join(chunks).decode().replace("\r\n", "\n")
    before, rest = text.split(ENTER_ALTERNATE_SCREEN, 1)
    screen, after = rest.split(LEAVE_ALTERNATE_SCREEN, 1)
    assert before.startswith("$ /idm-upgrade host01")
    frames = [f.split("\n\nsandbox:")[0] for f in screen.split(CLEAR)[1:]]
    assert len(frames) >= 3
    assert all(a != b for a, b in itertools.pairwise(frames)), "a frame was drawn twice"
    # the normal screen gets the final channel once, then the result line
    assert after.count("Connector upgrade: host01") == 1 and "host01: succeeded" in after
    assert after.strip().splitlines()[-1].startswith("sandbox: host01 succeeded in ")


async def test_prompt_draws_each_request_then_asks_in_words_with_what_to_type():
    out = io.StringIO()
    answers = io.StringIO("y\n" * 10)
    code = await run_sandbox(approve="prompt", out=out, stdin=answers, terminal=False)
    text = out.getvalue()
    assert code == 0, text[-3000:]
    asked = {
        "snapshot confirmation needed": 'Have you taken the snapshot of host01 described above? (type y for "Snapshot taken", n for "Cannot do it") [y/N] ',
        "STARTTLS approval needed": "Turn STARTTLS off on the AD-over-IWA directories (tenant-wide), before upgrading host01? (type y to approve, n to deny) [y/N] ",
        "install approval needed": "Run the connector installer on host01 now (the connector stops and restarts)?",
        "reboot approval needed": "Reboot host01 now? (type y to approve, n to deny) [y/N] ",
    }
    for request, question in asked.items():
        assert question in text, question
        # the request and what it asks, drawn before the question about it
        assert text.index(request) < text.index(question), request
        drawn_before = text[: text.index(question)]
        assert "[Approve] [Deny]" in drawn_before or "[Snapshot taken]" in drawn_before
    assert "Approve STARTTLS" not in text


def test_ctrl_c_at_the_prompt_stops_the_sandbox_without_waiting_for_an_answer():
    proc = subprocess.Popen(
        [sys.executable, "-m", "bot", "sandbox", "--approve", "prompt"],
        stdin=subprocess.PIPE,  # open, and nothing is ever typed
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=ROOT,
    )
    seen = b""
    timer = threading.Timer(120, proc.kill)  # never hang on a sandbox that never asks
    timer.start()
    try:
        while b"[y/N] " not in seen:
            chunk = os.read(proc.stdout.fileno(), 4096)
            assert chunk, f"the sandbox ended without asking: {seen[-2000:]!r}"
            seen += chunk
    finally:
        timer.cancel()
    proc.send_signal(signal.SIGINT)
    _out, err = proc.communicate(timeout=60)
    assert proc.returncode == 1 and b"sandbox stopped" in err, err[-2000:]
    assert b"Traceback" not in err
