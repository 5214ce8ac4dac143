"""bot.workspace_one (real aiohttp client) against sandbox.workspace_one (real aiohttp server) on 127.0.0.1."""

from __future__ import annotations

import asyncio
import copy
import json
import logging
import socket
import time

import aiohttp
import pytest
from pydantic import SecretStr

from bot.core.config import Secrets, WorkspaceOneConfig
from bot.systems.workspace_one import (
    IWA_TYPE,
    Directory,
    WorkspaceOneAuthError,
    WorkspaceOneClient,
    WorkspaceOneError,
    WorkspaceOneRejected,
    WorkspaceOneUnavailable,
)
from sandbox.workspace_one import (
    MEDIA_TYPES,
    WorkspaceOneStandIn,
    iwa_directory,
    ldap_directory,
    local_directory,
)

IWA_MEDIA = WorkspaceOneConfig().directory_media_type
LDAP_MEDIA = MEDIA_TYPES["ACTIVE_DIRECTORY_LDAP"]


def token_requests(ws1: WorkspaceOneStandIn):
    return [r for r in ws1.requests if r.path == ws1.token_path]


def api_statuses(ws1: WorkspaceOneStandIn):
    return [(r.method, r.path.rsplit("/", 1)[-1], r.status) for r in ws1.requests]


def without(document: dict, *keys: str) -> dict:
    return {k: v for k, v in document.items() if k not in keys}


# ----- construction ----------------------------------------------------------------------------------


def test_missing_url_is_a_clear_error():
    secrets = Secrets(ws1_client_id=SecretStr("id"), ws1_client_secret=SecretStr("s3cret-value"))
    with pytest.raises(ValueError, match=r"workspace_one\.url"):
        WorkspaceOneClient(WorkspaceOneConfig(), secrets)


@pytest.mark.parametrize(
    ("secrets", "missing"),
    [
        (Secrets(), "WS1_CLIENT_ID and WS1_CLIENT_SECRET"),
        (Secrets(ws1_client_id=SecretStr("id")), "WS1_CLIENT_SECRET"),
        (Secrets(ws1_client_secret=SecretStr("s3cret-value")), "WS1_CLIENT_ID"),
    ],
)
def test_missing_credentials_name_the_variables(secrets, missing):
    with pytest.raises(ValueError, match=missing) as info:
        WorkspaceOneClient(WorkspaceOneConfig(url="https://tenant.example.com"), secrets)
    assert "s3cret-value" not in str(info.value)


# ----- token flow ------------------------------------------------------------------------------------


async def test_one_token_for_several_calls(ws1, make_client):
    client = make_client(ws1)
    items = await client.list_directories()
    assert {i["type"] for i in items} == {"ACTIVE_DIRECTORY_IWA", "ACTIVE_DIRECTORY_LDAP", "LOCAL"}
    iwa = await client.iwa_directories()
    await client.read_directory(iwa[0].id)
    await asyncio.gather(*(client.read_directory(i["directoryId"]) for i in items))

    assert ws1.tokens_issued == 1
    (token_call,) = token_requests(ws1)
    assert token_call.method == "POST"
    assert token_call.headers["Content-Type"].startswith("application/x-www-form-urlencoded")
    assert token_call.body == b"grant_type=client_credentials"
    # every answer a 200, but the first LDAP and LOCAL reads: their media types are not the IWA one (406, then JSON)
    refused = {r.path.rsplit("/", 1)[-1] for r in ws1.requests if r.status == 406}
    assert refused == {i["directoryId"] for i in items if i["type"] != IWA_TYPE}
    assert all(r.status in (200, 406) for r in ws1.requests)


async def test_concurrent_first_calls_share_one_token(ws1, make_client):
    client = make_client(ws1)
    await asyncio.gather(*(client.list_directories() for _ in range(5)))
    assert ws1.tokens_issued == 1


async def test_expired_token_is_refreshed_once_and_the_call_retried(ws1, make_client):
    client = make_client(ws1)
    await client.list_directories()
    ws1.expire_tokens()

    items = await client.list_directories()

    assert len(items) == 3
    assert ws1.tokens_issued == 2
    assert [(r.method, r.path, r.status) for r in ws1.requests[-3:]] == [
        ("GET", ws1.directories_path, 401),
        ("POST", ws1.token_path, 200),
        ("GET", ws1.directories_path, 200),
    ]


async def test_token_is_renewed_before_it_expires(make_client):
    async with WorkspaceOneStandIn(token_ttl_seconds=1) as ws1:
        client = make_client(ws1)
        await client.list_directories()
        await client.list_directories()
        assert ws1.tokens_issued == 1
        await asyncio.sleep(0.95)  # the client keeps a margin of 10 % of a short lifetime (30 s of a long one)
        await client.list_directories()
        assert ws1.tokens_issued == 2
        assert all(r.status == 200 for r in ws1.requests)  # renewed ahead of time: never a 401


