"""The slash command text: what is accepted, and the plain refusal for everything else."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bot.slack.parse import Command, CommandError, parse

HOSTS = ["host01", "host02", "host03"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("host01", Command("upgrade", ("host01",))),
        ("HOST01 host02", Command("upgrade", ("host01", "host02"))),
        ("check host03", Command("check", ("host03",))),
        ("status", Command("status")),
        ("status run-0a1b2c3d", Command("status", run_id="run-0a1b2c3d")),
        ("history", Command("history")),
        ("history host02", Command("history", ("host02",))),
        ("cancel run-0a1b2c3d", Command("cancel", run_id="run-0a1b2c3d")),
        ("help", Command("help")),
        ("  host01   ", Command("upgrade", ("host01",))),
        ("retry run-0a1b2c3d", Command("retry", run_id="run-0a1b2c3d")),
        ("retry run-0a1b2c3d disk   freed", Command("retry", run_id="run-0a1b2c3d", why="disk freed")),
    ],
)
def test_accepted(text, expected):
    assert parse(text, HOSTS, 20) == expected


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("", "Which host?"),
        ("hostXX", "Unknown host `hostxx`"),
        ("host01;whoami", "is not a host name"),
        ("$(x)", "is not a host name"),
        ("host01 `rm`", "is not a host name"),
        ("hοst01", "is not a host name"),  # Greek omicron
        ("ｈｏｓｔ０１", "is not a host name"),  # full-width
        ("host01 host01", "more than once"),
        (" ".join(["host01"] * 200), "200 hosts in one request"),
        ("cancel", "takes one run id"),
        ("cancel 42", "is not a run id"),
        ("status run-1 run-2", "at most one run id"),
        ("check", "needs at least one host"),
        ("retry", "needs the failed run's id"),
        ("retry host01", "is not a run id"),
        ("retry <@U123> run-0a1b2c3d", "is not a run id"),
        ("x" * 5000, "5000 characters"),
        ("<@U123>", "is not a host name"),
    ],
)
def test_refused_with_a_reason(text, says):
    with pytest.raises(CommandError) as refused:
        parse(text, HOSTS, 20)
    assert says in str(refused.value)


@given(st.text(max_size=300))
def test_any_text_is_a_command_or_a_clear_refusal(text):
    try:
        command = parse(text, HOSTS, 20)
    except CommandError as refused:
        assert str(refused)
        assert "<@" not in str(refused)  # echoed input can never mention people
        return
    assert set(command.hosts) <= set(HOSTS)


GROUPS = {"prod": ["host02", "host01"], "dr": ["host03"]}


def test_groups_expand_in_their_order_and_each_is_a_batch():
    command = parse("dr prod ticket:CHG0012345", HOSTS, 20, GROUPS)
    assert command.hosts == ("host03", "host02", "host01") and command.groups == ("dr", "prod")
    assert command.ticket == "CHG0012345"
    assert command.batches(GROUPS) == [("dr", ["host03"]), ("prod", ["host02", "host01"])]


def test_hosts_named_on_their_own_are_one_batch_after_the_groups():
    command = parse("host03 prod", HOSTS, 20, GROUPS)
    assert command.batches(GROUPS) == [("prod", ["host02", "host01"]), (None, ["host03"])]


def test_at_takes_next_window_or_a_time_with_its_offset():
    assert parse("host01 at next-window", HOSTS, 20).at == "next-window"
    at = parse("at 2026-12-05T22:00+01:00 host01", HOSTS, 20).at
    assert not isinstance(at, str) and at is not None and at.utcoffset() is not None and at.hour == 22


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("host01 at", "`at` needs a time"),
        ("host01 at 2026-12-05T22:00", "with its UTC offset"),
        ("host01 at tomorrow", "`tomorrow` is not a time"),
        ("host01 at next-window at next-window", "more than once"),
        ("host01 ticket:", "needs the ticket number"),
        ("host01 ticket:A ticket:B", "more than once"),
        ("host01 prod", "named more than once"),
        ("prod prod", "A group is named more than once"),
        ("ticket:CHG0012345", "Which host?"),
        ("status prod dr", "at most one run id or group"),
    ],
)
def test_change_words_refused_plainly(text, says):
    with pytest.raises(CommandError) as caught:
        parse(text, HOSTS, 20, GROUPS)
    assert says in str(caught.value)


def test_status_and_history_take_a_group():
    assert parse("status prod", HOSTS, 20, GROUPS) == Command("status", groups=("prod",))
    assert parse("history dr", HOSTS, 20, GROUPS) == Command("history", groups=("dr",))


def test_a_ticket_word_is_never_a_host_name():
    """`ticket:x` cannot be mistaken for a host (':' is not in a DNS label), whatever follows the colon."""
    command = parse("host01 TICKET:host02", HOSTS, 20)
    assert command.hosts == ("host01",) and command.ticket == "host02"
