"""What the Slack handlers need, in one place: the engine, the policy, and read-only views of runs."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from slack_sdk.web.async_client import AsyncWebClient

from bot.core.config import Config
from bot.engine.approvals import ApprovalPolicy
from bot.engine.engine import Engine
from bot.slack.escape import escape
from bot.slack.messages import MARKS, RUN_MARKS


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


@dataclass
class SlackContext:
    engine: Engine
    config: Config
    policy: ApprovalPolicy
    titles: dict[str, str] = field(default_factory=dict)

    async def status_text(self, run_id: str | None) -> str:
        """Slack mrkdwn: a run's result is outside text (host output), so it is escaped."""
        store = self.engine.store
        if run_id:
            run = await self.engine.store.call(store.find_run, run_id)
            if run is None:
                return f"There is no run `{run_id}`."
            steps = await self.engine.store.call(store.steps, run_id)
            lines = [
                f"{RUN_MARKS[run.state]} `{run.id}` {run.host}: *{run.state.label}*"
                + (f" — {escape(run.result)}" if run.result else "")
            ]
            lines += [f"{MARKS[s.state]} {self.titles.get(s.step, s.step)}: {s.state.label}" for s in steps]
            return "\n".join(lines)
        runs = await self.engine.store.call(store.runs, active=True)
        if not runs:
            return "No upgrade is running."
        return "\n".join(f"{RUN_MARKS[r.state]} `{r.id}` {r.host}: {r.state.label} (by <@{r.requester}>)" for r in runs)

    async def history_text(self, host: str | None) -> str:
        runs = await self.engine.store.call(self.engine.store.runs, host=host, limit=10)
        if not runs:
            return "No runs yet" + (f" for {host}." if host else ".")
        return "\n".join(
            f"{RUN_MARKS[r.state]} {r.created_at:%Y-%m-%d %H:%M} `{r.id}` {r.host}: {r.state.label}"
            + (f" — {escape(r.result)}" if r.result and not r.state.active else "")
            for r in runs
        )
