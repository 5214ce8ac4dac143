"""What the App Home shows of each host, read in one go on the store's thread (``store.call(host_rows, ...)``).

Per host: its last run, its open requests, the connector version as last seen (the newest preflight or verify
facts of any of its runs) and where its thread is (``slack_threads``: channel and card ts, for the permalink).
A check run's stored plan is read separately (``last_plan``), only when someone asks to upgrade that host.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from bot.core.models import ApprovalState, Run
from bot.store.store import Store

PLAN_KEY = "plan"  # bot.engine.dry_run.PLAN_KEY (the store may not import the engine)
CHECK_RUNS_LOOKED_AT = 20  # a dry run older than the host's last 20 runs is too old to show as its plan


@dataclass(frozen=True)
class SeenVersion:
    version: str | None  # None: the host had no connector installed
    step: str  # preflight or verify
    at: datetime | None
    run_id: str


@dataclass(frozen=True)
class HostRow:
    host: str
    run: Run | None  # the host's last run
    waiting: tuple[str, ...] = ()  # the gates of its open requests
    seen: SeenVersion | None = None
    channel: str | None = None  # the last run's thread
    card_ts: str | None = None


_SEEN_SQL = """
    SELECT s.step, COALESCE(s.finished_at, s.started_at) AS at, s.run_id,
           json_extract(s.facts, '$.connector.version'), json_extract(s.facts, '$.connector.installed'),
           json_extract(s.facts, '$.version'), json_extract(s.facts, '$.installed')
    FROM steps s JOIN runs r ON r.id = s.run_id
    WHERE r.host = ? AND ((s.step = 'preflight' AND json_extract(s.facts, '$.connector.installed') IS NOT NULL)
                          OR (s.step = 'verify' AND json_extract(s.facts, '$.installed') IS NOT NULL))
    ORDER BY at DESC LIMIT 1
"""


def _seen(store: Store, host: str) -> SeenVersion | None:
    row = store.conn.execute(_SEEN_SQL, (host,)).fetchone()
    if row is None:
        return None
    step, at, run_id, pre_version, pre_installed, version, installed = row
    if step == "preflight":
        version, installed = pre_version, pre_installed
    return SeenVersion(
        str(version) if installed and version else None, step, datetime.fromisoformat(at) if at else None, run_id
    )


def host_rows(store: Store, hosts: list[str]) -> list[HostRow]:
    """One row per configured host, in the order given."""
    rows = []
    for host in hosts:
        last = store.runs(host=host, limit=1)
        run = last[0] if last else None
        waiting: tuple[str, ...] = ()
        channel = card_ts = None
        if run is not None:
            waiting = tuple(a.gate for a in store.approvals(run.id) if a.state is ApprovalState.open)
            thread = store.conn.execute(
                "SELECT channel, card_ts FROM slack_threads WHERE run_id = ?", (run.id,)
            ).fetchone()
            if thread is not None:
                channel, card_ts = thread[0], thread[1]
        rows.append(HostRow(host, run, waiting, _seen(store, host), channel, card_ts))
    return rows


def last_plan(store: Store, host: str) -> tuple[Run, dict[str, Any]] | None:
    """The host's newest check run that stored a plan (its dry run), with that plan."""
    for run in store.runs(host=host, limit=CHECK_RUNS_LOOKED_AT):
        if not run.check_only:
            continue
        for record in store.steps(run.id):
            if isinstance(plan := record.facts.get(PLAN_KEY), dict):
                return run, plan
    return None
