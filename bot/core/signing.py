"""The audit signing key: Ed25519, kept in a file outside the database, readable only by the service user.

A checkpoint signed with it proves that the chain's head at that point was what the bot wrote, even to
someone who can rewrite every row of the database: they can recompute hashes, not the signature. The
public key is written down elsewhere (printed by ``audit keygen``, put in ``audit.public_key``, kept by
the auditor) so that a replaced key is seen too.
"""

from __future__ import annotations

import base64
import hashlib
import os
import stat
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

KEY_PREFIX = "ed25519:"


class SigningKeyError(ValueError):
    """The signing key file or a public key cannot be used; the message says why and what to do."""


def public_key_text(key: Ed25519PublicKey) -> str:
    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return KEY_PREFIX + base64.b64encode(raw).decode("ascii")


def parse_public_key(text: str) -> Ed25519PublicKey:
    """``ed25519:BASE64`` (as ``audit keygen`` prints it)."""
    value = text.strip()
    if not value.startswith(KEY_PREFIX):
        raise SigningKeyError(f"a public key reads {KEY_PREFIX}BASE64 (as `idm-upgrade audit keygen` prints it)")
    try:
        raw = base64.b64decode(value.removeprefix(KEY_PREFIX), validate=True)
        return Ed25519PublicKey.from_public_bytes(raw)
    except ValueError:
        raise SigningKeyError("the public key is not 32 bytes of base64 after 'ed25519:'") from None


def key_id(public_key: str) -> str:
    """A short name for a public key, for messages: the first 16 hex digits of its sha256."""
    return hashlib.sha256(public_key.encode("ascii")).hexdigest()[:16]


def verify_signature(public_key: Ed25519PublicKey, message: bytes, signature: str) -> bool:
    try:
        public_key.verify(base64.b64decode(signature, validate=True), message)
    except (InvalidSignature, ValueError):
        return False
    return True


class AuditSigner:
    """Signs checkpoints. Built from the key file once, at start-up, where a bad file is a clear error."""

    def __init__(self, private_key: Ed25519PrivateKey):
        self._key = private_key
        self.public_key = public_key_text(private_key.public_key())

    def sign(self, message: bytes) -> str:
        return base64.b64encode(self._key.sign(message)).decode("ascii")

    @classmethod
    def from_file(cls, path: str | Path, *, database_path: str | Path | None = None) -> AuditSigner:
        key_path = Path(path).resolve()
        if database_path is not None and str(database_path) != ":memory:":
            database_dir = Path(database_path).resolve().parent
            if key_path.is_relative_to(database_dir):
                raise SigningKeyError(
                    f"audit.signing_key_file {path} is in the database's directory {database_dir}: keep it "
                    "elsewhere (e.g. /etc/idm-upgrade/audit.key), so a copy of the database is not a copy of the key"
                )
        try:
            info = key_path.stat()
        except FileNotFoundError:
            raise SigningKeyError(
                f"audit.signing_key_file {path} does not exist: create it with `idm-upgrade audit keygen`"
            ) from None
        except OSError as exc:
            raise SigningKeyError(f"audit.signing_key_file {path}: cannot read it ({exc.strerror})") from None
        if not stat.S_ISREG(info.st_mode):
            raise SigningKeyError(f"audit.signing_key_file {path} is not a regular file")
        if info.st_mode & 0o077:
            raise SigningKeyError(
                f"audit.signing_key_file {path} is readable by others (mode {stat.S_IMODE(info.st_mode):04o}): "
                f"chmod 600 it, owned by the service user"
            )
        try:
            key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
        except OSError as exc:
            raise SigningKeyError(f"audit.signing_key_file {path}: cannot read it ({exc.strerror})") from None
        except (ValueError, TypeError):
            raise SigningKeyError(
                f"audit.signing_key_file {path} is not an unencrypted PEM private key; "
                "create one with `idm-upgrade audit keygen`"
            ) from None
        if not isinstance(key, Ed25519PrivateKey):
            raise SigningKeyError(f"audit.signing_key_file {path} is not an Ed25519 key")
        return cls(key)


def generate_key_file(path: str | Path) -> str:
    """Create a new key file (mode 0600; never over an existing file); returns its public key."""
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise SigningKeyError(
            f"{path} exists already; keygen never overwrites a key (checkpoints signed with it could no longer "
            "be checked). Move it away first if you mean to replace it"
        ) from None
    with os.fdopen(fd, "wb") as out:
        os.fchmod(out.fileno(), 0o600)  # whatever the umask
        out.write(pem)
    return public_key_text(key.public_key())
