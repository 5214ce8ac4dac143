"""Audit checkpoints against the attacks of the 38f7b97 session: each rewrite a database writer can make is
caught against checkpoints kept outside the database, and an honest chain passes."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from bot.core.signing import AuditSigner, SigningKeyError, generate_key_file, parse_public_key
from bot.store import checkpoints
from bot.store.checkpoints import Checkpoint
from bot.store.store import Store
from tests.store.test_store_audit import populate
from tests.support.audit_attacks import rewrite
from tests.support.configs import APPROVER, write_config

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def signer(tmp_path) -> AuditSigner:
    key = tmp_path / "keys" / "audit.key"
    generate_key_file(key)
    return AuditSigner.from_file(key)


def trusted(*signers: AuditSigner):
    return {s.public_key: parse_public_key(s.public_key) for s in signers}


def witnessed(store: Store, signer: AuditSigner | None) -> list[Checkpoint]:
    """Two runs, a checkpoint after each (as the engine writes them at the end of a run): the list an auditor
    exported, or Slack holds."""
    kept = []
    for _ in range(2):
        populate(store)
        checkpoint, new = store.write_checkpoint(signer, "end of run")
        assert new
        kept.append(checkpoint)
    return kept


def test_an_honest_chain_holds_against_its_checkpoints(store, signer):
    kept = witnessed(store, signer)
    again, new = store.write_checkpoint(signer, "nothing new")
    assert not new and again == kept[-1]  # no events since: the last one still holds
    report = checkpoints.check(store.conn, kept, trusted(signer))
    assert report.ok and report.total == 2 and report.events == kept[-1].count, str(report)
    assert kept[0].prev == "0" * 64 and kept[1].prev == kept[0].digest
    assert checkpoints.stored(store.conn) == kept


def test_rewrite_and_rehash_passes_the_chain_but_not_the_checkpoints(store, signer):
    kept = witnessed(store, signer)
    granted = store.conn.execute("SELECT seq FROM audit WHERE event = 'approval.granted' ORDER BY seq").fetchone()[0]
    rewrite(store.conn, ("UPDATE audit SET actor = 'U0MALLORY1' WHERE seq = ?", (granted,)))
    assert store.verify_audit().ok  # what `audit verify` said in the attack: "intact"
    report = checkpoints.check(store.conn, kept, trusted(signer))
    assert not report.ok
    assert report.problem.startswith("checkpoint 1 of 2 ") and f"hash at seq {kept[0].seq}" in report.problem


def test_a_truncated_tail_is_caught(store, signer):
    kept = witnessed(store, signer)
    rewrite(store.conn, ("DELETE FROM audit WHERE seq > ?", (kept[0].seq + 2,)))
    assert store.verify_audit().ok
    report = checkpoints.check(store.conn, kept, trusted(signer))
    assert not report.ok and report.problem.startswith("checkpoint 2 of 2 ")
    assert f"no event {kept[1].seq}" in report.problem and "cut off" in report.problem


def test_a_middle_event_deleted_and_rehashed_is_caught(store, signer):
    kept = witnessed(store, signer)
    rewrite(store.conn, ("DELETE FROM audit WHERE seq = ?", (3,)))
    assert store.verify_audit().ok
    report = checkpoints.check(store.conn, kept, trusted(signer))
    assert not report.ok and report.problem.startswith("checkpoint 1 of 2 ") and "recomputed" in report.problem


def test_a_replaced_key_is_caught(store, signer, tmp_path):
    kept = witnessed(store, signer)
    # the attacker rewrites, then signs fresh checkpoints of the rewritten chain with a key of their own
    rewrite(store.conn, ("UPDATE audit SET actor = 'U0MALLORY1' WHERE actor = ?", (APPROVER,)))
    generate_key_file(tmp_path / "mallory.key")
    mallory = AuditSigner.from_file(tmp_path / "mallory.key")
    store.conn.execute("DELETE FROM audit_checkpoints")
    forged, _ = store.write_checkpoint(mallory, "end of run")
    assert checkpoints.check(store.conn, [forged], trusted(mallory)).ok  # holds only under the attacker's key
    report = checkpoints.check(store.conn, [forged], trusted(signer))
    assert not report.ok and "signed with another key" in report.problem and "replaced" in report.problem
    # and the copies signed with the real key no longer match the rewritten chain
    assert not checkpoints.check(store.conn, kept, trusted(signer)).ok


def test_an_edited_checkpoint_or_a_missing_one_is_named(store, signer):
    kept = witnessed(store, signer)
    populate(store)
    third, _ = store.write_checkpoint(signer, "end of run")
    edited = kept[1].model_copy(update={"count": kept[1].count - 1})
    report = checkpoints.check(store.conn, [kept[0], edited, third], trusted(signer))
    assert not report.ok and report.problem.startswith("checkpoint 2 of 3 ") and "signature" in report.problem
    report = checkpoints.check(store.conn, [kept[0], third], trusted(signer))
    assert not report.ok and report.problem.startswith("checkpoint 2 of 2 ") and "missing" in report.problem
    unsigned = kept[0].model_copy(update={"key": None, "signature": None})
    report = checkpoints.check(store.conn, [unsigned, kept[1]], trusted(signer))
    assert not report.ok and report.problem.startswith("checkpoint 1 of 2 ") and "not signed" in report.problem


def test_unsigned_checkpoints_still_catch_a_rewrite_and_say_what_they_prove(store):
    kept = witnessed(store, None)
    report = checkpoints.check(store.conn, kept, None)
    assert report.ok and any("not signed" in note for note in report.notes)
    rewrite(store.conn, ("UPDATE audit SET actor = 'U0MALLORY1' WHERE seq = 2", ()))
    assert not checkpoints.check(store.conn, kept, None).ok


def test_events_after_the_last_checkpoint_are_said_to_be_covered_by_the_chain_alone(store, signer):
    kept = witnessed(store, signer)
    populate(store)
    report = checkpoints.check(store.conn, kept, trusted(signer))
    assert report.ok and any("after the last checkpoint" in note for note in report.notes)


def test_the_signing_key_file_must_be_private_and_away_from_the_database(tmp_path):
    key = tmp_path / "keys" / "audit.key"
    public = generate_key_file(key)
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    with pytest.raises(SigningKeyError, match="never overwrites"):
        generate_key_file(key)
    assert AuditSigner.from_file(key).public_key == public
    os.chmod(key, 0o640)
    with pytest.raises(SigningKeyError, match=r"readable by others.*chmod 600"):
        AuditSigner.from_file(key)
    os.chmod(key, 0o600)
    with pytest.raises(SigningKeyError, match="database's directory"):
        AuditSigner.from_file(key, database_path=tmp_path / "keys" / "idm-upgrade.db")
    with pytest.raises(SigningKeyError, match=r"does not exist.*keygen"):
        AuditSigner.from_file(tmp_path / "nope.key")
    (tmp_path / "junk.key").write_text("not a key")
    os.chmod(tmp_path / "junk.key", 0o600)
    with pytest.raises(SigningKeyError, match="not an unencrypted PEM"):
        AuditSigner.from_file(tmp_path / "junk.key")


def _cli(config: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "bot", "audit", *args, "--config", str(config)],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )


def test_the_audit_commands_keygen_checkpoint_and_verify_against_a_file(tmp_path):
    key = tmp_path / "etc" / "audit.key"
    made = subprocess.run(
        [sys.executable, "-m", "bot", "audit", "keygen", "--out", str(key)], capture_output=True, text=True, cwd=ROOT
    )
    assert made.returncode == 0 and "public key: ed25519:" in made.stdout, made.stderr
    public = made.stdout.split("public key: ")[1].split()[0]
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    state = tmp_path / "state"  # the database's directory; the key is kept apart from it
    state.mkdir()
    config = write_config(state, extra=f'[audit]\nsigning_key_file = "{key}"\npublic_key = "{public}"\n')
    store = Store(state / "idm-upgrade.db")
    populate(store)
    written = _cli(config, "checkpoint")
    assert written.returncode == 0 and "checkpoint written" in written.stderr, written.stderr
    printed = Checkpoint.model_validate_json(written.stdout)
    assert printed.key == public and printed.signature
    exported = _cli(config, "checkpoints")
    assert exported.returncode == 0 and checkpoints.parse_list(exported.stdout, "stdout") == [printed]
    kept = tmp_path / "kept-by-the-auditor.json"
    kept.write_text(exported.stdout)
    ok = _cli(config, "verify", "--checkpoints", str(kept))
    assert ok.returncode == 0 and "1 checkpoint(s) hold" in ok.stdout, ok.stderr
    rewrite(store.conn, ("UPDATE audit SET actor = 'U0MALLORY1' WHERE seq = 3", ()))
    store.close()
    assert _cli(config, "verify").returncode == 0  # the chain alone cannot tell
    bad = _cli(config, "verify", "--checkpoints", str(kept))
    assert bad.returncode == 1 and "BROKEN: checkpoint 1 of 1" in bad.stderr
    other = _cli(config, "verify", "--checkpoints", str(kept), "--public-key", "ed25519:" + "A" * 43 + "=")
    assert other.returncode == 1 and "another key" in other.stderr
    (tmp_path / "junk.json").write_text('[{"seq": "x"}]')
    junk = _cli(config, "verify", "--checkpoints", str(tmp_path / "junk.json"))
    assert junk.returncode == 2 and "checkpoint 1" in junk.stderr
    again = _cli(config, "keygen")
    assert again.returncode == 1 and "never overwrites" in again.stderr


def test_a_checkpoint_is_never_written_over_a_broken_chain(tmp_path):
    config = write_config(tmp_path)
    store = Store(tmp_path / "idm-upgrade.db")
    populate(store)
    store.conn.execute("DROP TRIGGER audit_no_update")
    store.conn.execute("UPDATE audit SET actor = 'U0MALLORY1' WHERE seq = 3")
    store.close()
    refused = _cli(config, "checkpoint")
    assert refused.returncode == 1 and "no checkpoint written" in refused.stderr
    assert json.loads(_cli(config, "checkpoints").stdout) == []


def test_a_bad_public_key_in_the_config_is_a_config_error(tmp_path):
    config = write_config(tmp_path, extra='[audit]\npublic_key = "rsa:abc"\n')
    result = _cli(config, "verify")
    assert result.returncode == 2 and "audit.public_key" in result.stderr and "ed25519:" in result.stderr


def test_after_a_key_rotation_both_keys_are_trusted_and_only_those(store, signer, tmp_path):
    before = witnessed(store, signer)
    generate_key_file(tmp_path / "new.key")
    rotated = AuditSigner.from_file(tmp_path / "new.key")
    populate(store)
    after, _ = store.write_checkpoint(rotated, "end of run")
    kept = [*before, after]
    assert checkpoints.check(store.conn, kept, trusted(signer, rotated)).ok
    report = checkpoints.check(store.conn, kept, trusted(rotated))
    assert not report.ok and report.problem.startswith("checkpoint 1 of 3 ") and "another key" in report.problem
