"""The App Home view (the fleet at a glance) and the Upgrade confirmation modal, built with slack_sdk's models.

Pure functions of what the store says (bot.store.host_overview). Every string from outside the bot (a host's reported
version, a ticket, a plan's reasons) is escaped as it is put in. A view holds at most 100 blocks: a fleet that
needs more is shown a page at a time, and the view says so.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from slack_sdk.models.blocks import (
    ActionsBlock,
    Block,
    ButtonElement,
    DividerBlock,
    HeaderBlock,
    InputBlock,
    PlainTextInputElement,
)
from slack_sdk.models.views import View

from bot.core.config import Config
from bot.core.models import RunState
from bot.engine.dry_run import deciders, plan_lines
from bot.slack.escape import escape
from bot.slack.messages import RUN_MARKS, context, section
from bot.store.host_overview import HostRow

VIEW_BLOCKS = 100  # Slack's limit for a Home tab or a modal
CHECK, UPGRADE, PAGE = "home_check", "home_upgrade", "home_page"
CONFIRM = "home_upgrade_confirm"  # the modal's callback_id; private_metadata is the host
TICKET_BLOCK, TICKET_INPUT = "ticket", "ticket"
_FIXED = 6  # header, summary, notice, divider, and the page footer (context + buttons)


@dataclass(frozen=True)
class Entry:
    """One line of the Home: a group's heading, or a host."""

    heading: str | None = None
    row: HostRow | None = None

    @property
    def cost(self) -> int:
        if self.row is None:
            return 1
        return 1 if _busy(self.row) else 2  # a host that can be started has its buttons under it


def _busy(row: HostRow) -> bool:
    return row.run is not None and row.run.state.active


def _first(row: HostRow) -> int:
    """Waiting approvals first, then runs in flight, then everyone else."""
    if row.run is not None and (row.waiting or row.run.state is RunState.waiting_approval):
        return 0
    return 1 if _busy(row) else 2


def entries(rows: list[HostRow], config: Config) -> list[Entry]:
    """The Home's lines: hosts with a waiting approval or a run in flight first, then each host group's
    hosts under its heading, then the hosts of no group."""
    by_host = {r.host: r for r in rows}
    hot = sorted((r for r in rows if _first(r) < 2), key=_first)
    out: list[Entry] = []
    if hot:
        out.append(Entry(heading="In flight and waiting for approval"))
        out += [Entry(row=r) for r in hot]
    placed = {r.host for r in hot}
    for name, group in config.groups.items():
        members = [by_host[h] for h in group.hosts if h in by_host and h not in placed]
        if members:
            where = f" · <#{group.channel}>" if group.channel else ""
            out.append(Entry(heading=f"Group {name}{where}"))
            out += [Entry(row=r) for r in members]
            placed |= {r.host for r in members}
    rest = [r for r in rows if r.host not in placed]
    if rest:
        out.append(Entry(heading="Hosts in no group" if config.groups else "Hosts"))
        out += [Entry(row=r) for r in rest]
    return out


def pages(lines: list[Entry], budget: int = VIEW_BLOCKS - _FIXED) -> list[list[Entry]]:
    """The lines cut into pages of at most ``budget`` blocks; a group cut in two repeats its heading."""
    out: list[list[Entry]] = [[]]
    used, heading = 0, None
    for entry in lines:
        if entry.row is None:
            heading = entry
        if used + entry.cost > budget or (entry.row is None and used + 3 > budget):
            out.append([])
            used = 0
            if entry.row is not None and heading is not None:
                out[-1].append(Entry(heading=f"{heading.heading} (continued)"))
                used = 1
        out[-1].append(entry)
        used += entry.cost
    return out