async def test_refused_fresh_token_is_an_auth_error(ws1, make_client):
    client = make_client(ws1)
    directory = (await client.iwa_directories())[0]
    ws1.expire_tokens()
    ws1.reject_tokens = True

    with pytest.raises(WorkspaceOneAuthError) as info:
        await client.update_directory(directory, {"useStartTls": False})

    assert info.value.status == 401
    assert "update directory" in str(info.value) and "401 twice" in str(info.value)
    assert ws1.tokens_issued == 2  # one refresh, not a loop
    assert [r.status for r in ws1.update_requests] == [401, 401]
    assert ws1.updates == []


async def test_wrong_client_secret_is_an_auth_error_without_the_secret(ws1, make_client):
    wrong = "definitely-wrong-secret-" + ws1.client_secret[:6]
    client = make_client(ws1, secrets=ws1.secrets(ws1_client_secret=SecretStr(wrong)))

    with pytest.raises(WorkspaceOneAuthError) as info:
        await client.list_directories()

    message = str(info.value)
    assert "token request" in message and "401" in message and "invalid_client" in message
    assert "WS1_CLIENT_SECRET" in message
    assert wrong not in message and ws1.client_secret not in message and ws1.client_id not in message
    assert [r.path for r in ws1.requests] == [ws1.token_path]  # nothing else was tried
    assert isinstance(info.value, WorkspaceOneError)


async def test_secret_changed_on_the_service_refuses_the_refresh(ws1, make_client):
    client = make_client(ws1)
    await client.list_directories()
    ws1.client_secret = "rotated-" + ws1.client_secret
    ws1.expire_tokens()

    with pytest.raises(WorkspaceOneAuthError, match="token request refused: HTTP 401"):
        await client.list_directories()


# ----- list, read, update ------------------------------------------------------------------------------


async def test_round_trip_changes_only_use_start_tls(make_client):
    iwa = iwa_directory("corp.example.com")
    iwa["description"] = 'Zürich – Büro, "quoted" and \\ backslash'  # non-ASCII and escapes survive as sent
    iwa["extensionAttributes"] = {"b": [1, 2.5, None, {"z": True}], "a": 10**20}
    ldap = ldap_directory("ldap.example.com")
    async with WorkspaceOneStandIn([iwa, ldap, local_directory()]) as ws1:
        served = ws1.serialize(iwa["directoryId"])
        client = make_client(ws1)

        (directory,) = await client.iwa_directories()
        assert directory.id == iwa["directoryId"] and directory.name == "corp.example.com"
        assert directory.type == IWA_TYPE and directory.media_type == IWA_MEDIA
        assert directory.document == iwa and directory.document["useStartTls"] is True
        as_read = copy.deepcopy(directory.document)

        await client.update_directory(directory, {"useStartTls": False})

        (update,) = ws1.updates
        assert update.directory_id == directory.id
        assert update.method == "PUT" and update.media_type == IWA_MEDIA
        # Byte for byte: the body is the document exactly as served, with that one value flipped.
        assert served.count(b'"useStartTls":true') == 1
        assert update.body == served.replace(b'"useStartTls":true', b'"useStartTls":false')
        assert list(update.document) == list(as_read)  # same keys, same order
        assert json.dumps(without(update.document, "useStartTls")) == json.dumps(without(as_read, "useStartTls"))
        assert directory.document == as_read  # the caller's copy is untouched

        back = await client.read_directory(directory.id)
        assert back.document["useStartTls"] is False
        assert without(back.document, "useStartTls") == without(iwa, "useStartTls")
        assert ws1.directories[ldap["directoryId"]] == ldap  # AD over LDAP: never touched
        assert [r.path.rsplit("/", 1)[-1] for r in ws1.update_requests] == [directory.id]


async def test_iwa_directories_reads_only_iwa(make_client):
    on, off = iwa_directory("corp.example.com"), iwa_directory("emea.example.com", use_start_tls=False)
    ldap = ldap_directory()
    async with WorkspaceOneStandIn([ldap, on, local_directory(), off]) as ws1:
        client = make_client(ws1)
        found = await client.iwa_directories()

        assert [(d.name, d.document["useStartTls"]) for d in found] == [
            ("corp.example.com", True),
            ("emea.example.com", False),
        ]
        read_paths = {r.path for r in ws1.requests if r.method == "GET" and r.path != ws1.directories_path}
        assert read_paths == {
            f"{ws1.directories_path}/{on['directoryId']}",
            f"{ws1.directories_path}/{off['directoryId']}",
        }


