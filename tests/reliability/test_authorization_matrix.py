"""The authorization matrix, cell by cell: who may start, decide, confirm and cancel, and what a refusal leaves.

Most cells are engine-level (real SQLite, the fake file-backed steps of tests/support, the real
ApprovalPolicy with static user groups); a few go through Slack (signed HTTP to the real bot). Each cell's
name is its test id: ``<what>/<who>/<action> -> <outcome>``.

The README's "Who may do what" table, compared with what the code does (see the report for mismatches):

| action | README | cells |
|---|---|---|
| start / check | slack.requesters (users or groups); refused at load when empty; `["anyone"]` lets everyone | test_who_may_start, test_empty_requesters_refused_at_load |
| approve / deny an approval | slack.approvers; not the requester unless allow_self_approval; min_approvals people | test_approval_cell, test_self_approval_cell, test_min_approvals_cell |
| one person, several accounts | counted once; the requester's other accounts are the requester; unknown (Slack down): refused | test_two_accounts_cell, test_slack_cells_two_accounts_one_person, test_slack_cell_identity_unknown |
| confirm snapshot / console | the requester, requesters, approvers | test_confirmation_cell |
| cancel | the requester or an approver (and `cli:` at the terminal) | test_cancel_cell |
| second click on a decided request | nobody; nothing changes; "already ..." | test_closed_request_cell, test_min_approvals_cell |
| expiry | the run fails; nothing more is changed | test_expiry_cell |
| what a grant allows | exactly the change the request showed; a change that moved is asked again | test_binding_cell |
| another workspace, organization or app | nobody; ephemeral refusal; a click on an open request audited | tests/slack/test_front_door.py (test_a_command_from_elsewhere_starts_nothing, test_a_click_not_on_the_requests_message_decides_nothing), test_hostile_input.py::test_requests_from_elsewhere_change_nothing |
| outside slack.channel (DMs only with allow_direct_messages) | nobody | the same, and test_direct_messages_are_taken_when_configured |
| a click off the request's message | nobody; audited as approval.refused | test_a_click_not_on_the_requests_message_decides_nothing |
| the same request again | nobody; 200, no answer, request.refused | tests/slack/test_front_door.py (replay, copies, retry), test_hostile_input.py::test_forged_stale_and_replayed_requests |
"""

from __future__ import annotations

import asyncio
from collections import Counter

import pytest

from bot.core.config import ConfigError, load_config
from bot.core.models import ApprovalState, RunState
from bot.engine.approvals import ApprovalPolicy, StaticGroups, StaticIdentities
from bot.engine.engine import Engine, Reply
from bot.store.store import Store
from sandbox.slack_state import APPROVER as S_APPROVER
from sandbox.slack_state import APPROVER_ALT as S_APPROVER_ALT
from sandbox.slack_state import OPS_CHANNEL
from sandbox.slack_state import REQUESTER_ADMIN as S_REQUESTER_ADMIN
from tests.reliability.results import record
from tests.slack import conftest as slack_conftest
from tests.support.configs import APPROVER, APPROVER2, GROUP, GROUP_MEMBER, OUTSIDER, REQUESTER, write_config
from tests.support.fake_steps import FileHost, FileStep, ItemsStep
from tests.support.waiting import eventually

slack_bot = slack_conftest.slack_bot  # the Slack harness fixture of tests/slack, used here too

OTHER_REQUESTER = "U0REQUESTR2"  # listed in slack.requesters, did not start the run
REQ_GROUP = "S0REQUESTRS"  # a user group listed in slack.requesters
REQ_MEMBER = "U0REQMEMBER"  # a member of REQ_GROUP
CLI = "cli:operator"  # the person at the terminal, as the terminal records them
REQ_ADMIN = "W0REQADMIN"  # the requester's admin account: another account, the same person
A1_ALT = "W0APPROVER1"  # APPROVER's second account
IDENTITIES = {REQ_ADMIN: REQUESTER, A1_ALT: APPROVER}  # account -> person (Slack: users.info)

PEOPLE = {
    "requester-of-run": REQUESTER,
    "other-requester": OTHER_REQUESTER,
    "requester-group-member": REQ_MEMBER,
    "approver-listed": APPROVER,
    "approver-group-member": GROUP_MEMBER,
    "outsider": OUTSIDER,
    "cli-user": CLI,
}
APPROVAL_GATES = ("STARTTLS", "install", "reboot", "pending reboot")
CONFIRMATION_GATES = ("snapshot", "STARTTLS console")
JOIN_TIMEOUT = 60  # the engine finishing its runs: seconds on an idle machine, many more on a busy one
CELLS: Counter[str] = Counter()  # cells run, per table (written to .results/authorization_matrix.json)


def requesters_line(requesters: list[str]) -> str:
    return "requesters = [" + ", ".join(f'"{r}"' for r in requesters) + "]"


# -- a run waiting at a gate -----------------------------------------------------------------------------


