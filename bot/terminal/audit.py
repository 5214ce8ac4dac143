"""`idm-upgrade audit checkpoint | checkpoints | keygen | verify`: the audit trail at the terminal.

Every one prints what it found in words and exits 0 (holds), 1 (does not hold or cannot be read) or
2 (asked wrongly). The Slack witness is handed in by the command line (terminal does not import slack).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import TextIO

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from bot.core.config import Config
from bot.core.signing import AuditSigner, SigningKeyError, generate_key_file, parse_public_key
from bot.runtime import audit_signer
from bot.store import audit, checkpoints
from bot.store.store import Store

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2

# (config) -> (checkpoints, notes); raises an exception whose message says what to do
SlackReader = Callable[[Config], tuple[list[checkpoints.Checkpoint], list[str]]]


def keygen(path: str, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    try:
        public = generate_key_file(path)
    except SigningKeyError as exc:
        sys.stderr.write(f"idm-upgrade: {exc}\n")
        return EXIT_FAILED
    except OSError as exc:
        sys.stderr.write(f"idm-upgrade: cannot create {path}: {exc.strerror}\n")
        return EXIT_FAILED
    out.write(
        f"created {path} (mode 0600): keep it readable only by the service user, outside the database's "
        "directory, and back it up apart from the database.\n"
        f"public key: {public}\n"
        "Put in the configuration:\n"
        "  [audit]\n"
        f'  signing_key_file = "{Path(path).resolve()}"\n'
        f'  public_key = "{public}"\n'
        "and give the public key to your auditors: `audit verify --checkpoints ... --public-key` checks with it.\n"
    )
    return EXIT_OK


def checkpoint(config: Config, store: Store, out: TextIO | None = None) -> int:
    """Write a checkpoint now (the last one when nothing was appended since) and print it, one JSON line."""
    out = out or sys.stdout
    try:
        signer = audit_signer(config)
    except SigningKeyError as exc:
        sys.stderr.write(f"idm-upgrade: {exc}\n")
        return EXIT_USAGE
    result = audit.verify(store.conn)
    if not result.ok:  # a checkpoint would sign a broken chain as if it were the bot's
        sys.stderr.write(f"{result}\nno checkpoint written\n")
        return EXIT_FAILED
    written, new = store.write_checkpoint(signer, "audit checkpoint command")
    if written is None:
        sys.stderr.write("the audit trail is empty: nothing to checkpoint yet\n")
        return EXIT_OK
    out.write(written.to_json() + "\n")
    sys.stderr.write(
        f"{'checkpoint written' if new else 'nothing appended since the last checkpoint; it still holds'}: "
        f"{written.count} events, head {written.head[:16]}…, {'signed' if written.signature else 'NOT signed'}\n"
    )
    return EXIT_OK


def verify(
    config: Config,
    store: Store,
    source: str | None,
    public_keys: list[str] | None,
    read_slack: SlackReader | None = None,
    out: TextIO | None = None,
) -> int:
    out = out or sys.stdout
    if source is None:
        result = audit.verify(store.conn)
        (out if result.ok else sys.stderr).write(f"{result}\n")
        return EXIT_OK if result.ok else EXIT_FAILED
    try:
        trusted, key_note = _trusted_keys(config, public_keys or [])
    except SigningKeyError as exc:
        sys.stderr.write(f"idm-upgrade: {exc}\n")
        return EXIT_USAGE
    notes: list[str] = [key_note] if key_note else []
    try:
        if source == "slack":
            if read_slack is None:
                raise RuntimeError("reading checkpoints from Slack is not available here")
            found, read_notes = read_slack(config)
            notes.extend(read_notes)
        else:
            found = checkpoints.parse_list(Path(source).read_text(encoding="utf-8"), source)
    except checkpoints.CheckpointFormatError as exc:
        sys.stderr.write(f"idm-upgrade: {exc}\n")
        return EXIT_USAGE
    except OSError as exc:
        sys.stderr.write(f"idm-upgrade: cannot read {source}: {exc.strerror or exc}\n")
        return EXIT_FAILED
    except Exception as exc:  # the Slack reader's errors say what to do
        sys.stderr.write(f"idm-upgrade: {exc}\n")
        return EXIT_FAILED
    report = checkpoints.check(store.conn, found, trusted)
    report.notes[:0] = notes
    (out if report.ok else sys.stderr).write(f"{report}\n")
    return EXIT_OK if report.ok else EXIT_FAILED


def _trusted_keys(config: Config, given: list[str]) -> tuple[dict[str, Ed25519PublicKey] | None, str | None]:
    """The keys checkpoints must be signed with: each --public-key, else audit.public_key, else the signing
    key's own (which a replaced key file would fool: said in a note)."""
    texts = given or ([config.audit.public_key] if config.audit.public_key else [])
    if texts:
        return {text.strip(): parse_public_key(text) for text in texts}, None
    signer: AuditSigner | None = audit_signer(config)
    if signer is None:
        return None, None
    note = (
        "checked against the public half of audit.signing_key_file; pass --public-key (or set audit.public_key) "
        "from your own records to also catch a replaced key file"
    )
    return {signer.public_key: parse_public_key(signer.public_key)}, note