async def test_list_and_read_send_the_configured_media_types(ws1, make_client):
    client = make_client(ws1)
    await client.iwa_directories()
    list_call, read_call = ws1.requests[1], ws1.requests[2]
    assert list_call.headers["Accept"] == WorkspaceOneConfig().directory_list_media_type
    assert read_call.headers["Accept"] == IWA_MEDIA
    assert "Authorization" not in list_call.headers  # the stand-in never records it


async def test_read_falls_back_to_json_on_406_and_updates_in_that_media_type(ws1, make_client):
    client = make_client(ws1, directory_media_type="application/vnd.example.not-this-one+json")
    (iwa_id,) = ws1.iwa_ids()

    directory = await client.read_directory(iwa_id)

    assert directory.media_type == "application/json"
    assert [r.status for r in ws1.requests if r.path.endswith(iwa_id)] == [406, 200]
    await client.update_directory(directory, {"useStartTls": False})
    assert ws1.updates[0].media_type == "application/json"
    assert ws1.directories[iwa_id]["useStartTls"] is False


async def test_reading_an_ldap_directory_keeps_its_own_media_type(ws1, make_client):
    client = make_client(ws1)
    ldap_id = next(i for i, d in ws1.directories.items() if d["type"] == "ACTIVE_DIRECTORY_LDAP")
    directory = await client.read_directory(ldap_id)
    assert directory.media_type == "application/json"  # the IWA type was not acceptable: 406, then JSON
    assert directory.document == ws1.directories[ldap_id]


async def test_update_verb_is_configurable(make_client):
    async with WorkspaceOneStandIn(update_method="PATCH") as ws1:
        put_client = make_client(ws1, update_method="PUT")
        directory = (await put_client.iwa_directories())[0]
        with pytest.raises(WorkspaceOneRejected) as info:
            await put_client.update_directory(directory, {"useStartTls": False})
        assert info.value.status == 405

        await make_client(ws1, update_method="PATCH").update_directory(directory, {"useStartTls": False})
        assert [u.method for u in ws1.updates] == ["PATCH"]


async def test_update_in_a_media_type_the_service_does_not_take_is_rejected(ws1, make_client):
    client = make_client(ws1)
    directory = (await client.iwa_directories())[0]
    wrong = Directory(directory.id, directory.name, directory.type, directory.document, LDAP_MEDIA)
    with pytest.raises(WorkspaceOneRejected) as info:
        await client.update_directory(wrong, {"useStartTls": False})
    assert info.value.status == 415
    assert ws1.updates == []


@pytest.mark.parametrize("status", [400, 403, 409])
async def test_update_rejected(ws1, make_client, status):
    client = make_client(ws1)
    directory = (await client.iwa_directories())[0]
    before = copy.deepcopy(ws1.directories)
    ws1.reject_updates, ws1.reject_status = True, status

    with pytest.raises(WorkspaceOneRejected) as info:
        await client.update_directory(directory, {"useStartTls": False})

    exc = info.value
    assert exc.status == status
    assert f"update directory {directory.id} (useStartTls)" in str(exc) and f"HTTP {status}" in str(exc)
    assert "directory.update.rejected" in exc.body_excerpt and len(exc.body_excerpt) <= 200
    assert ws1.updates == [] and ws1.directories == before


async def test_unknown_directory_is_rejected_with_404(ws1, make_client):
    with pytest.raises(WorkspaceOneRejected) as info:
        await make_client(ws1).read_directory("no-such-directory")
    assert info.value.status == 404 and "read directory no-such-directory" in str(info.value)


# ----- unavailable -----------------------------------------------------------------------------------


async def test_5xx_is_unavailable_and_names_the_call(ws1, make_client):
    client = make_client(ws1)
    await client.list_directories()
    (iwa_id,) = ws1.iwa_ids()
    ws1.fail_next = 1

    with pytest.raises(WorkspaceOneUnavailable) as info:
        await client.read_directory(iwa_id)

    assert info.value.status == 503 and f"read directory {iwa_id} failed: HTTP 503" in str(info.value)
    assert (await client.read_directory(iwa_id)).id == iwa_id  # the next call goes through


async def test_5xx_on_the_token_call_is_unavailable(ws1, make_client):
    ws1.fail_next = 1
    with pytest.raises(WorkspaceOneUnavailable, match="token request failed: HTTP 503") as info:
        await make_client(ws1).list_directories()
    assert info.value.status == 503


async def test_timeout_is_unavailable(ws1, make_client):
    client = make_client(ws1, timeout_seconds=0.3)
    await client.list_directories()
    ws1.delay_seconds = 2

    started = time.monotonic()
    with pytest.raises(WorkspaceOneUnavailable) as info:
        await client.list_directories()

    assert time.monotonic() - started < 1.5
    assert info.value.status is None
    assert "list directories failed: no answer within 0.3 s" in str(info.value)
    ws1.delay_seconds = 0


