"""The text of `/idm-upgrade`, parsed into a command, or a plain explanation of what is wrong."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime

from bot.engine.admission import NEXT_WINDOW

HOST = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")
RUN_ID = re.compile(r"run-[0-9a-f]{8}")
MAX_TEXT = 2000

TICKET_PREFIX = "ticket:"

USAGE = (
    "Usage: `/idm-upgrade HOST|GROUP... [ticket:CHG…] [at next-window|at 2026-12-05T22:00+01:00]` upgrade "
    "(a group's hosts one after another; several groups side by side) · `/idm-upgrade check HOST|GROUP...` "
    "dry run: the plan, nothing changed · `/idm-upgrade status [RUN|GROUP]` · `/idm-upgrade history [HOST|GROUP]` · "
    "`/idm-upgrade cancel RUN` · `/idm-upgrade retry RUN [why…]` a failed run, from its failed step · "
    "`/idm-upgrade help`"
)


@dataclass(frozen=True)
class Command:
    verb: str  # upgrade, check, status, history, cancel, retry, help
    hosts: tuple[str, ...] = ()  # every host, a named group's hosts in the group's order
    run_id: str | None = None
    ticket: str | None = None  # as typed after `ticket:`; checked against [change] by the handler
    at: datetime | str | None = None  # when to start: an aware datetime, or NEXT_WINDOW
    groups: tuple[str, ...] = ()  # the groups named (their hosts are in ``hosts``)
    why: str | None = None  # retry: the words after the run id, as typed

    def batches(self, groups: dict[str, list[str]]) -> list[tuple[str | None, list[str]]]:
        """One batch per named group (its hosts in order), then the hosts named on their own as one batch."""
        grouped = [(name, list(groups[name])) for name in self.groups]
        inside = {host for _, hosts in grouped for host in hosts}
        loose = [host for host in self.hosts if host not in inside]
        return grouped + ([(None, loose)] if loose else [])


class CommandError(ValueError):
    pass


def parse(text: str, known_hosts: list[str], max_hosts: int, groups: dict[str, list[str]] | None = None) -> Command:
    groups = groups or {}
    if len(text) > MAX_TEXT:
        raise CommandError(f"That is {len(text)} characters; the command takes host names and a few words. {USAGE}")
    words = text.split()
    if not words:
        raise CommandError(f"Which host? {USAGE}")
    verb = words[0].lower()
    rest = words[1:]
    if verb == "help":
        return Command("help")
    if verb == "status" and len(rest) == 1 and rest[0].lower() in groups:
        return Command("status", groups=(rest[0].lower(),))
    if verb in ("status", "cancel"):
        if len(rest) > 1 or (verb == "cancel" and not rest):
            what = "one run id" if verb == "cancel" else "at most one run id or group"
            raise CommandError(f"`{verb}` takes {what}. {USAGE}")
        if rest and not RUN_ID.fullmatch(rest[0]):
            raise CommandError(f"`{_show(rest[0])}` is not a run id (they look like `run-1a2b3c4d`).")
        return Command(verb, run_id=rest[0] if rest else None)
    if verb == "retry":
        if not rest:
            raise CommandError(f"`retry` needs the failed run's id: `/idm-upgrade retry run-1a2b3c4d why…`. {USAGE}")
        if not RUN_ID.fullmatch(rest[0]):
            raise CommandError(f"`{_show(rest[0])}` is not a run id (they look like `run-1a2b3c4d`).")
        return Command("retry", run_id=rest[0], why=" ".join(rest[1:]) or None)
    if verb == "history":
        if len(rest) > 1:
            raise CommandError(f"`history` takes at most one host or group. {USAGE}")
        if rest and rest[0].lower() in groups:
            return Command("history", groups=(rest[0].lower(),))
        return Command("history", hosts=tuple(_hosts(rest, known_hosts, max_hosts)) if rest else ())
    if verb == "check":
        if not rest:
            raise CommandError(f"`check` needs at least one host. {USAGE}")
        return _targets("check", rest, known_hosts, max_hosts, groups)
    return _targets("upgrade", words, known_hosts, max_hosts, groups)


def _targets(verb: str, words: list[str], known: list[str], max_hosts: int, groups: dict[str, list[str]]) -> Command:
    """Hosts and groups, with at most one `ticket:ID` and one `at WHEN` among them."""
    ticket: str | None = None
    at: datetime | str | None = None
    names: list[str] = []
    index = 0
    while index < len(words):
        word = words[index]
        if word.lower().startswith(TICKET_PREFIX):
            if ticket is not None:
                raise CommandError("A ticket is given more than once; name one change ticket per request.")
            ticket = word[len(TICKET_PREFIX) :]
            if not ticket:
                raise CommandError("`ticket:` needs the ticket number after it, with no space: `ticket:CHG0012345`.")
        elif word.lower() == "at":
            if at is not None:
                raise CommandError("`at` is given more than once; a request starts at one time.")
            if index + 1 >= len(words):
                raise CommandError(f"`at` needs a time: `at {NEXT_WINDOW}` or `at 2026-12-05T22:00+01:00`.")
            index += 1
            at = _when(words[index])
        else:
            names.append(word)
        index += 1
    if not names:
        raise CommandError(f"Which host? {USAGE}")
    named_groups = [n.lower() for n in names if n.lower() in groups]
    if len(set(named_groups)) != len(named_groups):
        raise CommandError("A group is named more than once.")
    expanded = [host for n in names for host in groups.get(n.lower(), [n])]
    hosts = _hosts(expanded, known, max_hosts, groups)
    return Command(verb, hosts=tuple(hosts), ticket=ticket, at=at, groups=tuple(named_groups))


def _when(word: str) -> datetime | str:
    if word.lower() == NEXT_WINDOW:
        return NEXT_WINDOW
    try:
        moment = datetime.fromisoformat(word)
    except ValueError:
        moment = None
    if moment is None or moment.tzinfo is None:
        raise CommandError(
            f"`{_show(word)}` is not a time I can use: write `at {NEXT_WINDOW}`, or a date and time with its UTC "
            "offset such as `at 2026-12-05T22:00+01:00` (or `…Z` for UTC)."
        )
    return moment


def _hosts(words: list[str], known: list[str], max_hosts: int, groups: dict[str, list[str]] | None = None) -> list[str]:
    if len(words) > max_hosts:
        raise CommandError(
            f"{len(words)} hosts in one request; the limit is {max_hosts} (slack.max_hosts_per_request). "
            "Split the fleet into several requests."
        )
    hosts = [w.lower() if w.isascii() else w for w in words]
    bad = [h for h in hosts if not HOST.fullmatch(h)]
    if bad:
        raise CommandError(
            f"`{_show(bad[0])}` is not a host name (letters, digits and '-' only). "
            f"Configured hosts: {', '.join(known) or 'none'}."
        )
    unknown = [h for h in hosts if h not in known]
    if unknown:
        named_groups = f" Groups: {', '.join(groups)}." if groups else ""
        raise CommandError(
            f"Unknown host{'s' if len(unknown) > 1 else ''} {', '.join(f'`{h}`' for h in unknown)}. "
            f"Configured hosts: {', '.join(known)}.{named_groups} Ask an admin to add it to the configuration."
        )
    if len(set(hosts)) != len(hosts):
        raise CommandError("A host is named more than once (on its own, or in a group named too).")
    return hosts


def _show(word: str) -> str:
    """Echo user input safely: no mentions or formatting, invisible and look-alike characters spelled out."""
    cleaned = re.sub(r"[`<>@&*_~]", "?", word[:40])
    spelled = "".join(c if c.isascii() and c.isprintable() else f"\\u{ord(c):04x}" for c in cleaned)
    return spelled + ("…" if len(word) > 40 else "")
