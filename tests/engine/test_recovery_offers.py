"""What an ended run offers (bot.engine.recovery): Retry only after a failure, Revert only when a snapshot was
taken and the host itself changed; and the card shows exactly those buttons."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from bot.core.models import Run, RunState, StepRecord, StepState
from bot.engine.recovery import Offer, offers, snapshot_taken
from bot.slack import messages as msg
from steps.plan import upgrade_plan

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
STEPS = upgrade_plan()
SNAPSHOT = {"name": "idm-upgrade run-0000abcd before connector 19.03.0.1", "id": "snapshot-7", "vm": "host01"}


def a_run(state: RunState, **fields) -> Run:
    return Run(
        id="run-0000abcd",
        host="host01",
        requester="U0REQUEST",
        state=state,
        batch_id="bat-0000abcd",
        plan=list(STEPS),
        created_at=NOW,
        updated_at=NOW,
        **fields,
    )


def record(step: str, state: StepState, applied: int = 0, **facts) -> StepRecord:
    return StepRecord(
        run_id="run-0000abcd", step=step, position=list(STEPS).index(step), state=state, applied=applied, facts=facts
    )


SNAPPED = record("snapshot", StepState.succeeded, applied=1, snapshot=SNAPSHOT)
INSTALL_RAN = record("install", StepState.failed, applied=1, exit_code=1603)
INSTALL_NOT_RUN = record("install", StepState.failed, applied=0)


@pytest.mark.parametrize(
    ("state", "records", "expected"),
    [
        (RunState.failed, [SNAPPED, INSTALL_RAN], [Offer.retry, Offer.revert]),
        (RunState.failed, [SNAPPED, INSTALL_NOT_RUN], [Offer.retry]),  # nothing on the host to undo
        (RunState.failed, [INSTALL_RAN], [Offer.retry]),  # no snapshot to go back to
        (RunState.denied, [SNAPPED, INSTALL_RAN], [Offer.revert]),  # a person refused: no retry
        (RunState.denied, [SNAPPED], []),
        (RunState.succeeded, [SNAPPED, record("install", StepState.succeeded, applied=1)], []),
        (RunState.cancelled, [SNAPPED, INSTALL_RAN], []),
        (RunState.running, [SNAPPED, INSTALL_RAN], []),
    ],
)
def test_what_an_ended_run_offers(state, records, expected):
    assert offers(a_run(state), records, STEPS) == expected


def test_a_run_being_reverted_or_a_check_run_offers_nothing():
    assert offers(a_run(RunState.failed, recovery="revert"), [SNAPPED, INSTALL_RAN], STEPS) == []
    assert offers(a_run(RunState.failed, check_only=True), [INSTALL_RAN], STEPS) == []


def test_the_snapshot_a_person_took_is_marked_manual():
    manual = record(
        "snapshot", StepState.succeeded, applied=1, snapshot={"name": "n", "taken_by": "a person"}, manual=True
    )
    assert snapshot_taken([manual]) == {"name": "n", "taken_by": "a person", "manual": True}
    assert snapshot_taken([SNAPPED]) == SNAPSHOT
    assert snapshot_taken([record("snapshot", StepState.skipped)]) is None  # a physical server


def buttons(card: dict) -> list[tuple[str, str]]:
    return [
        (element["action_id"], element["value"])
        for block in card["blocks"]
        if block["type"] == "actions"
        for element in block["elements"]
    ]


def test_the_card_shows_the_offers_as_buttons_and_an_active_run_only_cancel():
    steps = [SNAPPED, INSTALL_RAN]
    ended = msg.card(
        a_run(RunState.failed, result="install failed"), steps, {}, "19.03.0.1", offers=["retry", "revert"]
    )
    assert buttons(ended) == [("retry_run", "run-0000abcd"), ("revert_run", "run-0000abcd")]
    assert buttons(msg.card(a_run(RunState.failed), steps, {}, "19.03.0.1")) == []
    running = msg.card(a_run(RunState.running), steps, {}, "19.03.0.1", offers=["retry"])
    assert buttons(running) == [("cancel_run", "run-0000abcd")]