class Bench:
    """One engine, one run of alpha -> gated (asks `gate`) -> omega, waiting for the gate's request."""

    def __init__(self, engine: Engine, run_id: str, directory):
        self.engine, self.run_id, self.directory = engine, run_id, directory
        # The test reads through its own connection: the engine's connection, read from this thread, would
        # show a transaction of the engine's store thread half-way (e.g. the request without its audit event).
        self.store = Store(engine.store.path)

    @classmethod
    async def open(
        cls,
        tmp_path,
        make_config,
        *,
        gate: str = "STARTTLS",
        requester: str = REQUESTER,
        requesters: list[str] | None = None,
        approvers: list[str] | None = None,
        slack: str = "",
        hosts: tuple[str, ...] = ("host01",),
        wait: bool = True,
    ) -> Bench:
        requesters = [REQUESTER, OTHER_REQUESTER, REQ_GROUP] if requesters is None else requesters
        config = make_config(slack=f"{requesters_line(requesters)}\n{slack}", approvers=approvers)
        store = Store(config.database.path)
        plan = {
            "alpha": FileStep("alpha", tmp_path),
            "gated": FileStep("gated", tmp_path, gate),
            "omega": FileStep("omega", tmp_path),
        }
        groups = StaticGroups({GROUP: {GROUP_MEMBER}, REQ_GROUP: {REQ_MEMBER}})
        policy = ApprovalPolicy(config.slack, groups, StaticIdentities(IDENTITIES))
        engine = Engine(store, config, plan, policy=policy, approval_poll_seconds=0.05)
        runs = await engine.submit(list(hosts), requester)
        bench = cls(engine, runs[0].id, tmp_path)
        bench.runs = [r.id for r in runs]
        if wait:
            await eventually(lambda: bench.open_request() is not None, interval=0.01, what="the gate's request")
        return bench

    def open_request(self):
        return next((a for a in self.store.approvals(self.run_id) if a.state is ApprovalState.open), None)

    def request(self):
        return self.store.approvals(self.run_id)[-1]

    def run(self):
        return self.store.get_run(self.run_id)

    def people_events(self) -> list[tuple[str, str]]:
        """Decisions and refusals in the audit trail, in order: (event, actor)."""
        kinds = ("approval.granted", "approval.denied", "approval.refused")
        return [(e.event, e.actor) for e in self.store.audit_events(self.run_id) if e.event in kinds]

    def applied(self, host: str = "host01") -> list[str]:
        return FileHost(self.directory, host).applies()

    async def settle(self) -> None:
        """Let the engine act on what was decided: the run ends, or keeps waiting."""
        # Every decision was awaited (its reply is the positive signal) and is in the store, so which way
        # the run goes is known now; the short settle only gives a run that should keep waiting the chance
        # to wrongly move on before final_state() checks it did not.
        await asyncio.sleep(0.06)
        if not self.run().state.active or self.open_request() is None:
            await asyncio.wait_for(self.engine.join(), JOIN_TIMEOUT)

    async def close(self) -> None:
        for run_id in getattr(self, "runs", [self.run_id]):
            if self.store.get_run(run_id).state.active:
                await self.engine.cancel(run_id, "cli:cleanup")
        await asyncio.wait_for(self.engine.join(), JOIN_TIMEOUT)
        await self.engine.stop()
        self.engine.store.close()
        self.store.close()


@pytest.fixture
async def bench(tmp_path, make_config):
    benches: list[Bench] = []

    async def open_(**kwargs) -> Bench:
        b = await Bench.open(tmp_path, make_config, **kwargs)
        benches.append(b)
        return b

    yield open_
    for b in benches:
        await b.close()


def outcome(reply: Reply) -> str:
    """What a click did, in the words of the matrix."""
    text = reply.message
    for prefix, name in [
        ("Not accepted:", "refused"),
        ("You already approved", "duplicate"),
        ("Approval recorded", "recorded"),
        ("There is no approval", "unknown"),
    ]:
        if text.startswith(prefix):
            return name
    if "is already" in text:
        return "closed"
    if " approved for " in text or " confirmed for " in text:
        return "granted"
    if " denied for " in text:
        return "denied"
    raise AssertionError(f"unexpected reply {text!r}")


EVENT_OF = {"granted": "approval.granted", "recorded": "approval.granted", "denied": "approval.denied"}


async def play(b: Bench, clicks: list[tuple[str, str]], outcomes: list[str]) -> None:
    """Click in order; each click has its outcome; the audit holds exactly the decisions and refusals."""
    request = b.request()
    got = [outcome(await b.engine.decide(request.id, user, decision)) for user, decision in clicks]
    assert got == outcomes
    expected_events = []
    for (user, _), result in zip(clicks, outcomes, strict=True):
        if result == "refused":
            expected_events.append(("approval.refused", user))
        elif result in EVENT_OF:
            expected_events.append((EVENT_OF[result], user))
    assert b.people_events() == expected_events
    # one decision per person: their latest counted one (the audit keeps every click)
    counted = {u: d for (u, d), r in zip(clicks, outcomes, strict=True) if r in ("granted", "recorded", "denied")}
    assert {d.user: d.decision for d in b.store.get_approval(request.id).decisions} == counted


async def final_state(b: Bench, state: ApprovalState) -> None:
    """The request's final state, and what the run did about it."""
    await b.settle()
    assert b.store.get_approval(b.request().id).state is state
    run = b.run()
    if state is ApprovalState.granted:
        assert run.state is RunState.succeeded, run.result
        assert b.applied() == ["alpha", "gated", "omega"]
    elif state is ApprovalState.denied:
        assert run.state is RunState.denied and "denied by" in run.result
        assert b.applied() == ["alpha"]  # the gated step never applied
    else:
        assert run.state is RunState.waiting_approval
        assert b.applied() == ["alpha"]


# -- who may start ---------------------------------------------------------------------------------------

