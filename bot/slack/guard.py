"""Checks on a request before Bolt reads it: signed by Slack, UTF-8, and shaped as Slack sends it.

Junk from anyone is a quiet 401 or 400, never a crash; Bolt checks the signature again.
"""

from __future__ import annotations

import hashlib
import hmac
import json
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
    if payload.get("type") != "block_actions":
        return True
    actions, user = payload.get("actions"), payload.get("user")
    return (
        isinstance(user, dict)
        and isinstance(actions, list)
        and bool(actions)
        and all(isinstance(a, dict) and isinstance(a.get("action_id"), str) for a in actions)
    )


class RequestGuard:
    def __init__(self, signing_secret: str):
        self._verifier = SignatureVerifier(signing_secret)
        self._secret = signing_secret.encode()

    def verdict(self, raw: bytes, headers: Mapping[str, str]) -> tuple[int, str] | str:
        """The body as text when the request may go to Bolt; else (HTTP status, error) to answer."""
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
            return (401, "invalid signature or timestamp")
        if not slack_shaped(body):
            return (400, "malformed request")
        return body

    def _signed_bytes(self, raw: bytes, headers: Mapping[str, str]) -> bool:
        timestamp = headers.get("X-Slack-Request-Timestamp", "")
        try:
            if abs(time.time() - int(timestamp)) > 300:
                return False
        except ValueError:
            return False
        digest = hmac.new(self._secret, b"v0:" + timestamp.encode() + b":" + raw, hashlib.sha256).hexdigest()
        try:
            return hmac.compare_digest(f"v0={digest}".encode(), headers.get("X-Slack-Signature", "").encode())
        except (TypeError, ValueError, UnicodeEncodeError):
            return False
