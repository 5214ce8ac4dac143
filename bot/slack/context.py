"""What the Slack handlers need, in one place: the engine, the policy, and read-only views of runs."""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from slack_sdk.web.async_client import AsyncWebClient

from bot.core.config import Config
from bot.core.models import Run, RunState
from bot.core.windows import MaintenanceWindow, window_for
from bot.engine.approvals import ApprovalPolicy, IdentityUnknown
from bot.engine.engine import Engine
from bot.slack.escape import escape
from bot.slack.intake import Handling, Intake
from bot.slack.messages import MARKS, RUN_MARKS, people, state_words, ticket_note, with_mentions

if TYPE_CHECKING:
    from slack_bolt.async_app import AsyncBoltContext

    from bot.slack.home_tab import HomeTab


class SlackGroups:
    """Slack user group members (usergroups.users.list), cached briefly so clicks stay fast."""

    def __init__(self, client: AsyncWebClient, ttl_seconds: float = 60.0):
        self.client, self.ttl = client, ttl_seconds
        self._cache: dict[str, tuple[float, frozenset[str]]] = {}

    async def members(self, group_id: str) -> frozenset[str]:
        cached = self._cache.get(group_id)
        if cached and time.monotonic() - cached[0] < self.ttl:
            return cached[1]
        try:
            response = await self.client.usergroups_users_list(usergroup=group_id)
            users: frozenset[str] = frozenset(response.get("users", []))
        except Exception:
            # Slack unreachable: keep the last known members rather than locking everyone out or in.
            return cached[1] if cached else frozenset()
        self._cache[group_id] = (time.monotonic(), users)
        return users


_SLACK_USER = re.compile(r"^[UW][A-Z0-9]{2,}$")


class SlackIdentities:
    """The person behind a Slack account (users.info), so two accounts of one person count once.

    The Enterprise Grid user id when Slack gives one, else the profile email (lower case), else the account.
    Cached briefly like group members. When Slack cannot be asked and nothing is cached, IdentityUnknown:
    an approval is then refused ("try again"), never counted on a guess.
    """

    def __init__(self, client: AsyncWebClient, ttl_seconds: float = 300.0):
        self.client, self.ttl = client, ttl_seconds
        self._cache: dict[str, tuple[float, str]] = {}

    async def person(self, user_id: str) -> str:
        if not _SLACK_USER.match(user_id):
            return user_id  # not a Slack account (the terminal's cli: user)
        cached = self._cache.get(user_id)
        if cached and time.monotonic() - cached[0] < self.ttl:
            return cached[1]
        try:
            user = (await self.client.users_info(user=user_id))["user"]
        except Exception as exc:
            if cached:  # who an account belongs to rarely changes: the last answer is still right
                return cached[1]
            raise IdentityUnknown(user_id) from exc
        person = self.person_of(user)
        self._cache[user_id] = (time.monotonic(), person)
        return person

    @staticmethod
    def person_of(user: dict) -> str:
        if enterprise := (user.get("enterprise_user") or {}).get("id"):
            return f"enterprise:{enterprise}"
        if email := (user.get("profile") or {}).get("email"):
            return f"email:{email.strip().lower()}"
        return str(user["id"])


@dataclass
class SlackContext:
    engine: Engine
    config: Config
    policy: ApprovalPolicy
    titles: dict[str, str] = field(default_factory=dict)
    # The origin checks, replay refusal and shutdown tracking (bot.slack.intake): SlackBot always wires it;
    # the in-process handler tests run the listeners without it.
    intake: Intake | None = None
    # The App Home of whoever opened it (bot.slack.home_tab); SlackBot wires it.
    home: HomeTab | None = None

    def handling(self, context: AsyncBoltContext) -> Handling:
        return Handling(self.intake, context)

    async def status_text(self, run_id: str | None, *, group: str | None = None) -> str:
        """Slack mrkdwn: a run's result is outside text (host output), so it is escaped."""
        store = self.engine.store
        if run_id:
            run = await self.engine.store.call(store.find_run, run_id)
            if run is None:
                return f"There is no run `{run_id}`."
            steps = await self.engine.store.call(store.steps, run_id)
            known = people(run, await self.engine.store.call(store.approvals, run_id))
            lines = [
                f"{RUN_MARKS[run.state]} `{run.id}` {run.host}: *{state_words(run, self._window(run))}*"
                + (f" (attempt {run.attempt})" if run.attempt > 1 else "")
                + ticket_note(run)
                + (f" — {with_mentions(escape(run.result), known)}" if run.result else "")
            ]
            lines += [f"{MARKS[s.state]} {self.titles.get(s.step, s.step)}: {s.state.label}" for s in steps]
            return "\n".join(lines)
        runs = await self.engine.store.call(store.runs, active=True)
        if group is not None:  # `status GROUP`: that group's hosts' runs
            hosts = self.config.groups[group].hosts
            runs = [r for r in runs if r.host in hosts]
            if not runs:
                return f"No upgrade of group {group} is running ({', '.join(hosts)})."
        if not runs:
            return "No upgrade is running."
        return "\n".join(
            f"{RUN_MARKS[r.state]} `{r.id}` {r.host}: {state_words(r, self._window(r))} (by <@{r.requester}>){ticket_note(r)}"
            for r in runs
        )

    def _window(self, run: Run) -> MaintenanceWindow | None:
        """The window whose zone a scheduled run's time is shown in; None: UTC only."""
        if run.state is not RunState.scheduled or run.host not in self.config.hosts:
            return None
        return window_for(self.config, run.host)

    async def history_text(self, host: str | None, *, group: str | None = None) -> str:
        if group is not None:  # `history GROUP`: the newest runs of the group's hosts, together
            runs = []
            for member in self.config.groups[group].hosts:
                runs += await self.engine.store.call(self.engine.store.runs, host=member, limit=10)
            runs = sorted(runs, key=lambda r: (r.created_at, r.batch_position), reverse=True)[:10]
            if not runs:
                return f"No runs yet for group {group} ({', '.join(self.config.groups[group].hosts)})."
        else:
            runs = await self.engine.store.call(self.engine.store.runs, host=host, limit=10)
        if not runs:
            return "No runs yet" + (f" for {host}." if host else ".")
        lines = []
        for r in runs:
            line = f"{RUN_MARKS[r.state]} {r.created_at:%Y-%m-%d %H:%M} `{r.id}` {r.host}: {r.state.label}"
            line += f" (attempt {r.attempt})" if r.attempt > 1 else ""
            line += ticket_note(r)
            if r.result and not r.state.active:
                # the cause only (the first line): a history lists runs, the card has the rest
                known = people(r, await self.engine.store.call(self.engine.store.approvals, r.id))
                line += f" — {with_mentions(escape(r.result.partition(chr(10))[0]), known)}"
            lines.append(line)
        return "\n".join(lines)
