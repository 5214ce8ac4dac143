"""Checks on a request before Bolt reads it: signed by Slack, UTF-8, and shaped as Slack sends it.

Junk from anyone is a quiet 401 or 400, never a crash; Bolt checks the signature again. Over HTTP the headers are
checked before any of the body is read (`precheck`: a fresh timestamp and a well-formed signature header), the
body's bytes are HMAC'd as they arrive (`signer`), and nothing parses the body (form, JSON) before the signature
holds (`verdict`).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import time
from collections.abc import Mapping
from urllib.parse import parse_qs

from slack_sdk.signature import SignatureVerifier


def slack_shaped(body: str) -> bool:
    """A button payload must look the way Slack sends it before Bolt's middleware reads it."""
    form = parse_qs(body)
    if "payload" not in form:
        return True  # slash commands: Bolt and the handlers read them defensively
    try:
        payload = json.loads(form["payload"][0])
    except (ValueError, RecursionError):
        return False
    if not isinstance(payload, dict):
        return False
    if payload.get("type") == "view_submission":  # a modal's submission (the Home's Upgrade confirmation)
        view = payload.get("view")
        return isinstance(payload.get("user"), dict) and isinstance(view, dict) and isinstance(view.get("id"), str)
    if payload.get("type") != "block_actions":
        return True
    actions, user = payload.get("actions"), payload.get("user")
    return (
        isinstance(user, dict)
        and isinstance(actions, list)
        and bool(actions)
        and all(isinstance(a, dict) and isinstance(a.get("action_id"), str) for a in actions)
    )


_SIGNATURE = re.compile(r"v0=[0-9a-f]{64}")
UNSIGNED = (401, "invalid signature or timestamp")


class RequestGuard:
    def __init__(self, signing_secret: str):
        self._verifier = SignatureVerifier(signing_secret)
        self._secret = signing_secret.encode()

    def precheck(self, headers: Mapping[str, str]) -> tuple[int, str] | None:
        """Before the body is read: None when the headers could belong to a signed request, else (401, error)."""
        if not _fresh(headers.get("X-Slack-Request-Timestamp", "")):
            return UNSIGNED
        if not _SIGNATURE.fullmatch(headers.get("X-Slack-Signature", "")):
            return UNSIGNED
        return None

    def signer(self, headers: Mapping[str, str]) -> hmac.HMAC:
        """The HMAC to feed the body's bytes to as they arrive; `verdict(raw, headers, signer)` then compares it."""
        timestamp = headers.get("X-Slack-Request-Timestamp", "")
        return hmac.new(self._secret, b"v0:" + timestamp.encode("ascii", "replace") + b":", hashlib.sha256)

    def verdict(self, raw: bytes, headers: Mapping[str, str], signer: hmac.HMAC | None = None) -> tuple[int, str] | str:
        """The body as text when the request may go to Bolt; else (HTTP status, error) to answer.

        `signer`: the body's HMAC fed as it arrived (from `signer`); without it the whole body is checked here.
        """
        if signer is not None:
            if self.precheck(headers) is not None or not hmac.compare_digest(
                f"v0={signer.hexdigest()}".encode(), headers.get("X-Slack-Signature", "").encode("ascii", "replace")
            ):
                return UNSIGNED
            try:
                body = raw.decode("utf-8")
            except UnicodeDecodeError:
                return (400, "malformed request")  # signed, but Slack only sends UTF-8
            return body if slack_shaped(body) else (400, "malformed request")
        try:
            body = raw.decode("utf-8")
        except UnicodeDecodeError:
            # Slack only sends UTF-8: signed junk is malformed (400), anything else is unsigned (401).
            return (400 if self._signed_bytes(raw, headers) else 401, "malformed request")
        try:
            valid = self._verifier.is_valid(
                body, headers.get("X-Slack-Request-Timestamp", ""), headers.get("X-Slack-Signature", "")
            )
        except Exception:
            valid = False
        if not valid:
            return UNSIGNED
        if not slack_shaped(body):
            return (400, "malformed request")
        return body

    def _signed_bytes(self, raw: bytes, headers: Mapping[str, str]) -> bool:
        timestamp = headers.get("X-Slack-Request-Timestamp", "")
        if not _fresh(timestamp):
            return False
        digest = hmac.new(self._secret, b"v0:" + timestamp.encode() + b":" + raw, hashlib.sha256).hexdigest()
        try:
            return hmac.compare_digest(f"v0={digest}".encode(), headers.get("X-Slack-Signature", "").encode())
        except (TypeError, ValueError, UnicodeEncodeError):
            return False


def _fresh(timestamp: str) -> bool:
    """Slack's timestamp, within 5 minutes of our clock (what SignatureVerifier accepts)."""
    try:
        return abs(time.time() - int(timestamp)) <= 300
    except ValueError:
        return False
