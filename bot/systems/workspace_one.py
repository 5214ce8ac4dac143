"""Workspace ONE Access (VMware Identity Manager service) REST API client, asyncio + aiohttp.

What it does: OAuth2 client credentials at ``{url}{token_path}`` (HTTP Basic with WS1_CLIENT_ID /
WS1_CLIENT_SECRET, form ``grant_type=client_credentials``), the bearer token cached until shortly before it
expires and fetched again once when the service answers 401; list the directories, read one directory
config, update one directory config.

What is assumed (field notes section 2): the token call, the list call and its media type are documented;
the update of an AD-over-IWA directory is not. Its verb (``workspace_one.update_method``), its media type
(``workspace_one.directory_media_type``; the update is sent in whatever media type the read returned) and
the path (``workspace_one.directories_path``) are therefore settings, and ``directory_change = "manual"``
leaves the change to a person in the console.

Errors say which call failed and why. They never carry a secret, a token or an Authorization header;
response excerpts in them are short and scrubbed. Logging: one DEBUG line per HTTP request (method, path,
status), nothing else.
"""

from __future__ import annotations

import asyncio
import base64
import copy
import json
import logging
import re
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import aiohttp

from bot.core.config import Secrets, WorkspaceOneConfig
from bot.core.errors import ExternalSystemError

log = logging.getLogger(__name__)

IWA_TYPE = "ACTIVE_DIRECTORY_IWA"
JSON = "application/json"
TOKEN_MARGIN_SECONDS = 30.0  # refresh this long before the token's announced expiry (less for short-lived tokens)
_EXCERPT_LIMIT = 200


class WorkspaceOneError(ExternalSystemError):
    """A Workspace ONE Access call failed; the message names the call and the reason, never a secret."""

    def __init__(self, message: str, *, call: str | None = None, status: int | None = None) -> None:
        super().__init__(message)
        self.call = call
        self.status = status


class WorkspaceOneAuthError(WorkspaceOneError):
    """The token was refused: the token call answered 400/401/403, or an API call answered 401 twice."""


class WorkspaceOneRejected(WorkspaceOneError):
    """The service refused a request with a 4xx other than 401 (an update: 400/403/405/409/415/422...)."""

    def __init__(self, message: str, *, call: str | None = None, status: int, body_excerpt: str = "") -> None:
        super().__init__(message, call=call, status=status)
        self.body_excerpt = body_excerpt


class WorkspaceOneUnavailable(WorkspaceOneError):
    """5xx, a timeout, or a connection error; ``status`` is None when there was no HTTP answer."""


@dataclass(frozen=True)
class Directory:
    id: str
    name: str
    type: str
    document: dict[str, Any]
    media_type: str  # the Content-Type the read returned; the update is sent in it


@dataclass(frozen=True)
class _Response:
    status: int
    reason: str
    content_type: str  # the full header value, parameters included
    body: bytes