START_CELLS = [
    pytest.param([REQUESTER], REQUESTER, True, id="requesters=[user]/listed-user -> allowed"),
    pytest.param([REQUESTER], OUTSIDER, False, id="requesters=[user]/not-listed -> refused"),
    pytest.param([REQUESTER], APPROVER, False, id="requesters=[user]/approver-not-listed -> refused"),
    pytest.param([REQ_GROUP], REQ_MEMBER, True, id="requesters=[group]/group-member -> allowed"),
    pytest.param([REQ_GROUP], OUTSIDER, False, id="requesters=[group]/not-a-member -> refused"),
    pytest.param([REQ_GROUP], GROUP_MEMBER, False, id="requesters=[group]/member-of-another-group -> refused"),
    pytest.param([REQUESTER, REQ_GROUP], REQ_MEMBER, True, id="requesters=[user,group]/group-member -> allowed"),
    pytest.param(["anyone"], OUTSIDER, True, id="requesters=[anyone]/outsider -> allowed"),
    pytest.param(["anyone"], "W0ENTERPRS", True, id="requesters=[anyone]/enterprise-user -> allowed"),
]


@pytest.mark.parametrize(("requesters", "user", "allowed"), START_CELLS)
async def test_who_may_start(make_config, requesters, user, allowed):
    CELLS["start"] += 1
    config = make_config(slack=requesters_line(requesters))
    policy = ApprovalPolicy(config.slack, StaticGroups({GROUP: {GROUP_MEMBER}, REQ_GROUP: {REQ_MEMBER}}))
    verdict = await policy.may_request(user)
    assert verdict.allowed is allowed
    if not allowed:
        assert "not allowed to start upgrades" in verdict.reason and "slack.requesters" in verdict.reason


@pytest.mark.parametrize(
    "line", ["requesters = []", ""], ids=["requesters=[] -> refused at load", "requesters-missing -> refused at load"]
)
def test_empty_requesters_refused_at_load(tmp_path, line):
    """An empty list used to mean anyone; now nobody starts a bot that way by accident."""
    CELLS["start"] += 1
    path = write_config(tmp_path, slack="# requesters")  # "requesters" in slack: no default line is written
    path.write_text(path.read_text().replace("# requesters", line))
    with pytest.raises(ConfigError) as refused:
        load_config(str(path))
    [problem] = refused.value.problems
    assert problem.startswith("slack.requesters: is empty or missing") and 'requesters = ["anyone"]' in problem


# -- approve / deny an approval --------------------------------------------------------------------------

APPROVAL_CELLS = [
    pytest.param(gate, who, decision, result, id=f"approval[{gate}]/{who}/{decision} -> {result}")
    for gate in APPROVAL_GATES
    for who, allowed in [
        ("approver-listed", True),
        ("approver-group-member", True),
        ("requester-of-run", False),
        ("other-requester", False),
        ("requester-group-member", False),
        ("outsider", False),
        ("cli-user", False),
    ]
    for decision in ("approve", "deny")
    for result in [("granted" if decision == "approve" else "denied") if allowed else "refused"]
]


@pytest.mark.parametrize(("gate", "who", "decision", "result"), APPROVAL_CELLS)
async def test_approval_cell(bench, gate, who, decision, result):
    CELLS["approval"] += 1
    b = await bench(gate=gate)
    await play(b, [(PEOPLE[who], decision)], [result])
    state = {"granted": ApprovalState.granted, "denied": ApprovalState.denied}.get(result, ApprovalState.open)
    await final_state(b, state)
    if result == "refused":
        reason = b.store.audit_events(b.run_id)[-1].detail["reason"]
        assert "not an approver" in reason


# -- self-approval ---------------------------------------------------------------------------------------

SELF_CELLS = [
    pytest.param(
        dict(requester=REQUESTER, approvers=[REQUESTER, APPROVER]),
        [(REQUESTER, "approve")],
        ["refused"],
        ApprovalState.open,
        id="self-approval/listed-requester/approve/default -> refused",
    ),
    pytest.param(
        dict(requester=REQUESTER, approvers=[REQUESTER, APPROVER]),
        [(REQUESTER, "deny")],
        ["denied"],
        ApprovalState.denied,
        id="self-approval/listed-requester/deny/default -> denied (README: refused)",
    ),
    pytest.param(
        dict(requester=REQUESTER, approvers=[REQUESTER, APPROVER], slack="allow_self_approval = true"),
        [(REQUESTER, "approve")],
        ["granted"],
        ApprovalState.granted,
        id="self-approval/listed-requester/approve/allowed -> granted",
    ),
    pytest.param(
        dict(requester=GROUP_MEMBER, requesters=[GROUP]),
        [(GROUP_MEMBER, "approve")],
        ["refused"],
        ApprovalState.open,
        id="self-approval/requester-via-group/approve/default -> refused",
    ),
    pytest.param(
        dict(requester=GROUP_MEMBER, requesters=[GROUP], slack="allow_self_approval = true"),
        [(GROUP_MEMBER, "approve")],
        ["granted"],
        ApprovalState.granted,
        id="self-approval/requester-via-group/approve/allowed -> granted",
    ),
    pytest.param(
        dict(approvers=[REQUESTER, APPROVER], slack="allow_self_approval = true\nmin_approvals = 2"),
        [(REQUESTER, "approve"), (APPROVER, "approve")],
        ["recorded", "granted"],
        ApprovalState.granted,
        id="self-approval/min2/self-then-other/allowed -> recorded, granted",
    ),
    pytest.param(
        dict(approvers=[REQUESTER, APPROVER, APPROVER2], slack="min_approvals = 2"),
        [(REQUESTER, "approve"), (APPROVER, "approve"), (APPROVER2, "approve")],
        ["refused", "recorded", "granted"],
        ApprovalState.granted,
        id="self-approval/min2/self-then-two-others/default -> refused, recorded, granted",
    ),
    pytest.param(
        dict(approvers=[REQ_ADMIN, APPROVER, APPROVER2], slack="min_approvals = 2"),
        [(REQ_ADMIN, "approve"), (APPROVER, "approve")],
        ["refused", "recorded"],
        ApprovalState.open,
        id="self-approval/min2/requester-admin-account-plus-one/default -> refused, recorded, stays open",
    ),
]


