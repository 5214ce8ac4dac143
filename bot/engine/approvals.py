"""Who may start runs, decide approvals and cancel runs.

Principals are Slack user IDs (U…/W…) or user group IDs (S…). Group membership comes from a
``GroupResolver``: static in tests and the terminal, Slack's ``usergroups.users.list`` later.

One person may have several Slack accounts (a U… and a W… id, an admin account). Approvals count
people, not accounts: an ``IdentityResolver`` names the person behind an account (static in tests and
the terminal: the account itself; Slack's ``users.info`` in the bot), and the requester's other accounts
are the requester.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Protocol

from bot.core.config import ANYONE, GroupConfig, SlackConfig
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


def group_named(host_groups: Mapping[str, GroupConfig], host: str) -> tuple[str, GroupConfig] | None:
    """The host group ([groups.NAME]) a host belongs to, with its name; None for a host in no group."""
    return next(((name, group) for name, group in host_groups.items() if host in group.hosts), None)


def approvers_for(slack: SlackConfig, group: GroupConfig | None) -> list[str]:
    """A group's own approvers, else slack.approvers."""
    return group.approvers if group is not None and group.approvers is not None else slack.approvers


def requesters_for(slack: SlackConfig, group: GroupConfig | None) -> list[str]:
    """A group's own requesters, else slack.requesters."""
    return group.requesters if group is not None and group.requesters is not None else slack.requesters


class ApprovalPolicy:
    def __init__(
        self,
        slack: SlackConfig,
        groups: GroupResolver | None = None,
        identities: IdentityResolver | None = None,
        host_groups: Mapping[str, GroupConfig] | None = None,
    ):
        self.slack = slack
        self.groups = groups or StaticGroups()
        self.identities = identities or StaticIdentities()
        # [groups.NAME]: a group's runs are requested by its requesters and decided by its approvers
        self.host_groups = dict(host_groups or {})

    def _group(self, host: str) -> GroupConfig | None:
        found = group_named(self.host_groups, host)
        return found[1] if found else None

    def approvers(self, host: str) -> list[str]:
        return approvers_for(self.slack, self._group(host))

    def requesters(self, host: str) -> list[str]:
        return requesters_for(self.slack, self._group(host))

    async def _in(self, user: str, principals: list[str]) -> bool:
        if user in principals:
            return True
        for principal in principals:
            if principal.startswith("S") and user in await self.groups.members(principal):
                return True
        return False

    async def may_request(self, user: str, hosts: Iterable[str] = ()) -> Verdict:
        """May ``user`` start runs of ``hosts``: each host's group's own requesters, else slack.requesters."""
        lists: dict[str, list[str]] = {}  # the lists that decide, by their config key
        for host in list(hosts) or [""]:
            found = group_named(self.host_groups, host)
            if found is not None and found[1].requesters is not None:
                lists[f"groups.{found[0]}.requesters"] = found[1].requesters
            else:
                lists["slack.requesters"] = self.slack.requesters
        missing = [key for key, who in lists.items() if who != [ANYONE] and not await self._in(user, who)]
        if not missing:
            return Verdict(True)
        groups = [key.split(".")[1] for key in missing if key.startswith("groups.")]
        what = f"upgrades of group {', '.join(groups)}" if len(groups) == len(missing) else "upgrades"
        return Verdict(
            False, f"you are not allowed to start {what}; ask an admin to add you to {' and '.join(missing)}"
        )

    async def may_decide(self, user: str, run: Run, decision: str, gate: str = "") -> Verdict:
        if gate_named(gate).is_confirmation:
            # Saying "I took the snapshot" is a report, not an approval: the requester may give it too.
            if user == run.requester or await self._in(user, [*self.requesters(run.host), *self.approvers(run.host)]):
                return Verdict(True)
            return Verdict(False, "only the person who started the run, a requester or an approver may confirm this")
        if not await self._in(user, self.approvers(run.host)):
            found = group_named(self.host_groups, run.host)
            if found is not None and found[1].approvers is not None:
                where = f"group {found[0]} (groups.{found[0]}.approvers)"
            else:
                where = "idm-upgrade (slack.approvers)"
            return Verdict(False, f"you are not an approver for {where}; the request stays open")
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
        if user == run.requester or user.startswith("cli:") or await self._in(user, self.approvers(run.host)):
            return Verdict(True)
        return Verdict(False, "only the person who started the run or an approver may cancel it")

    async def may_retry(self, user: str, run: Run) -> Verdict:
        """A failed run tried again: its requester or an approver of its host (its group's own, else
        slack.approvers); at the terminal, the operator. Retrying asks every approval again."""
        if user == run.requester or user.startswith("cli:") or await self._in(user, self.approvers(run.host)):
            return Verdict(True)
        return Verdict(False, "only the person who asked for the run or an approver of its host may retry it")