class WorkspaceOneClient:
    """One tenant. ``async with WorkspaceOneClient(config, secrets) as ws1: ...`` or call ``close()``.

    A session passed in is used as is and left open on close; otherwise the client opens its own on first use.
    """

    def __init__(
        self,
        config: WorkspaceOneConfig,
        secrets: Secrets,
        *,
        session: aiohttp.ClientSession | None = None,
    ) -> None:
        if not config.url:
            raise ValueError("workspace_one.url is not set: the tenant root such as https://tenant.example.com")
        missing = [
            name
            for name, value in (
                ("WS1_CLIENT_ID", secrets.ws1_client_id),
                ("WS1_CLIENT_SECRET", secrets.ws1_client_secret),
            )
            if value is None or not value.get_secret_value()
        ]
        if missing:
            raise ValueError(
                f"Workspace ONE Access credentials missing: set {' and '.join(missing)} in the environment"
            )
        self._config = config
        self._base = config.url.rstrip("/")
        client_id = secrets.ws1_client_id.get_secret_value()  # type: ignore[union-attr]
        client_secret = secrets.ws1_client_secret.get_secret_value()  # type: ignore[union-attr]
        self._basic = "Basic " + base64.b64encode(f"{client_id}:{client_secret}".encode()).decode("ascii")
        self._scrub_values = [v for v in (client_secret, client_id) if len(v) >= 4]
        self._ssl: bool = config.verify_tls
        if not config.verify_tls:
            log.warning("workspace_one.verify_tls is false: the tenant's TLS certificate is NOT verified")
        self._timeout = aiohttp.ClientTimeout(total=config.timeout_seconds)
        self._session = session
        self._own_session = session is None
        self._token: str | None = None
        self._token_valid_until = 0.0
        self._token_lock = asyncio.Lock()

    # ----- lifecycle -------------------------------------------------------------------------------

    async def close(self) -> None:
        self._token = None
        if self._own_session and self._session is not None:
            await self._session.close()
            self._session = None

    async def __aenter__(self) -> WorkspaceOneClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # ----- API ---------------------------------------------------------------------------------------

    async def list_directories(self) -> list[dict[str, Any]]:
        """The ``items`` of the directory list, as the service returns them (directoryId, name, type...)."""
        call = "list directories"
        response = await self._api(
            call, "GET", self._config.directories_path, accept=self._config.directory_list_media_type
        )
        data = self._json(call, response)
        items = data.get("items") if isinstance(data, dict) else None
        if not isinstance(items, list) or not all(isinstance(item, dict) for item in items):
            raise WorkspaceOneError(f"Workspace ONE Access: {call}: the answer has no list of items", call=call)
        return items

    async def read_directory(self, directory_id: str) -> Directory:
        """One directory config, in ``directory_media_type``; a 406 is retried once asking for application/json."""
        call = f"read directory {directory_id}"
        path = self._directory_path(directory_id)
        accept = self._config.directory_media_type
        try:
            response = await self._api(call, "GET", path, accept=accept)
        except WorkspaceOneRejected as exc:
            if exc.status != 406 or accept == JSON:
                raise
            accept = JSON
            response = await self._api(call, "GET", path, accept=accept)
        document = self._json(call, response)
        if not isinstance(document, dict):
            raise WorkspaceOneError(f"Workspace ONE Access: {call}: the answer is not a JSON object", call=call)
        return Directory(
            id=str(document.get("directoryId") or directory_id),
            name=str(document.get("name", "")),
            type=str(document.get("type", "")),
            document=document,
            media_type=response.content_type or accept,
        )

    async def update_directory(self, directory: Directory, changes: dict[str, Any]) -> None:
        """Send the document as read with only ``changes`` applied (top-level fields), in the read's media type."""
        if not changes:
            raise ValueError("update_directory: no changes given")
        document = copy.deepcopy(directory.document)
        for key, value in changes.items():
            document[key] = copy.deepcopy(value)
        body = json.dumps(document, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
        fields = ", ".join(sorted(changes))
        await self._api(
            f"update directory {directory.id} ({fields})",
            self._config.update_method,
            self._directory_path(directory.id),
            accept=f"{directory.media_type}, {JSON}" if directory.media_type != JSON else JSON,
            body=body,
            content_type=directory.media_type,
        )

    async def iwa_directories(self) -> list[Directory]:
        """Every directory of type ACTIVE_DIRECTORY_IWA, each read in full."""
        found: list[Directory] = []
        for item in await self.list_directories():
            if item.get("type") != IWA_TYPE:
                continue
            directory_id = item.get("directoryId")
            if not isinstance(directory_id, str) or not directory_id:
                raise WorkspaceOneError(
                    f"Workspace ONE Access: list directories: the IWA directory {item.get('name')!r} has no directoryId",
                    call="list directories",
                )
            found.append(await self.read_directory(directory_id))
        return found

    # ----- plumbing ----------------------------------------------------------------------------------

    def _directory_path(self, directory_id: str) -> str:
        return f"{self._config.directories_path.rstrip('/')}/{quote(directory_id, safe='')}"

    def _session_for_call(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            if not self._own_session:
                raise WorkspaceOneError("Workspace ONE Access: the HTTP session passed to the client is closed")
            self._session = aiohttp.ClientSession()
        return self._session

    async def _api(
        self,
        call: str,
        method: str,
        path: str,
        *,
        accept: str,
        body: bytes | None = None,
        content_type: str | None = None,
    ) -> _Response:
        """An authenticated call: 2xx returned; 401 refreshes the token and retries once; the rest raise."""
        for attempt in (1, 2):
            token = await self._bearer()
            headers = {"Authorization": f"Bearer {token}", "Accept": accept}
            if content_type is not None:
                headers["Content-Type"] = content_type
            response = await self._send(call, method, path, headers=headers, data=body)
            if response.status != 401:
                break
            self._drop_token(token)
            if attempt == 2:
                raise WorkspaceOneAuthError(
                    f"Workspace ONE Access: {call} failed: HTTP 401 twice, with a fresh token the second time "
                    "(the OAuth client may lack the admin role)",
                    call=call,
                    status=401,
                )
        self._raise_for(call, response)
        return response

    async def _bearer(self) -> str:
        async with self._token_lock:
            if self._token is not None and time.monotonic() < self._token_valid_until:
                return self._token
            self._token = None
            call = "token request"
            response = await self._send(
                call,
                "POST",
                self._config.token_path,
                headers={"Authorization": self._basic, "Accept": JSON},
                data={"grant_type": "client_credentials"},
            )
            if response.status in (400, 401, 403):
                error = _oauth_error_code(response.body)
                raise WorkspaceOneAuthError(
                    f"Workspace ONE Access: {call} refused: HTTP {response.status}"
                    + (f" ({error})" if error else "")
                    + ": check WS1_CLIENT_ID and WS1_CLIENT_SECRET",
                    call=call,
                    status=response.status,
                )
            self._raise_for(call, response)
            data = self._json(call, response)
            token = data.get("access_token") if isinstance(data, dict) else None
            if not isinstance(token, str) or not token:
                raise WorkspaceOneError(f"Workspace ONE Access: {call}: the answer has no access_token", call=call)
            expires_in = data.get("expires_in")
            if isinstance(expires_in, int | float) and not isinstance(expires_in, bool) and expires_in > 0:
                lifetime = max(0.0, expires_in - min(TOKEN_MARGIN_SECONDS, expires_in * 0.1))
            else:
                lifetime = float("inf")  # no expiry announced: used until the service answers 401
            self._token = token
            self._token_valid_until = time.monotonic() + lifetime
            return token

    def _drop_token(self, token: str) -> None:
        if self._token == token:  # a concurrent call may already have fetched a newer one
            self._token = None

    async def _send(
        self,
        call: str,
        method: str,
        path: str,
        *,
        headers: dict[str, str],
        data: bytes | dict[str, str] | None = None,
    ) -> _Response:
        session = self._session_for_call()
        started = time.monotonic()
        try:
            async with session.request(
                method,
                self._base + path,
                headers=headers,
                data=data,
                ssl=self._ssl,
                timeout=self._timeout,
                allow_redirects=False,
            ) as resp:
                body = await resp.read()
                response = _Response(
                    status=resp.status,
                    reason=resp.reason or "",
                    content_type=resp.headers.get("Content-Type", "").strip(),
                    body=body,
                )
        except TimeoutError:
            log.debug("workspace_one %s %s -> timeout", method, path)
            raise WorkspaceOneUnavailable(
                f"Workspace ONE Access: {call} failed: no answer within {self._config.timeout_seconds:g} s "
                "(workspace_one.timeout_seconds)",
                call=call,
            ) from None
        except aiohttp.ClientSSLError as exc:
            log.debug("workspace_one %s %s -> TLS error", method, path)
            raise WorkspaceOneUnavailable(
                f"Workspace ONE Access: {call} failed: TLS error ({self._scrub(str(exc))}); "
                "check the tenant's certificate (workspace_one.verify_tls)",
                call=call,
            ) from None
        except aiohttp.ClientError as exc:
            log.debug("workspace_one %s %s -> %s", method, path, type(exc).__name__)
            raise WorkspaceOneUnavailable(
                f"Workspace ONE Access: {call} failed: {type(exc).__name__}: {self._scrub(str(exc))}",
                call=call,
            ) from None
        log.debug("workspace_one %s %s -> %d (%.3f s)", method, path, response.status, time.monotonic() - started)
        return response

    def _raise_for(self, call: str, response: _Response) -> None:
        status = response.status
        if 200 <= status < 300:
            return
        excerpt = self._excerpt(response.body)
        detail = f"HTTP {status} {response.reason}".rstrip() + (f": {excerpt}" if excerpt else "")
        message = f"Workspace ONE Access: {call} failed: {detail}"
        if status >= 500:
            raise WorkspaceOneUnavailable(message, call=call, status=status)
        if 400 <= status < 500:
            raise WorkspaceOneRejected(message, call=call, status=status, body_excerpt=excerpt)
        raise WorkspaceOneError(message, call=call, status=status)  # 1xx/3xx: redirects are not followed

    def _json(self, call: str, response: _Response) -> Any:
        try:
            return json.loads(response.body)
        except (ValueError, UnicodeDecodeError):
            raise WorkspaceOneError(f"Workspace ONE Access: {call}: the answer is not JSON", call=call) from None

    def _excerpt(self, body: bytes) -> str:
        text = body[:2000].decode("utf-8", errors="replace")
        text = self._scrub(text)
        text = "".join(ch if ch.isprintable() else " " for ch in text)
        text = " ".join(text.split())
        return text if len(text) <= _EXCERPT_LIMIT else text[: _EXCERPT_LIMIT - 3] + "..."

    def _scrub(self, text: str) -> str:
        for value in [*self._scrub_values, *([self._token] if self._token else [])]:
            text = text.replace(value, "[redacted]")
        text = _BEARER.sub(r"\1 [redacted]", text)
        return _TOKEN_FIELD.sub(r'\1"[redacted]"', text)


_BEARER = re.compile(r"\b(Bearer|Basic|HZN)\s+[A-Za-z0-9._~+/=-]+", re.IGNORECASE)
_TOKEN_FIELD = re.compile(
    r'("(?:access_token|refresh_token|id_token|token|sessionToken|client_secret|password|secret)"\s*:\s*)"[^"]*"',
    re.IGNORECASE,
)
_OAUTH_ERROR = re.compile(r"^[A-Za-z0-9_.\-]{1,64}$")


def _oauth_error_code(body: bytes) -> str:
    """The OAuth ``error`` code (``invalid_client``...) when the body has a plausible one; never free text."""
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return ""
    error = data.get("error") if isinstance(data, dict) else None
    return error if isinstance(error, str) and _OAUTH_ERROR.match(error) else ""
