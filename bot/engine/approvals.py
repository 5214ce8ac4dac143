"""Who may start runs, decide approvals and cancel runs.

Principals are Slack user IDs (U…/W…) or user group IDs (S…). Group membership comes from a
``GroupResolver``: static in tests and the terminal, Slack's ``usergroups.users.list`` later.

One person may have several Slack accounts (a U… and a W… id, an admin account). Approvals count
people, not accounts: an ``IdentityResolver`` names the person behind an account (static in tests and
the terminal: the account itself; Slack's ``users.info`` in the bot), and the requester's other accounts
are the requester.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from bot.core.config import SlackConfig
from bot.core.gates import gate_named
from bot.core.models import Run


class GroupResolver(Protocol):
    async def members(self, group_id: str) -> frozenset[str]: ...


class IdentityUnknown(Exception):
    """The person behind an account cannot be told now (Slack unreachable); nothing may count on a guess."""


class IdentityResolver(Protocol):
    async def person(self, user_id: str) -> str: ...


class StaticIdentities:
    """Each account is its own person, unless ``people`` maps it to another account's person."""

    def __init__(self, people: dict[str, str] | None = None):
        self.people = dict(people or {})

    async def person(self, user_id: str) -> str:
        return self.people.get(user_id, user_id)


class StaticGroups:
    def __init__(self, groups: dict[str, set[str] | frozenset[str]] | None = None):
        self.groups = {gid: frozenset(users) for gid, users in (groups or {}).items()}

    async def members(self, group_id: str) -> frozenset[str]:
        return self.groups.get(group_id, frozenset())


@dataclass(frozen=True)
class Verdict:
    allowed: bool
    reason: str = ""
    person: str | None = None  # who decided, across their accounts; counted once per request


CANNOT_IDENTIFY = (
    "I cannot check who you are right now (Slack's users.info did not answer), so your approval cannot be "
    "counted; try again in a minute. The request stays open"
)


class ApprovalPolicy:
    def __init__(
        self, slack: SlackConfig, groups: GroupResolver | None = None, identities: IdentityResolver | None = None
    ):
        self.slack = slack
        self.groups = groups or StaticGroups()
        self.identities = identities or StaticIdentities()

    async def _in(self, user: str, principals: list[str]) -> bool:
        if user in principals:
            return True
        for principal in principals:
            if principal.startswith("S") and user in await self.groups.members(principal):
                return True
        return False

    async def may_request(self, user: str) -> Verdict:
        if self.slack.anyone_may_request or await self._in(user, self.slack.requesters):
            return Verdict(True)
        return Verdict(False, "you are not allowed to start upgrades; ask an admin to add you to slack.requesters")

    async def may_decide(self, user: str, run: Run, decision: str, gate: str = "") -> Verdict:
        if gate_named(gate).is_confirmation:
            # Saying "I took the snapshot" is a report, not an approval: the requester may give it too.
            if user == run.requester or await self._in(user, [*self.slack.requesters, *self.slack.approvers]):
                return Verdict(True)
            return Verdict(False, "only the person who started the run, a requester or an approver may confirm this")
        if not await self._in(user, self.slack.approvers):
            return Verdict(False, "you are not an approver for idm-upgrade (slack.approvers); the request stays open")
        try:
            person = await self.identities.person(user)
            requester = await self.identities.person(run.requester)
        except IdentityUnknown:
            if decision == "deny":
                return Verdict(True)  # denying is the safe direction: it needs no count
            return Verdict(False, CANNOT_IDENTIFY)
        if decision == "approve" and person == requester and not self.slack.allow_self_approval:
            account = "" if user == run.requester else f" (as <@{run.requester}>, another account of yours)"
            return Verdict(
                False,
                f"you started this run{account}, and approving your own run is not allowed "
                "(slack.allow_self_approval = false); another approver must decide",
            )
        return Verdict(True, person=person)

    async def may_cancel(self, user: str, run: Run) -> Verdict:
        if user == run.requester or user.startswith("cli:") or await self._in(user, self.slack.approvers):
            return Verdict(True)
        return Verdict(False, "only the person who started the run or an approver may cancel it")