@pytest.mark.parametrize(("setup", "clicks", "outcomes", "state"), SELF_CELLS)
async def test_self_approval_cell(bench, setup, clicks, outcomes, state):
    CELLS["self_approval"] += 1
    b = await bench(**setup)
    await play(b, clicks, outcomes)
    await final_state(b, state)
    for event in b.store.audit_events(b.run_id):
        if event.event == "approval.refused":
            assert "approving your own run is not allowed" in event.detail["reason"]


# -- one person, several accounts ------------------------------------------------------------------------

A1, A2, GM = APPROVER, APPROVER2, GROUP_MEMBER
TWO_ACCOUNT_CELLS = [
    pytest.param(
        [(A1, "approve"), (A1_ALT, "approve")],
        ["recorded", "duplicate"],
        ApprovalState.open,
        id="min=2/two-accounts-of-one-approver -> recorded, duplicate, stays open",
    ),
    pytest.param(
        [(A1, "approve"), (A1_ALT, "approve"), (A2, "approve")],
        ["recorded", "duplicate", "granted"],
        ApprovalState.granted,
        id="min=2/two-accounts-of-one-approver-then-another-person -> granted",
    ),
    pytest.param(
        [(A1_ALT, "approve"), (A1, "deny")],
        ["recorded", "denied"],
        ApprovalState.denied,
        id="min=2/one-person-approves-then-denies-from-another-account -> denied",
    ),
]


@pytest.mark.parametrize(("clicks", "outcomes", "state"), TWO_ACCOUNT_CELLS)
async def test_two_accounts_cell(bench, clicks, outcomes, state):
    CELLS["two_accounts"] += 1
    b = await bench(approvers=[APPROVER, A1_ALT, APPROVER2], slack="min_approvals = 2")
    await play(b, clicks, outcomes)
    await final_state(b, state)
    for event in b.store.audit_events(b.run_id):
        if event.event == "approval.granted":
            assert event.detail["person"] == IDENTITIES.get(event.actor, event.actor)


# -- min_approvals ---------------------------------------------------------------------------------------

MIN_CELLS = [
    pytest.param(1, [(A1, "approve")], ["granted"], ApprovalState.granted, id="min=1/one-approver -> granted"),
    pytest.param(
        2,
        [(A1, "approve"), (A1, "approve"), (A2, "approve")],
        ["recorded", "duplicate", "granted"],
        ApprovalState.granted,
        id="min=2/same-approver-twice-then-another -> recorded, duplicate, granted",
    ),
    pytest.param(
        2,
        [(A1, "approve"), (GM, "approve")],
        ["recorded", "granted"],
        ApprovalState.granted,
        id="min=2/listed-plus-group-member -> granted",
    ),
    pytest.param(
        2,
        [(A1, "approve"), (OUTSIDER, "approve"), (A2, "approve")],
        ["recorded", "refused", "granted"],
        ApprovalState.granted,
        id="min=2/outsider-does-not-count -> recorded, refused, granted",
    ),
    pytest.param(
        2,
        [(A1, "approve"), (A2, "deny")],
        ["recorded", "denied"],
        ApprovalState.denied,
        id="min=2/approve-then-deny -> denied",
    ),
    pytest.param(
        2,
        [(A1, "approve"), (A1, "deny")],
        ["recorded", "denied"],
        ApprovalState.denied,
        id="min=2/approver-changes-mind-to-deny -> denied",
    ),
    pytest.param(
        3,
        [(A1, "approve"), (A2, "approve"), (A1, "approve"), (GM, "approve")],
        ["recorded", "recorded", "duplicate", "granted"],
        ApprovalState.granted,
        id="min=3/three-distinct-with-a-duplicate -> granted",
    ),
    pytest.param(
        3,
        [(A1, "approve"), (A2, "approve")],
        ["recorded", "recorded"],
        ApprovalState.open,
        id="min=3/two-of-three -> stays open",
    ),
    pytest.param(
        3,
        [(A1, "approve"), (A1, "approve"), (A1, "approve")],
        ["recorded", "duplicate", "duplicate"],
        ApprovalState.open,
        id="min=3/one-approver-three-times -> counts once, stays open",
    ),
    pytest.param(
        1,
        [(A1, "approve"), (A2, "approve"), (A2, "deny")],
        ["granted", "closed", "closed"],
        ApprovalState.granted,
        id="min=1/clicks-after-grant -> already granted, nothing changes",
    ),
    pytest.param(
        1,
        [(A1, "deny"), (A2, "approve"), (OUTSIDER, "approve")],
        ["denied", "closed", "closed"],
        ApprovalState.denied,
        id="min=1/clicks-after-deny -> already denied, nothing changes",
    ),
]


@pytest.mark.parametrize(("minimum", "clicks", "outcomes", "state"), MIN_CELLS)
async def test_min_approvals_cell(bench, minimum, clicks, outcomes, state):
    CELLS["min_approvals"] += 1
    b = await bench(slack=f"min_approvals = {minimum}")
    assert b.request().min_approvals == minimum
    await play(b, clicks, outcomes)
    await final_state(b, state)


