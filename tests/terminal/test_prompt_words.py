"""The words at the terminal's prompt: the change itself, what to type, and evidence as a person reads it."""

from __future__ import annotations

from bot.core.gates import GATES, INSTALL, REBOOT, SNAPSHOT, STARTTLS, STARTTLS_CONSOLE
from bot.terminal.view import at_the_terminal, shown_value


def test_each_approval_asks_for_the_change_itself_and_says_what_to_type():
    assert STARTTLS.prompt("host01") == (
        "Turn STARTTLS off on the AD-over-IWA directories (tenant-wide), before upgrading host01? "
        "(type y to approve, n to deny) [y/N] "
    )
    assert REBOOT.prompt("host01").startswith("Reboot host01 now? (type y to approve, n to deny)")
    assert INSTALL.prompt("host01").startswith("Run the connector installer on host01 now")
    for gate in GATES.values():
        assert not gate.prompt("host01").startswith("Approve "), gate.name  # "Approve STARTTLS" reads as turning it on


def test_a_confirmation_names_its_slack_buttons_as_the_answers_to_type():
    assert SNAPSHOT.prompt("host01") == (
        'Have you taken the snapshot of host01 described above? (type y for "Snapshot taken", '
        'n for "Cannot do it") [y/N] '
    )
    assert '(type y for "Done", n for "Cannot do it")' in STARTTLS_CONSOLE.prompt("host01")


def test_click_in_a_request_is_said_for_the_terminal():
    text = "take a snapshot of VM host01 named 'x', then click Snapshot taken"
    assert (
        at_the_terminal(text, SNAPSHOT)
        == "take a snapshot of VM host01 named 'x', then answer y below (\"Snapshot taken\")"
    )
    assert at_the_terminal("then click *Snapshot taken*", SNAPSHOT) == 'then answer y below ("Snapshot taken")'
    assert at_the_terminal("no button here", SNAPSHOT) == "no button here"


def test_evidence_is_shown_by_name_not_as_raw_json():
    directories = [{"id": "8ac0354d", "name": "corp.example.com", "useStartTls": True}]
    assert shown_value(directories) == "corp.example.com (8ac0354d)"
    verified = {"connector_version": "19.03.0.0", "service": "Running (Auto)"}
    assert shown_value(verified) == "connector version: 19.03.0.0, service: Running (Auto)"


def test_control_characters_from_outside_are_shown_not_obeyed():
    assert shown_value("corp\x1b[2J\x07.example.com") == "corp\\x1b[2J\\x07.example.com"
    assert shown_value([{"id": "1", "name": "evil\x1b]0;title\x07"}]) == "evil\\x1b]0;title\\x07 (1)"
