"""A Workspace ONE Access API stand-in: aiohttp on 127.0.0.1, the paths and media types of the real service.

Real aiohttp (bot.workspace_one) talks to it unmodified::

    async with WorkspaceOneStandIn() as ws1:
        config = ws1.config(timeout_seconds=2)       # a WorkspaceOneConfig pointing here
        secrets = ws1.secrets()                      # a Secrets with the stand-in's client id and secret
        ...
        ws1.requests, ws1.updates, ws1.directories   # what happened, and the state now

What it serves (its own copy of the vendor's paths and media types, not the client's defaults):

- ``POST /SAAS/auth/oauthtoken``: HTTP Basic client credentials and ``grant_type=client_credentials`` ->
  ``{access_token, token_type, expires_in, scope}``; random tokens, valid ``token_ttl_seconds``. Wrong
  credentials: 401 ``invalid_client``; a wrong grant: 400 ``unsupported_grant_type``.
- ``GET {directories_path}`` (Accept: the list media type, application/json or */*): ``{"items": [...]}``.
- ``GET {directories_path}/{id}``: the document, in the directory's media type (IWA:
  ``...directory.ad.over.iwa+json``, LDAP: ``...directory.ad.over.ldap+json``, LOCAL: ``...directory.local+json``)
  or application/json when only that is accepted; 406 when neither is.
- ``{update_method} {directories_path}/{id}``: a document in the directory's media type or application/json
  (415 otherwise) with the same directoryId and type (400 otherwise) replaces the stored one; 200 with it.

Every API route wants ``Authorization: Bearer <token>`` with an issued, unexpired token (401 otherwise).

Switches (plain attributes, change them at any time):

- ``reject_updates = True``: updates answer ``reject_status`` (400) with a JSON error body; nothing stored.
- ``fail_next = N``: the next N requests, whatever they are, answer 503.
- ``delay_seconds = S``: every request is answered S seconds late (client timeouts).
- ``reject_tokens = True``: every bearer token is refused with 401, even a fresh one.
- ``expire_tokens()``: every token issued so far is expired now.
- ``client_secret = "..."``: the token endpoint checks the new value from then on.

Records: ``requests`` (every request: method, path, headers without Authorization, body, status),
``updates`` (the updates that were stored), ``tokens_issued`` and ``issued_tokens``.

``ssl_context``: serve HTTPS with it (``url`` then starts with https://), to exercise certificate checks.

The media type of an IWA directory update and the update verb are not publicly documented (field notes,
section 2): this stand-in implements the configured assumption, it is not evidence of the real behaviour.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import copy
import hmac
import json
import secrets
import ssl
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from pydantic import SecretStr

from bot.core.config import Secrets, WorkspaceOneConfig

# The service's own paths, verb and media types, written out here rather than taken from the client's
# defaults: a stand-in that reads the bot's configuration can only ever agree with it.
TOKEN_PATH = "/SAAS/auth/oauthtoken"
DIRECTORIES_PATH = "/SAAS/jersey/manager/api/connectormanagement/directoryconfigs"
UPDATE_METHOD = "PUT"
MEDIA_PREFIX = "application/vnd.vmware.horizon.manager.connector.management.directory"
LIST_MEDIA_TYPE = f"{MEDIA_PREFIX}.list+json"
MEDIA_TYPES = {
    "ACTIVE_DIRECTORY_IWA": f"{MEDIA_PREFIX}.ad.over.iwa+json",
    "ACTIVE_DIRECTORY_LDAP": f"{MEDIA_PREFIX}.ad.over.ldap+json",
    "LOCAL": f"{MEDIA_PREFIX}.local+json",  # an assumption; the bot never reads LOCAL directories
}
JSON = "application/json"
DEFAULT_CLIENT_ID = "idm-upgrade-bot"

# A self-signed certificate's shape; not a real key or certificate.
_FAKE_CERT = (
    "-----BEGIN CERTIFICATE-----\n"
    "MIIDdzCCAl+gAwIBAgIEbSandboxMA0GCSqGSIb3DQEBCwUAMGwxEDAOBgNVBAYTB1Vu\n"
    "a25vd24xEDAOBgNVBAgTB1Vua25vd24xEDAOBgNVBAcTB1Vua25vd24xFDASBgNVBAoT\n"
    "-----END CERTIFICATE-----\n"
)


def _domain_dn(domain: str) -> str:
    return ",".join(f"DC={part}" for part in domain.split("."))


def _links(directory_id: str, directories_path: str) -> dict[str, Any]:
    self_href = f"{directories_path}/{directory_id}"
    return {
        "self": {"href": self_href},
        "syncprofile": {"href": f"{self_href}/syncprofile"},
        "sync": {"href": f"{self_href}/syncprofile/sync"},
        "connectors": {"href": f"{self_href}/connectors"},
    }


def ad_directory(
    name: str = "corp.example.com",
    *,
    type: str = "ACTIVE_DIRECTORY_IWA",
    use_start_tls: bool = True,
    directory_id: str | None = None,
    domains: list[str] | None = None,
    directories_path: str = DIRECTORIES_PATH,
) -> dict[str, Any]:
    """A realistic AD directory config (IWA or LDAP); the fields mirror what the service returns."""
    directory_id = directory_id or str(uuid.uuid4())
    domains = domains if domains is not None else [name]
    base_dn = _domain_dn(domains[0] if domains else name)
    iwa = type == "ACTIVE_DIRECTORY_IWA"
    return {
        "directoryId": directory_id,
        "name": name,
        "type": type,
        "syncConfigurationEnabled": True,
        "countDomains": len(domains),
        "domains": list(domains),
        "baseDN": base_dn,
        "bindDN": f"CN=svc-idm,OU=Service Accounts,{base_dn}",
        "useSRV": True,
        "useStartTls": use_start_tls,
        "sslCertificate": _FAKE_CERT if use_start_tls else None,
        "directorySearchAttribute": "sAMAccountName",
        "useGlobalCatalog": False,
        "canonicalizeBindDN": iwa,
        "joinDomainUser": f"svc-join@{domains[0]}" if iwa and domains else None,
        "syncConnectorInstanceId": str(uuid.uuid5(uuid.NAMESPACE_DNS, f"connector.{name}")),
        "userAttributeMappings": [
            {"attributeName": "userName", "directoryAttributeName": "sAMAccountName", "required": True},
            {"attributeName": "email", "directoryAttributeName": "mail", "required": True},
            {"attributeName": "firstName", "directoryAttributeName": "givenName", "required": False},
            {"attributeName": "lastName", "directoryAttributeName": "sn", "required": False},
            {"attributeName": "distinguishedName", "directoryAttributeName": "distinguishedName", "required": False},
            {"attributeName": "objectGUID", "directoryAttributeName": "objectGUID", "required": False},
        ],
        "groupBaseDNs": [f"OU=Groups,{base_dn}"],
        "syncSchedule": {"frequency": "EVERY_HOUR", "lastSyncTime": 1700000000000},
        "_links": _links(directory_id, directories_path),
    }


def iwa_directory(name: str = "corp.example.com", **kwargs: Any) -> dict[str, Any]:
    return ad_directory(name, type="ACTIVE_DIRECTORY_IWA", **kwargs)


def ldap_directory(name: str = "ldap.example.com", **kwargs: Any) -> dict[str, Any]:
    return ad_directory(name, type="ACTIVE_DIRECTORY_LDAP", **kwargs)


def local_directory(
    name: str = "System Directory",
    *,
    directory_id: str | None = None,
    directories_path: str = DIRECTORIES_PATH,
) -> dict[str, Any]:
    directory_id = directory_id or str(uuid.uuid4())
    return {
        "directoryId": directory_id,
        "name": name,
        "type": "LOCAL",
        "syncConfigurationEnabled": False,
        "countDomains": 1,
        "domains": ["System Domain"],
        "userAttributeMappings": [
            {"attributeName": "userName", "directoryAttributeName": "userName", "required": True},
            {"attributeName": "email", "directoryAttributeName": "email", "required": True},
        ],
        "_links": _links(directory_id, directories_path),
    }


def default_directories(iwa_name: str | None = None, *, iwa_starttls: bool = True) -> list[dict[str, Any]]:
    """One AD-over-IWA directory with STARTTLS on (named ``iwa_name``, for the domain corp.example.com; off
    with ``iwa_starttls=False``, as a tenant already upgraded has it), one AD-over-LDAP with STARTTLS on,
    one local directory."""
    iwa = iwa_directory(iwa_name or "corp.example.com", domains=["corp.example.com"], use_start_tls=iwa_starttls)
    return [iwa, ldap_directory("ldap.example.com"), local_directory()]


@dataclass
class RecordedRequest:
    method: str
    path: str
    headers: dict[str, str]  # without Authorization
    body: bytes
    status: int | None = None  # filled in when the answer is known
    at: float = field(default_factory=time.monotonic)

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class RecordedUpdate:
    directory_id: str
    method: str
    media_type: str
    document: dict[str, Any]
    body: bytes  # exactly as received


class WorkspaceOneStandIn:
    """A Workspace ONE Access tenant on 127.0.0.1:port (0 picks a free port)."""

    def __init__(
        self,
        directories: Iterable[dict[str, Any]] | None = None,
        *,
        client_id: str = DEFAULT_CLIENT_ID,
        client_secret: str | None = None,
        token_ttl_seconds: float = 3600,
        update_method: str = UPDATE_METHOD,
        token_path: str = TOKEN_PATH,
        directories_path: str = DIRECTORIES_PATH,
        list_media_type: str = LIST_MEDIA_TYPE,
        host: str = "127.0.0.1",
        port: int = 0,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        docs = default_directories() if directories is None else [copy.deepcopy(d) for d in directories]
        self.directories: dict[str, dict[str, Any]] = {d["directoryId"]: d for d in docs}
        self.client_id = client_id
        self.client_secret = client_secret if client_secret is not None else secrets.token_urlsafe(24)
        self.token_ttl_seconds = token_ttl_seconds
        self.update_method = update_method.upper()
        self.token_path = token_path
        self.directories_path = directories_path.rstrip("/")
        self.list_media_type = list_media_type
        self.host = host
        self.port = port
        self.ssl_context = ssl_context
        # switches
        self.reject_updates = False
        self.reject_status = 400
        self.fail_next = 0
        self.delay_seconds = 0.0
        self.reject_tokens = False
        # called with the count of directory-list reads so far, before answering one: a test's tenant admin
        # adding a directory at a chosen moment (say, between the bot's last check and its update)
        self.before_list: Callable[[int], None] | None = None
        self.list_reads = 0
        # records
        self.requests: list[RecordedRequest] = []
        self.updates: list[RecordedUpdate] = []
        self.tokens_issued = 0
        self.issued_tokens: list[str] = []  # every token handed out, so tests can look for leaks
        self._tokens: dict[str, float] = {}  # token -> monotonic expiry
        self._runner: web.AppRunner | None = None

    # ----- lifecycle -------------------------------------------------------------------------------

    async def start(self) -> WorkspaceOneStandIn:
        app = web.Application(middlewares=[self._record])
        app.router.add_post(self.token_path, self._token)
        app.router.add_get(self.directories_path, self._list)
        app.router.add_route("*", self.directories_path + "/{directory_id}", self._directory)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port, ssl_context=self.ssl_context)
        await site.start()
        if self.port == 0:
            self.port = self._runner.addresses[0][1]
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> WorkspaceOneStandIn:
        return await self.start()

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    @property
    def url(self) -> str:
        """The tenant root, as ``workspace_one.url`` wants it."""
        scheme = "https" if self.ssl_context is not None else "http"
        return f"{scheme}://{self.host}:{self.port}"

    def config(self, **overrides: Any) -> WorkspaceOneConfig:
        values: dict[str, Any] = {
            "url": self.url,
            "update_method": self.update_method,
            "token_path": self.token_path,
            "directories_path": self.directories_path,
            "directory_list_media_type": self.list_media_type,
        }
        values.update(overrides)
        return WorkspaceOneConfig(**values)

    def secrets(self, **overrides: Any) -> Secrets:
        values: dict[str, Any] = {
            "ws1_client_id": SecretStr(self.client_id),
            "ws1_client_secret": SecretStr(self.client_secret),
        }
        values.update(overrides)
        return Secrets(**values)

    # ----- test helpers ----------------------------------------------------------------------------

    def expire_tokens(self) -> None:
        """Every token issued so far stops working now (the next API call with one gets 401)."""
        self._tokens.clear()

    def media_type(self, directory_id: str) -> str:
        return MEDIA_TYPES.get(self.directories[directory_id].get("type", ""), JSON)

    def serialize(self, directory_id: str) -> bytes:
        """The exact bytes a read of this directory returns."""
        return _dump(self.directories[directory_id])

    @property
    def update_requests(self) -> list[RecordedRequest]:
        """Every request that tried to change a directory (accepted or not)."""
        prefix = self.directories_path + "/"
        return [r for r in self.requests if r.method not in ("GET", "HEAD") and r.path.startswith(prefix)]

    def iwa_ids(self) -> list[str]:
        return [i for i, d in self.directories.items() if d.get("type") == "ACTIVE_DIRECTORY_IWA"]

    # ----- HTTP --------------------------------------------------------------------------------------

    @web.middleware
    async def _record(self, request: web.Request, handler: Any) -> web.StreamResponse:
        body = await request.read()
        headers = {k: v for k, v in request.headers.items() if k.lower() != "authorization"}
        record = RecordedRequest(request.method, request.path, headers, body)
        self.requests.append(record)
        if self.delay_seconds:
            await asyncio.sleep(self.delay_seconds)
        if self.fail_next > 0:
            self.fail_next -= 1
            response: web.StreamResponse = _error(503, "service.unavailable", "The service is temporarily unavailable")
        else:
            try:
                response = await handler(request)
            except web.HTTPException as exc:
                record.status = exc.status
                raise
        record.status = response.status
        return response

    async def _token(self, request: web.Request) -> web.StreamResponse:
        if not self._basic_ok(request.headers.get("Authorization", "")):
            return web.json_response(
                {"error": "invalid_client", "error_description": "Bad client credentials"},
                status=401,
                headers={"WWW-Authenticate": 'Basic realm="oauth"'},
            )
        form = await request.post()
        if form.get("grant_type") != "client_credentials":
            return web.json_response(
                {"error": "unsupported_grant_type", "error_description": "Unsupported grant type"}, status=400
            )
        token = secrets.token_urlsafe(32)
        self._tokens[token] = time.monotonic() + self.token_ttl_seconds
        self.tokens_issued += 1
        self.issued_tokens.append(token)
        ttl = self.token_ttl_seconds
        return web.json_response(
            {
                "access_token": token,
                "token_type": "Bearer",
                "expires_in": int(ttl) if float(ttl).is_integer() else ttl,
                "scope": "admin",
                "jti": str(uuid.uuid4()),
            }
        )

    def _basic_ok(self, header: str) -> bool:
        scheme, _, value = header.partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return False
        client_id, sep, client_secret = decoded.partition(":")
        return bool(sep) and (
            hmac.compare_digest(client_id.encode(), self.client_id.encode())
            & hmac.compare_digest(client_secret.encode(), self.client_secret.encode())
        )

    def _bearer_ok(self, request: web.Request) -> bool:
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or self.reject_tokens:
            return False
        expiry = self._tokens.get(token.strip())
        if expiry is None:
            return False
        if time.monotonic() >= expiry:
            del self._tokens[token.strip()]
            return False
        return True

    async def _list(self, request: web.Request) -> web.StreamResponse:
        if not self._bearer_ok(request):
            return _unauthorized()
        accepted = _accepted(request)
        if accepted and not ({self.list_media_type, JSON, "*/*"} & accepted):
            return _error(406, "not.acceptable", f"Acceptable: {self.list_media_type}")
        self.list_reads += 1
        if self.before_list is not None:
            self.before_list(self.list_reads)
        items = [
            {
                "directoryId": doc["directoryId"],
                "name": doc.get("name"),
                "type": doc.get("type"),
                "syncConfigurationEnabled": doc.get("syncConfigurationEnabled", False),
                "countDomains": doc.get("countDomains", 0),
                "_links": {"self": {"href": f"{self.directories_path}/{doc['directoryId']}"}},
            }
            for doc in self.directories.values()
        ]
        media_type = self.list_media_type if not accepted or accepted & {self.list_media_type, "*/*"} else JSON
        return web.Response(body=_dump({"items": items, "_links": {}}), content_type=media_type)

    async def _directory(self, request: web.Request) -> web.StreamResponse:
        directory_id = request.match_info["directory_id"]
        if request.method == "GET":
            if not self._bearer_ok(request):
                return _unauthorized()
            return self._read(request, directory_id)
        if request.method != self.update_method:
            return _error(405, "method.not.allowed", f"{request.method} is not supported on this resource")
        if not self._bearer_ok(request):
            return _unauthorized()
        return await self._update(request, directory_id)

    def _read(self, request: web.Request, directory_id: str) -> web.StreamResponse:
        if directory_id not in self.directories:
            return _error(404, "directory.not.found", "Directory not found")
        own = self.media_type(directory_id)
        accepted = _accepted(request)
        if not accepted or accepted & {own, "*/*"}:
            media_type = own
        elif JSON in accepted:
            media_type = JSON
        else:
            return _error(406, "not.acceptable", f"Acceptable: {own}, {JSON}")
        return web.Response(body=self.serialize(directory_id), content_type=media_type)

    async def _update(self, request: web.Request, directory_id: str) -> web.StreamResponse:
        if directory_id not in self.directories:
            return _error(404, "directory.not.found", "Directory not found")
        own = self.media_type(directory_id)
        if request.content_type not in (own, JSON):
            return _error(415, "unsupported.media.type", f"Expected {own}")
        if self.reject_updates:
            return _error(self.reject_status, "directory.update.rejected", "Updating this directory is not allowed")
        body = await request.read()
        try:
            document = json.loads(body)
        except (ValueError, UnicodeDecodeError):
            return _error(400, "invalid.json", "The request body is not valid JSON")
        if not isinstance(document, dict):
            return _error(400, "invalid.document", "The request body must be a JSON object")
        stored = self.directories[directory_id]
        if document.get("directoryId") != directory_id or document.get("type") != stored.get("type"):
            return _error(400, "invalid.document", "directoryId and type cannot change")
        self.directories[directory_id] = document
        self.updates.append(RecordedUpdate(directory_id, request.method, request.content_type, document, body))
        return web.Response(body=self.serialize(directory_id), content_type=own)


def _dump(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def _accepted(request: web.Request) -> set[str]:
    """The media types of the Accept header, parameters dropped; empty when there is no header."""
    header = request.headers.get("Accept", "")
    return {part.split(";")[0].strip().lower() for part in header.split(",") if part.strip()}


def _error(status: int, code: str, message: str) -> web.Response:
    return web.Response(
        body=_dump({"errors": [{"code": code, "message": message}]}),
        status=status,
        content_type=JSON,
    )


def _unauthorized() -> web.Response:
    response = _error(401, "unauthorized", "Full authentication is required to access this resource")
    response.headers["WWW-Authenticate"] = 'Bearer realm="oauth", error="invalid_token"'
    return response