@pytest.mark.parametrize("gate", CONFIRMATION_GATES)
async def test_min_approvals_does_not_apply_to_confirmations(bench, gate):
    """confirmation[gate]/min=3/requester-once -> confirmed (a confirmation needs one person)"""
    CELLS["min_approvals"] += 1
    b = await bench(gate=gate, slack="min_approvals = 3")
    assert b.request().min_approvals == 1
    await play(b, [(REQUESTER, "approve")], ["granted"])
    await final_state(b, ApprovalState.granted)


# -- confirmations (snapshot taken, console change done) -------------------------------------------------

CONFIRMATION_CELLS = [
    pytest.param(gate, who, decision, requesters, result, id=f"confirmation[{gate}]/{label}/{decision} -> {result}")
    for gate in CONFIRMATION_GATES
    for who, label, requesters, allowed in [
        ("requester-of-run", "requester-of-run", None, True),
        ("other-requester", "other-requester", None, True),
        ("requester-group-member", "requester-group-member", None, True),
        ("approver-listed", "approver-listed", None, True),
        ("approver-group-member", "approver-group-member", None, True),
        ("outsider", "outsider", None, False),
        ("cli-user", "cli-user", None, False),
        ("outsider", "outsider-when-requesters-anyone", ["anyone"], False),
    ]
    for decision in ("approve", "deny")
    for result in [("confirmed" if decision == "approve" else "denied") if allowed else "refused"]
]


@pytest.mark.parametrize(("gate", "who", "decision", "requesters", "result"), CONFIRMATION_CELLS)
async def test_confirmation_cell(bench, gate, who, decision, requesters, result):
    CELLS["confirmation"] += 1
    b = await bench(gate=gate, requesters=requesters)
    await play(b, [(PEOPLE[who], decision)], ["granted" if result == "confirmed" else result])
    state = {"confirmed": ApprovalState.granted, "denied": ApprovalState.denied}.get(result, ApprovalState.open)
    await final_state(b, state)
    if result == "refused":
        assert "may confirm this" in b.store.audit_events(b.run_id)[-1].detail["reason"]


# -- cancel ----------------------------------------------------------------------------------------------

CANCEL_CELLS = [
    pytest.param(who, allowed, id=f"cancel/waiting-run/{who} -> {'cancelled' if allowed else 'refused'}")
    for who, allowed in [
        ("requester-of-run", True),
        ("approver-listed", True),
        ("approver-group-member", True),
        ("cli-user", True),
        ("outsider", False),
        ("other-requester", False),
        ("requester-group-member", False),
    ]
]


@pytest.mark.parametrize(("who", "allowed"), CANCEL_CELLS)
async def test_cancel_cell(bench, who, allowed):
    CELLS["cancel"] += 1
    b = await bench()
    before = len(b.store.audit_events(b.run_id))
    reply = await b.engine.cancel(b.run_id, PEOPLE[who])
    assert reply.ok is allowed, reply.message
    if allowed:
        await asyncio.wait_for(b.engine.join(), JOIN_TIMEOUT)
        run = b.run()
        # the cause, then what the run had changed by then (alpha applied; the gated step never did)
        assert run.state is RunState.cancelled and run.result == f"cancelled by {PEOPLE[who]}\nChanged: alpha applied"
        assert b.request().state is ApprovalState.cancelled
        assert b.store.audit_events(b.run_id)[-1].event == "run.cancelled"
    else:
        assert reply.message.startswith("Not accepted: only the person who started the run or an approver")
        # the refusal is the reply, already here; the short settle lets a wrongly started cancel show
        await asyncio.sleep(0.06)
        run = b.run()
        assert run.state is RunState.waiting_approval and run.cancel_requested_by is None
        assert len(b.store.audit_events(b.run_id)) == before  # a refused cancel is not audited (README: ephemeral)
    assert b.applied() == ["alpha"]


@pytest.mark.parametrize(
    ("who", "allowed"),
    [
        pytest.param("requester-of-run", True, id="cancel/queued-run/requester-of-run -> cancelled before start"),
        pytest.param("outsider", False, id="cancel/queued-run/outsider -> refused"),
    ],
)
async def test_cancel_queued_cell(bench, who, allowed):
    """host02 waits in the batch behind host01 (waiting for approval)."""
    CELLS["cancel"] += 1
    b = await bench(hosts=("host01", "host02"))
    queued = b.runs[1]
    assert b.store.get_run(queued).state is RunState.queued
    reply = await b.engine.cancel(queued, PEOPLE[who])
    assert reply.ok is allowed
    state = b.store.get_run(queued).state
    assert state is (RunState.cancelled if allowed else RunState.queued)
    if allowed:
        assert "cancelled before it started" in reply.message
    assert FileHost(b.directory, "host02").applies() == []


@pytest.mark.parametrize(
    ("ending", "who"),
    [
        pytest.param(ending, who, id=f"cancel/{ending}-run/{who} -> already ended")
        for ending in ("succeeded", "denied", "cancelled")
        for who in ("requester-of-run", "approver-listed", "outsider")
    ],
)
async def test_cancel_finished_run_cell(bench, ending, who):
    CELLS["cancel"] += 1
    b = await bench()
    request = b.request()
    if ending == "succeeded":
        await b.engine.decide(request.id, APPROVER, "approve")
    elif ending == "denied":  # a person refused the gate: the run ends denied
        await b.engine.decide(request.id, APPROVER, "deny")
    else:
        await b.engine.cancel(b.run_id, REQUESTER)
    await asyncio.wait_for(b.engine.join(), JOIN_TIMEOUT)
    run, events = b.run(), len(b.store.audit_events())
    assert run.state.value == ending
    reply = await b.engine.cancel(b.run_id, PEOPLE[who])
    assert not reply.ok and f"already ended ({ending})" in reply.message
    assert b.run() == run and len(b.store.audit_events()) == events


