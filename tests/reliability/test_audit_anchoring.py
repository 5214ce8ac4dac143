"""The audit attacks of the 38f7b97 session, through the real command line, against checkpoints an auditor
kept outside the database: each is caught and named; the chain alone misses the rehashed ones.

Each attack's verdicts are recorded for docs/RELIABILITY.md.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from bot.core.signing import AuditSigner, generate_key_file
from bot.store.store import Store
from tests.reliability.results import record
from tests.store.test_store_audit import populate
from tests.support.audit_attacks import rewrite
from tests.support.configs import APPROVER, write_config

ROOT = Path(__file__).resolve().parents[2]


def _rewrite_approver(store: Store, _mallory: AuditSigner) -> None:
    rewrite(store.conn, ("UPDATE audit SET actor = 'U0MALLORY1' WHERE actor = ?", (APPROVER,)))


def _truncate_tail(store: Store, _mallory: AuditSigner) -> None:
    rewrite(store.conn, ("DELETE FROM audit WHERE seq > (SELECT MAX(seq) - 3 FROM audit)", ()))


def _delete_middle(store: Store, _mallory: AuditSigner) -> None:
    rewrite(store.conn, ("DELETE FROM audit WHERE seq = 4", ()))


def _replace_key(store: Store, mallory: AuditSigner) -> None:
    """Rewrite, then checkpoint the rewritten chain with a key of one's own, in place of the bot's."""
    _rewrite_approver(store, mallory)
    store.conn.execute("DELETE FROM audit_checkpoints")
    store.write_checkpoint(mallory, "end of run")


def _edit_without_rehash(store: Store, _mallory: AuditSigner) -> None:
    store.conn.execute("DROP TRIGGER audit_no_update")
    store.conn.execute("UPDATE audit SET actor = 'U0MALLORY1' WHERE seq = 2")


ATTACKS: dict[str, tuple[Callable[[Store, AuditSigner], None], str, bool]] = {
    # name: (attack, what the report must name, does the chain alone catch it)
    "rewrite and rehash (who approved)": (_rewrite_approver, "recomputed", False),
    "truncate the tail": (_truncate_tail, "cut off the end", False),
    "delete a middle event and rehash": (_delete_middle, "recomputed", False),
    "replace the key and re-sign": (_replace_key, "recomputed", False),
    "edit one row, no rehash": (_edit_without_rehash, "edited", True),
}


def _cli(config: Path, *args: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "bot", "audit", *args, "--config", str(config)]
    return subprocess.run(command, capture_output=True, text=True, cwd=ROOT, timeout=60)


@pytest.fixture
def world(tmp_path, tmp_path_factory):
    """A trail of four runs, checkpointed after each with the bot's key; the auditor's export of them."""
    keys = tmp_path_factory.mktemp("keys")
    public = generate_key_file(keys / "audit.key")
    generate_key_file(keys / "mallory.key")
    config = write_config(tmp_path, extra=f'[audit]\nsigning_key_file = "{keys / "audit.key"}"\n')
    store = Store(tmp_path / "idm-upgrade.db")
    for _ in range(2):
        populate(store)
        assert _cli(config, "checkpoint").returncode == 0
    kept = tmp_path / "auditor-checkpoints.json"
    kept.write_text(_cli(config, "checkpoints").stdout)
    yield config, store, kept, public, AuditSigner.from_file(keys / "mallory.key")
    store.close()


def test_an_honest_trail_holds(world):
    config, _store, kept, public, _ = world
    result = _cli(config, "verify", "--checkpoints", str(kept), "--public-key", public)
    assert result.returncode == 0, result.stderr
    record("audit anchoring", "honest trail", {"verdict": result.stdout.splitlines()[0]})


@pytest.mark.parametrize("attack", list(ATTACKS))
def test_each_attack_is_caught_against_the_kept_checkpoints(world, attack):
    config, store, kept, public, mallory = world
    tamper, named, chain_catches = ATTACKS[attack]
    tamper(store, mallory)
    alone = _cli(config, "verify")
    assert (alone.returncode != 0) is chain_catches, alone.stdout + alone.stderr
    against = [str(kept)]
    if attack.startswith("replace the key"):  # the attacker's own export, signed with the attacker's key
        forged = kept.with_name("forged.json")
        forged.write_text(_cli(config, "checkpoints").stdout)
        against.append(str(forged))
    verdicts = []
    for source in against:
        result = _cli(config, "verify", "--checkpoints", source, "--public-key", public)
        assert result.returncode == 1 and "BROKEN" in result.stderr, result.stdout + result.stderr
        verdicts.append(result.stderr.splitlines()[0])
    assert named in verdicts[0], verdicts
    if len(verdicts) > 1:
        assert "another key" in verdicts[1], verdicts
    record(
        "audit anchoring",
        attack,
        {"chain alone": "caught" if chain_catches else "says intact", "against checkpoints": verdicts},
    )