async def test_connection_refused_is_unavailable(make_client):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    config = WorkspaceOneConfig(url=f"http://127.0.0.1:{port}", timeout_seconds=2)
    secrets = Secrets(ws1_client_id=SecretStr("id"), ws1_client_secret=SecretStr("s3cret-value"))
    async with WorkspaceOneClient(config, secrets) as client:
        with pytest.raises(WorkspaceOneUnavailable, match="token request failed: ClientConnectorError") as info:
            await client.list_directories()
    assert info.value.status is None and "s3cret-value" not in str(info.value)


# ----- TLS ---------------------------------------------------------------------------------------------


async def test_tls_is_verified_by_default(self_signed, make_client):
    async with WorkspaceOneStandIn(ssl_context=self_signed) as ws1:
        assert ws1.url.startswith("https://")
        with pytest.raises(WorkspaceOneUnavailable, match="TLS error") as info:
            await make_client(ws1).list_directories()
        assert "verify_tls" in str(info.value)
        assert ws1.requests == []  # nothing was sent over the unverified connection


async def test_verify_tls_false_connects_and_warns(self_signed, make_client, caplog):
    caplog.set_level(logging.WARNING, logger="bot.systems.workspace_one")
    async with WorkspaceOneStandIn(ssl_context=self_signed) as ws1:
        client = make_client(ws1, verify_tls=False)
        assert len(await client.list_directories()) == 3
    assert any(r.levelno == logging.WARNING and "NOT verified" in r.getMessage() for r in caplog.records)


# ----- secrets stay out of logs and errors ------------------------------------------------------------


async def test_secrets_and_tokens_never_logged(ws1, make_client, caplog):
    caplog.set_level(logging.DEBUG)
    errors: list[str] = []
    client = make_client(ws1)
    directory = (await client.iwa_directories())[0]
    ws1.expire_tokens()
    await client.list_directories()  # 401, refresh, retry
    ws1.reject_updates = True
    with pytest.raises(WorkspaceOneRejected) as rejected:
        await client.update_directory(directory, {"useStartTls": False})
    errors.append(str(rejected.value))
    ws1.reject_updates = False
    ws1.fail_next = 1
    with pytest.raises(WorkspaceOneUnavailable) as unavailable:
        await client.list_directories()
    errors.append(str(unavailable.value))
    await client.update_directory(directory, {"useStartTls": False})
    bad = make_client(ws1, secrets=ws1.secrets(ws1_client_secret=SecretStr("wrong-" + ws1.client_secret)))
    with pytest.raises(WorkspaceOneAuthError) as refused:
        await bad.list_directories()
    errors.append(str(refused.value))

    text = caplog.text + "\n".join(errors)
    assert ws1.tokens_issued == 2
    for secret in [ws1.client_secret, "wrong-" + ws1.client_secret, *ws1.issued_tokens]:
        assert secret not in text
    assert "Bearer" not in text and "Basic" not in text and "Authorization" not in text
    # one DEBUG line per HTTP request, naming method, path and status
    lines = [
        r.getMessage() for r in caplog.records if r.name == "bot.systems.workspace_one" and r.levelno == logging.DEBUG
    ]
    assert len(lines) == len(ws1.requests)
    assert f"PUT {ws1.directories_path}/{directory.id} -> 200" in "\n".join(lines)


def test_excerpts_are_scrubbed():
    secrets = Secrets(ws1_client_id=SecretStr("bot-client"), ws1_client_secret=SecretStr("hunter2-secret"))
    client = WorkspaceOneClient(WorkspaceOneConfig(url="https://tenant.example.com"), secrets)
    body = (
        b'{"message":"bad client hunter2-secret","access_token":"abc.def.ghi",'
        b'"echo":"Authorization: Bearer eyJhbGciOi.x.y"}' + b"x" * 500
    )
    excerpt = client._excerpt(body)
    assert "hunter2-secret" not in excerpt and "abc.def.ghi" not in excerpt and "eyJhbGciOi" not in excerpt
    assert len(excerpt) <= 200 and "[redacted]" in excerpt


# ----- sessions ----------------------------------------------------------------------------------------


async def test_a_session_passed_in_is_left_open(ws1, make_client):
    async with aiohttp.ClientSession() as session:
        async with WorkspaceOneClient(ws1.config(), ws1.secrets(), session=session) as client:
            await client.list_directories()
        assert not session.closed


async def test_own_session_is_closed(ws1):
    client = WorkspaceOneClient(ws1.config(), ws1.secrets())
    await client.list_directories()
    session = client._session
    await client.close()
    assert session is not None and session.closed