async def test_cancel_unknown_run_cell(bench):
    """cancel/unknown-run/approver-listed -> there is no run"""
    CELLS["cancel"] += 1
    b = await bench()
    reply = await b.engine.cancel("run-00000000", APPROVER)
    assert not reply.ok and reply.message.startswith("There is no run")


# -- decisions on closed requests: cancelled runs, finished runs, expiry ---------------------------------

CLOSED_CELLS = [
    pytest.param(gate, who, decision, id=f"closed[cancelled run, {gate}]/{who}/{decision} -> already cancelled")
    for gate in ("STARTTLS", "snapshot")
    for who in ("approver-listed", "requester-of-run", "outsider")
    for decision in ("approve", "deny")
]


@pytest.mark.parametrize(("gate", "who", "decision"), CLOSED_CELLS)
async def test_closed_request_cell(bench, gate, who, decision):
    CELLS["closed_request"] += 1
    b = await bench(gate=gate)
    request = b.request()
    assert (await b.engine.cancel(b.run_id, REQUESTER)).ok
    await asyncio.wait_for(b.engine.join(), JOIN_TIMEOUT)
    events = len(b.store.audit_events())
    reply = await b.engine.decide(request.id, PEOPLE[who], decision)
    assert not reply.ok and "is already cancelled" in reply.message and outcome(reply) == "closed"
    assert b.store.get_approval(request.id).decisions == []
    assert len(b.store.audit_events()) == events  # not even a refusal is recorded
    assert b.run().state is RunState.cancelled and b.applied() == ["alpha"]


EXPIRY_CELLS = [
    pytest.param(who, decision, id=f"expiry/after-expired/{who}/{decision} -> already expired")
    for who, decision in [
        ("approver-listed", "approve"),
        ("approver-listed", "deny"),
        ("approver-group-member", "approve"),
        ("outsider", "approve"),
        ("requester-of-run", "approve"),
    ]
]


@pytest.mark.parametrize(("who", "decision"), EXPIRY_CELLS)
async def test_expiry_cell(bench, who, decision):
    CELLS["expiry"] += 1
    b = await bench(slack="approval_timeout_minutes = 0.005")  # 0.3 s
    request = b.request()
    await asyncio.wait_for(b.engine.join(), JOIN_TIMEOUT)
    assert b.store.get_approval(request.id).state is ApprovalState.expired
    run, events = b.run(), len(b.store.audit_events())
    assert run.state is RunState.failed and "expired" in run.result
    reply = await b.engine.decide(request.id, PEOPLE[who], decision)
    assert not reply.ok and "is already expired" in reply.message
    assert b.store.get_approval(request.id).decisions == []
    assert b.run() == run and len(b.store.audit_events()) == events and b.applied() == ["alpha"]


async def test_expiry_click_after_deadline_before_the_engine_noticed(bench):
    """expiry/after-deadline-not-yet-marked/approver-listed/approve -> refused (DEFECT: granted today).

    The request's deadline has passed, but the engine has not marked it expired yet (here: the bot was
    stopped, and the click comes before the resumed run reaches its gate). Engine.decide only checks the
    stored state, so the late click is recorded as a grant and the resumed run applies the gated step.
    """
    CELLS["expiry"] += 1
    b = await bench(slack="approval_timeout_minutes = 0.01")  # 0.6 s
    request = b.request()
    await b.engine.stop()  # the bot goes down; the run stays waiting in the database
    await asyncio.sleep(0.7)  # the deadline passes while nobody watches
    assert b.store.get_approval(request.id).state is ApprovalState.open
    config = b.engine.config
    restarted = Engine(
        b.engine.store, config, b.engine.steps, policy=b.engine.policy, approval_poll_seconds=0.05
    )  # the bot comes back: a click arrives first
    b.engine = restarted
    reply = await restarted.decide(request.id, APPROVER, "approve")
    await restarted.start()
    await asyncio.wait_for(restarted.join(), JOIN_TIMEOUT)
    assert not reply.ok, f"a click after the deadline was accepted: {reply.message!r}"
    assert b.store.get_approval(request.id).state is ApprovalState.expired
    assert b.applied() == ["alpha"]


# -- through Slack: the same policy, end to end ------------------------------------------------------------


async def answer(h, result) -> str:
    """The ephemeral reply the bot sent through the request's response_url."""
    body = await h.reply(result)
    assert body.get("response_type") == "ephemeral"
    return body["text"]


def slack_request(h, run_id: str, gate: str):
    for approval in h.store.approvals(run_id):
        if approval.gate == gate and approval.state is ApprovalState.open:
            found = h.slack.latest_button(OPS_CHANNEL, "approve", value=approval.id)
            if found:
                return approval, found[0].ts
    return None