def ago(then: datetime | None, now: datetime) -> str:
    if then is None:
        return "at an unknown time"
    seconds = max(0, int((now - then).total_seconds()))
    for unit, size in (("day", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            n = seconds // size
            return f"{n} {unit}{'s' if unit == 'day' and n > 1 else ''} ago"
    return "just now"


def host_line(row: HostRow, now: datetime, link: str | None) -> str:
    if row.seen is None:
        version = "connector version not seen yet (no preflight)"
    else:
        what = escape(row.seen.version) if row.seen.version else "no connector installed"
        version = f"connector {what} (seen by {row.seen.step} {ago(row.seen.at, now)})"
    text = f"*{row.host}* · {version}"
    run = row.run
    if run is None:
        return text + "\nno run yet"
    words = run.state.label + (" (check only)" if run.check_only else "")
    last = f"{RUN_MARKS[run.state]} {words} · `{run.id}`"
    if run.attempt > 1:
        last += f" · attempt {run.attempt}"
    if run.recovery == "revert":
        last += " · revert in progress"
    elif run.recovery == "reverted":
        last += " · reverted to its snapshot"
    if run.ticket:
        last += f" · ticket {escape(run.ticket)}"
    if row.waiting:
        last += " · waiting: " + ", ".join(f"{g} approval" for g in row.waiting)
    if link:
        last += f" · <{link}|thread>"
    return f"{text}\nlast run: {last}"


def home_view(
    rows: list[HostRow],
    config: Config,
    now: datetime,
    *,
    links: Mapping[str, str] | None = None,
    page: int = 0,
    notice: str | None = None,
) -> dict[str, Any]:
    """The Home tab for one person. ``links``: run id → permalink of its card; ``notice``: the answer to
    their last click (already Slack-safe)."""
    links = links or {}
    cut = pages(entries(rows, config))
    page = min(max(page, 0), len(cut) - 1)
    flying = sum(1 for r in rows if _busy(r))
    waiting = sum(1 for r in rows if _first(r) == 0)
    blocks: list[Block] = [
        HeaderBlock(text="idm-upgrade: the fleet at a glance"),
        context(
            f"{len(rows)} host{'s' if len(rows) != 1 else ''} · {flying} in flight · {waiting} waiting for approval"
            f" · target {escape(config.installer.version)} · updated {now:%H:%M:%S} UTC"
        ),
    ]
    if notice:
        blocks.append(section(notice))
    blocks.append(DividerBlock())
    for entry in cut[page]:
        if entry.row is None:
            blocks.append(section(f"*{entry.heading}*"))
            continue
        row = entry.row
        blocks.append(section(host_line(row, now, links.get(row.run.id) if row.run else None)))
        if not _busy(row):
            blocks.append(
                ActionsBlock(
                    block_id=f"host-{row.host}",
                    elements=[
                        ButtonElement(text="Check", action_id=CHECK, value=row.host),
                        ButtonElement(text="Upgrade", action_id=UPGRADE, value=row.host, style="primary"),
                    ],
                )
            )
    if len(cut) > 1:
        shown = sum(1 for e in cut[page] if e.row is not None)
        blocks.append(
            context(
                f"Page {page + 1} of {len(cut)}: {shown} of {len(rows)} hosts shown here (a Home tab holds at most "
                f"{VIEW_BLOCKS} blocks); `/idm-upgrade status` lists every run in flight."
            )
        )
        buttons = []
        if page > 0:
            buttons.append(ButtonElement(text="Previous page", action_id=f"{PAGE}_prev", value=str(page - 1)))
        if page < len(cut) - 1:
            buttons.append(ButtonElement(text="Next page", action_id=f"{PAGE}_next", value=str(page + 1)))
        blocks.append(ActionsBlock(block_id="pages", elements=buttons))
    return View(type="home", blocks=blocks).to_dict()


def page_count(rows: list[HostRow], config: Config) -> int:
    return len(pages(entries(rows, config)))


def page_hosts(rows: list[HostRow], config: Config, page: int) -> list[HostRow]:
    cut = pages(entries(rows, config))
    return [e.row for e in cut[min(max(page, 0), len(cut) - 1)] if e.row is not None]


# -- the Upgrade confirmation -------------------------------------------------------------------------


def static_plan(host: str, config: Config, steps: Iterable[tuple[str, str, str | None]]) -> list[str]:
    """What an upgrade runs on any host, with the gates each step may ask (``steps``: id, title, gate)."""
    group = config.groups.get(config.group_of(host) or "")
    lines = []
    for step_id, title, gate in steps:
        if step_id == "install" and not config.policy.approve_install:
            gate = None
        asks = ""
        if gate:
            who = " ".join(_mention(p) for p in deciders(config.slack, gate, group)) or "nobody is configured"
            asks = f" — asks *{gate}* of {who}"
        lines.append(f"• {escape(title)}{asks}")
    return lines


def _mention(principal: str) -> str:
    return f"<!subteam^{principal}>" if principal.startswith("S") else f"<@{principal}>"


def upgrade_modal(
    host: str,
    config: Config,
    now: datetime,
    *,
    checked: tuple[str, datetime | None, dict[str, Any]] | None,
    steps: Iterable[tuple[str, str, str | None]],
) -> dict[str, Any]:
    """The confirmation: the plan of the host's last dry run (``checked``: run id, when, plan) and its age, or
    else the steps an upgrade runs and the gates each asks, saying which it is."""
    target = escape(config.installer.version)
    blocks: list[Block] = [section(f"Upgrade *{host}* to {target}? It starts as `/idm-upgrade {host}` does.")]
    if checked is not None:
        run_id, at, plan = checked
        stamp = f"{at:%Y-%m-%d %H:%M} UTC, {ago(at, now)}" if at else "at an unknown time"
        blocks.append(section(f"*The plan from the last dry run* (`{run_id}`, {stamp}):"))
        lines = [escape(line) for line in plan_lines(plan)[1:]]
        blocks += [section("```" + "\n".join(lines[i : i + 25]) + "```") for i in range(0, len(lines), 25)][:80]
        blocks.append(context("The host may have changed since; the upgrade checks every step again before it acts."))
    else:
        blocks.append(
            section(
                f"*No dry run of {host} yet*, so this is what an upgrade runs on any host and the approvals each "
                "step may ask; click *Check* first to see what it would do on this one:"
            )
        )
        blocks.append(section("\n".join(static_plan(host, config, steps))))
    if config.change.ticket != "off":
        need = "required" if config.change.ticket == "required" else "optional"
        blocks.append(
            InputBlock(
                block_id=TICKET_BLOCK,
                label=f"Change ticket ({need})",
                element=PlainTextInputElement(action_id=TICKET_INPUT, placeholder="CHG0001234", max_length=64),
                optional=config.change.ticket != "required",
            )
        )
    return View(
        type="modal",
        callback_id=CONFIRM,
        private_metadata=host,
        title=f"Upgrade {host}"[:24],
        submit="Upgrade",
        close="Cancel",
        blocks=blocks,
    ).to_dict()
