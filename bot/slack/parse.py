"""The text of `/idm-upgrade`, parsed into a command, or a plain explanation of what is wrong."""

from __future__ import annotations

import re
from dataclasses import dataclass

HOST = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")
RUN_ID = re.compile(r"run-[0-9a-f]{8}")
MAX_TEXT = 2000

USAGE = (
    "Usage: `/idm-upgrade HOST...` upgrade (several hosts: one after another) · `/idm-upgrade check HOST...` "
    "dry run: the plan, nothing changed · `/idm-upgrade status [RUN]` · `/idm-upgrade history [HOST]` · `/idm-upgrade cancel RUN` · "
    "`/idm-upgrade help`"
)


@dataclass(frozen=True)
class Command:
    verb: str  # upgrade, check, status, history, cancel, help
    hosts: tuple[str, ...] = ()
    run_id: str | None = None


class CommandError(ValueError):
    pass


def parse(text: str, known_hosts: list[str], max_hosts: int) -> Command:
    if len(text) > MAX_TEXT:
        raise CommandError(f"That is {len(text)} characters; the command takes host names and a few words. {USAGE}")
    words = text.split()
    if not words:
        raise CommandError(f"Which host? {USAGE}")
    verb = words[0].lower()
    rest = words[1:]
    if verb == "help":
        return Command("help")
    if verb in ("status", "cancel"):
        if len(rest) > 1 or (verb == "cancel" and not rest):
            raise CommandError(f"`{verb}` takes {'one run id' if verb == 'cancel' else 'at most one run id'}. {USAGE}")
        if rest and not RUN_ID.fullmatch(rest[0]):
            raise CommandError(f"`{_show(rest[0])}` is not a run id (they look like `run-1a2b3c4d`).")
        return Command(verb, run_id=rest[0] if rest else None)
    if verb == "history":
        if len(rest) > 1:
            raise CommandError(f"`history` takes at most one host. {USAGE}")
        return Command("history", hosts=tuple(_hosts(rest, known_hosts, max_hosts)) if rest else ())
    if verb == "check":
        if not rest:
            raise CommandError(f"`check` needs at least one host. {USAGE}")
        return Command("check", hosts=tuple(_hosts(rest, known_hosts, max_hosts)))
    return Command("upgrade", hosts=tuple(_hosts(words, known_hosts, max_hosts)))


def _hosts(words: list[str], known: list[str], max_hosts: int) -> list[str]:
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
        raise CommandError(
            f"Unknown host{'s' if len(unknown) > 1 else ''} {', '.join(f'`{h}`' for h in unknown)}. "
            f"Configured hosts: {', '.join(known)}. Ask an admin to add it to the configuration."
        )
    if len(set(hosts)) != len(hosts):
        raise CommandError("A host is named more than once.")
    return hosts


def _show(word: str) -> str:
    """Echo user input safely: no mentions or formatting, invisible and look-alike characters spelled out."""
    cleaned = re.sub(r"[`<>@&*_~]", "?", word[:40])
    spelled = "".join(c if c.isascii() and c.isprintable() else f"\\u{ord(c):04x}" for c in cleaned)
    return spelled + ("…" if len(word) > 40 else "")