async def test_slack_cells_requesters_approvers_confirmations_cancel(slack_bot):
    """Through Slack (requesters = [requester], approvers = [approver]), in one run:

    start/not-listed -> refused; start/listed -> queued; approval/outsider -> refused (audited);
    approval/requester-of-run -> refused (audited); approval/approver -> granted;
    confirmation[console]/outsider -> refused; confirmation[console]/requester-of-run -> confirmed;
    cancel/outsider (button) -> refused; cancel/outsider (`cancel RUN`) -> refused;
    cancel/requester-of-run (button) -> cancelled.
    """
    from sandbox.slack_state import APPROVER as S_APPROVER
    from sandbox.slack_state import OUTSIDER as S_OUTSIDER
    from sandbox.slack_state import REQUESTER as S_REQUESTER

    h = await slack_bot("physical", ws1=False, extra=f'slack: requesters = ["{S_REQUESTER}"]')
    cells = 0

    async def command(user, text):
        nonlocal cells
        cells += 1
        return await answer(h, await h.sender.send_slash_command(user, text))

    async def click(user, action, value, ts):
        nonlocal cells
        cells += 1
        return await answer(h, await h.sender.click_button(user, action, value=value, message_ts=ts))

    assert (await command(S_OUTSIDER, "host01")).startswith("Not started: you are not allowed")
    assert (await command(S_OUTSIDER, "check host01")).startswith("Not started: you are not allowed")
    assert h.runs() == []
    assert "queued" in await command(S_REQUESTER, "host01")
    [run] = h.runs()
    request, ts = await eventually(lambda: slack_request(h, run.id, "STARTTLS"), what="the STARTTLS request")
    assert "not an approver" in await click(S_OUTSIDER, "approve", request.id, ts)
    assert "not an approver" in await click(S_REQUESTER, "approve", request.id, ts)
    assert "not an approver" in await click(S_OUTSIDER, "deny", request.id, ts)
    refused = [(e.actor, e.event) for e in h.store.audit_events(run.id) if e.event == "approval.refused"]
    assert [actor for actor, _ in refused] == [S_OUTSIDER, S_REQUESTER, S_OUTSIDER]
    assert h.store.get_approval(request.id).state is ApprovalState.open
    assert "approved for host01" in await click(S_APPROVER, "approve", request.id, ts)
    console, ts = await eventually(lambda: slack_request(h, run.id, "STARTTLS console"), what="the console request")
    assert "may confirm" in await click(S_OUTSIDER, "approve", console.id, ts)
    assert h.store.get_approval(console.id).state is ApprovalState.open
    assert "confirmed for host01" in await click(S_REQUESTER, "approve", console.id, ts)
    card, _ = h.slack.latest_button(OPS_CHANNEL, "cancel_run", value=run.id)
    assert "only the person who started the run or an approver" in await click(
        S_OUTSIDER, "cancel_run", run.id, card.ts
    )
    assert "only the person who started the run or an approver" in await command(S_OUTSIDER, f"cancel {run.id}")
    assert h.store.get_run(run.id).cancel_requested_by is None
    assert (await click(S_REQUESTER, "cancel_run", run.id, card.ts)).startswith("Cancelling run")
    await eventually(lambda: not h.store.get_run(run.id).state.active, timeout=60, what="the run to stop")
    assert h.store.get_run(run.id).state is RunState.cancelled
    CELLS["slack"] += cells


async def test_slack_cells_requesters_group(slack_bot):
    """requesters = [a Slack user group]: start/group-member -> queued; start/requester-not-in-group ->
    refused; and with the group's members read from Slack (usergroups.users.list)."""
    from sandbox.slack_state import GROUP as S_GROUP
    from sandbox.slack_state import GROUP_MEMBER as S_GROUP_MEMBER
    from sandbox.slack_state import REQUESTER as S_REQUESTER

    h = await slack_bot("physical", ws1=False, extra=f'slack: requesters = ["{S_GROUP}"]')
    assert (await answer(h, await h.sender.send_slash_command(S_REQUESTER, "host01"))).startswith("Not started")
    assert h.runs() == []
    assert "queued" in await answer(h, await h.sender.send_slash_command(S_GROUP_MEMBER, "check host01"))
    assert [r.requester for r in h.runs()] == [S_GROUP_MEMBER]
    assert any(c.method == "usergroups.users.list" for c in h.slack.calls)
    CELLS["slack"] += 2


async def test_slack_cell_anyone_means_anyone(slack_bot):
    """requesters = ["anyone"] (the explicit opt-in): start/outsider -> queued."""
    from sandbox.slack_state import OUTSIDER as S_OUTSIDER

    h = await slack_bot("physical", ws1=False, extra='slack: requesters = ["anyone"]')
    assert "queued" in await answer(h, await h.sender.send_slash_command(S_OUTSIDER, "check host01"))
    assert [r.requester for r in h.runs()] == [S_OUTSIDER]
    CELLS["slack"] += 1


def two_account_config(*more: str) -> str:
    """requesters = [requester]; approvers: two accounts of one approver, the requester's admin account, another."""
    from sandbox.slack_state import APPROVER2 as S_APPROVER2
    from sandbox.slack_state import REQUESTER as S_REQUESTER

    approvers = [S_APPROVER, S_APPROVER_ALT, S_REQUESTER_ADMIN, S_APPROVER2, *more]
    return "\n".join(
        [
            f'slack: requesters = ["{S_REQUESTER}"]',
            "slack: approvers = [" + ", ".join(f'"{a}"' for a in approvers) + "]",
            "slack: min_approvals = 2",
        ]
    )


