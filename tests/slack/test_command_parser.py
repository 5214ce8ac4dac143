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