async def test_slack_cells_two_accounts_one_person(slack_bot):
    """Through Slack, min_approvals = 2, people told apart by users.info (email; Enterprise Grid user id):

    approval/requester's-admin-account (same email) -> refused as self-approval (audited);
    approval/approver -> recorded (1 of 2), still open: the admin account plus one approver is not two people;
    approval/approver's-second-account (same enterprise id) -> "already approved (as another account)", still open;
    approval/another-approver -> granted; approval.granted records each person.
    """
    from sandbox.slack_state import APPROVER2 as S_APPROVER2
    from sandbox.slack_state import REQUESTER as S_REQUESTER

    h = await slack_bot("physical", ws1=False, extra=two_account_config())
    assert "queued" in await answer(h, await h.sender.send_slash_command(S_REQUESTER, "host01"))
    [run] = h.runs()
    request, ts = await eventually(lambda: slack_request(h, run.id, "STARTTLS"), what="the STARTTLS request")

    async def click(user):
        return await answer(h, await h.sender.click_button(user, "approve", value=request.id, message_ts=ts))

    refused = await click(S_REQUESTER_ADMIN)
    assert "you started this run (as <@U0REQUESTER>, another account of yours)" in refused
    assert "approving your own run is not allowed" in refused
    assert (await click(S_APPROVER)).startswith("Approval recorded (1 of 2)")
    assert (await click(S_APPROVER_ALT)).startswith("You already approved this request (as another account)")
    assert h.store.get_approval(request.id).state is ApprovalState.open
    assert [d.user for d in h.store.get_approval(request.id).decisions] == [S_APPROVER]
    assert "approved for host01" in await click(S_APPROVER2)
    assert h.store.get_approval(request.id).state is ApprovalState.granted
    events = [(e.event, e.actor, e.detail) for e in h.store.audit_events(run.id) if e.event.startswith("approval.")]
    people = [(actor, d.get("person")) for event, actor, d in events if event == "approval.granted"]
    assert people == [(S_APPROVER, "enterprise:W0ENTALEX1"), (S_APPROVER2, "email:blake@sandbox.example")]
    assert [(actor, "own run" in d["reason"]) for event, actor, d in events if event == "approval.refused"] == [
        (S_REQUESTER_ADMIN, True)
    ]
    assert any(c.method == "users.info" for c in h.slack.calls)
    CELLS["slack"] += 4


async def test_slack_cell_identity_unknown(slack_bot):
    """approval/approver/users.info failing -> refused "cannot check who you are", audited, still open; once
    Slack answers again -> granted. A deny needs no identity: it is the safe direction."""
    from sandbox.slack_state import REQUESTER as S_REQUESTER

    h = await slack_bot("physical", ws1=False, extra=f'slack: requesters = ["{S_REQUESTER}"]')
    assert "queued" in await answer(h, await h.sender.send_slash_command(S_REQUESTER, "host01"))
    [run] = h.runs()
    request, ts = await eventually(lambda: slack_request(h, run.id, "STARTTLS"), what="the STARTTLS request")
    h.slack.server_errors(1000, 503, methods=["users.info"])
    text = await answer(h, await h.sender.click_button(S_APPROVER, "approve", value=request.id, message_ts=ts))
    assert "cannot check who you are right now" in text and "try again" in text
    [refusal] = [e for e in h.store.audit_events(run.id) if e.event == "approval.refused"]
    assert refusal.actor == S_APPROVER and "cannot check who you are" in refusal.detail["reason"]
    assert h.store.get_approval(request.id).state is ApprovalState.open
    h.slack.clear_faults()
    text = await answer(h, await h.sender.click_button(S_APPROVER, "approve", value=request.id, message_ts=ts))
    assert "approved for host01" in text
    CELLS["slack"] += 2


# -- what a grant allows: the change it showed, nothing that appeared since ---------------------------------

BINDING_CELLS = [
    # (item added while the request is open, decision on each request, applied, request states)
    ("unchanged", ["approve"], ["a"], ["granted"]),
    ("unchanged", ["deny"], [], ["denied"]),
    ("added-while-open", ["approve", "approve"], ["a", "b"], ["superseded", "granted"]),
    ("added-while-open", ["approve", "deny"], [], ["superseded", "denied"]),
]


def nth_open_request(store: Store, run_id: str, n: int):
    """The run's request number ``n`` (from 0) once it is the latest and open."""
    asked = store.approvals(run_id)
    return asked[n] if len(asked) == n + 1 and asked[n].state is ApprovalState.open else None


@pytest.mark.parametrize(
    ("moved", "decisions", "applied", "states"),
    BINDING_CELLS,
    ids=[f"grant/approver/{m}/{'+'.join(d)} -> {'+'.join(s)}" for m, d, _, s in BINDING_CELLS],
)
async def test_binding_cell(tmp_path, make_config, moved, decisions, applied, states):
    config = make_config(slack=requesters_line([REQUESTER]))
    store = Store(config.database.path)
    engine = Engine(store, config, {"items": ItemsStep(tmp_path)}, approval_poll_seconds=0.05)
    host = FileHost(tmp_path, "host01")
    host.set("items", {"a": True})
    [run] = await engine.submit(["host01"], REQUESTER)
    try:
        for n, decision in enumerate(decisions):
            request = await eventually(lambda n=n: nth_open_request(store, run.id, n), what=f"request {n + 1}")
            if moved == "added-while-open" and n == 0:
                host.set("items", {"a": True, "b": True})
            reply = await engine.decide(request.id, APPROVER, decision)
            assert reply.ok, reply.message
        await asyncio.wait_for(engine.join(), JOIN_TIMEOUT)
        assert [a.state.value for a in store.approvals(run.id)] == states
        assert host.applies() == applied
        granted = [e for e in store.audit_events(run.id) if e.event == "approval.granted"]
        assert all(e.detail["digest"] and e.detail["change"]["items"] for e in granted)
    finally:
        await engine.stop()
        store.close()
    CELLS["binding"] += 1


@pytest.fixture(scope="module", autouse=True)
def _write_cell_counts():
    yield
    if CELLS:
        record("authorization_matrix", "cells", {"cells": sum(CELLS.values()), "by_table": dict(CELLS)})
        print(f"\nauthorization matrix: {sum(CELLS.values())} cells {dict(CELLS)}")
