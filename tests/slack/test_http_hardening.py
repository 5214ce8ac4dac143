"""The HTTP endpoint under strangers' load (issue 17, part 2): real sockets on 127.0.0.1 against a real SlackBot.

A stranger (anyone without a Slack signature) gets a header timeout, a body timeout and a body limit checked
before the body is read; its connections are capped (the oldest closed first) while a signed request is still
answered; the bot listens on 127.0.0.1 unless told; out-of-descriptor accept errors are logged at a rate.
"""

from __future__ import annotations

import asyncio
import configparser
import contextlib
import errno
import logging
import os
import resource
import socket
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

import aiohttp

from bot.slack.door import ACCEPT_MESSAGE, AcceptErrorFilter
from sandbox.slack import SlackStandIn
from sandbox.slack_state import APPROVER, REQUESTER
from sandbox.threaded import running_host
from tests.slack.conftest import SIGNING_SECRET
from tests.support.waiting import eventually

ROOT = Path(__file__).resolve().parents[2]
SHORT = "http: header_timeout_seconds = 0.5\nhttp: body_timeout_seconds = 0.5"


async def connect(h) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    host, port = h.bot._runner.addresses[0][:2]
    return await asyncio.open_connection(host, port)


def fresh_headers(length: int | None = None, *, chunked: bool = False) -> bytes:
    """Request headers that pass the pre-check (fresh timestamp, a well-formed signature) without being signed."""
    lines = [
        "POST /slack/events HTTP/1.1",
        "Host: 127.0.0.1",
        "Content-Type: application/x-www-form-urlencoded",
        f"X-Slack-Request-Timestamp: {int(time.time())}",
        "X-Slack-Signature: v0=" + "0" * 64,
    ]
    if length is not None:
        lines.append(f"Content-Length: {length}")
    if chunked:
        lines.append("Transfer-Encoding: chunked")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


async def until_closed(reader: asyncio.StreamReader, timeout: float = 10) -> bytes:
    """Everything the bot sends until it closes the connection (a reset counts as closed)."""
    received = b""
    try:
        async with asyncio.timeout(timeout):
            while chunk := await reader.read(65536):
                received += chunk
    except (ConnectionResetError, BrokenPipeError):
        pass
    return received


async def test_a_half_sent_header_is_closed_after_the_header_timeout(slack_bot):
    h = await slack_bot(extra=SHORT)
    reader, writer = await connect(h)
    writer.write(b"POST /slack/events HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slack-Sig")
    await writer.drain()
    assert await until_closed(reader) == b""  # closed, not answered: it never finished asking
    assert h.bot.gate.timed_out == 1 and h.bot.gate.strangers == 0
    writer.close()


async def test_a_header_trickled_a_byte_at_a_time_is_still_closed(slack_bot):
    h = await slack_bot(extra=SHORT)
    reader, writer = await connect(h)
    closed = asyncio.get_running_loop().create_task(until_closed(reader))
    for byte in b"POST /slack/events HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slack-Signature: v0=":
        if closed.done():
            break
        try:
            writer.write(bytes([byte]))
            await writer.drain()
        except ConnectionError:
            break
        await asyncio.sleep(0.05)
    assert await closed == b""
    assert closed.done()
    writer.close()


async def test_a_slow_body_is_cut_after_the_body_timeout(slack_bot):
    h = await slack_bot(extra=SHORT)
    reader, writer = await connect(h)
    writer.write(fresh_headers(1000) + b"token=abc")
    await writer.drain()
    answer = await until_closed(reader)
    assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
    assert b"Connection: close" in answer
    writer.close()


async def test_a_declared_oversized_body_is_refused_before_any_of_it_is_read(slack_bot):
    h = await slack_bot()
    reader, writer = await connect(h)
    writer.write(fresh_headers(10 * 1024 * 1024))  # the headers only: the answer must not wait for the body
    await writer.drain()
    answer = await until_closed(reader)
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    writer.close()


async def test_an_undeclared_oversized_body_is_cut_once_past_the_limit(slack_bot):
    h = await slack_bot()
    reader, writer = await connect(h)
    answered = asyncio.get_running_loop().create_task(until_closed(reader))
    writer.write(fresh_headers(chunked=True))
    chunk = b"a" * 16384
    sent = 0
    while not answered.done() and sent < 8 * 1024 * 1024:
        try:
            writer.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            await writer.drain()
        except ConnectionError:
            break
        sent += len(chunk)
        await asyncio.sleep(0.01)  # the bot's turn to read
    answer = await answered
    # refused within a few chunks of the 128 KiB limit, not after reading all 8 MiB the client meant to send
    assert sent < 1024 * 1024, sent
    assert answer == b"" or answer.startswith(b"HTTP/1.1 413"), answer[:200]  # a reset may eat the answer
    writer.close()


async def test_requests_aiohttp_cannot_parse_are_answered_400_and_logged_once_without_a_traceback(slack_bot, caplog):
    """aiohttp logs each unparsable request as an ERROR with its traceback: a stranger could fill the log."""
    h = await slack_bot()
    for junk in (
        fresh_headers(chunked=True) + b"zz\r\nnot a chunk\r\n",
        b"POST /slack/events HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Long: " + b"a" * 10_000 + b"\r\n\r\n",
        b"POST /slack/events HTTP/1.1\r\n" + b"".join(b"X-%d: a\r\n" % i for i in range(100)) + b"\r\n",
    ) * 3:
        reader, writer = await connect(h)
        writer.write(junk)
        await writer.drain()
        answer = await until_closed(reader)
        assert answer.split(b"\r\n", 1)[0].split(b" ")[1] in (b"400", b"431"), answer[:200]
        writer.close()
    logged = [r for r in caplog.records if r.name == "aiohttp.server"]
    assert len(logged) == 1 and logged[0].levelno == logging.WARNING and logged[0].exc_info is None
    assert "\n" not in logged[0].getMessage()
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


async def test_a_request_without_a_slack_signature_is_refused_before_its_body_is_read(slack_bot):
    h = await slack_bot()
    reader, writer = await connect(h)
    writer.write(b"POST /slack/events HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 60000\r\n\r\n")
    await writer.drain()
    answer = await until_closed(reader)
    assert answer.startswith(b"HTTP/1.1 401"), answer[:200]
    assert b"Connection: close" in answer  # a stranger's connection carries one request
    writer.close()


async def test_beyond_the_connection_cap_strangers_are_closed_oldest_first_and_a_signed_request_is_answered(
    slack_bot,
):
    h = await slack_bot(extra="http: max_connections = 4\nhttp: header_timeout_seconds = 30")
    h.bot.gate.grace = 0.0  # no newcomer's grace here: the next test has it
    strangers = []
    for _ in range(12):
        reader, writer = await connect(h)
        writer.write(b"POST /slack/events HTTP/1.1\r\nHost: 127.0.0.1\r\n")  # and nothing more
        await writer.drain()
        strangers.append((reader, writer))
    await eventually(lambda: h.bot.gate.evicted == 8, timeout=10, what="8 strangers closed to make room")
    assert h.bot.gate.strangers == 4
    for reader, _writer in strangers[:8]:  # the oldest went first
        assert await until_closed(reader, timeout=5) == b""
    result = await h.sender.send_slash_command(REQUESTER, "status")
    assert result.status == 200
    assert h.bot.gate.strangers <= 4
    for _reader, writer in strangers:
        writer.close()


async def test_a_burst_of_newcomers_passes_the_cap_until_they_are_old_enough_to_close(slack_bot):
    """A connection younger than the grace is not closed for room (it may be a signed request not yet verified);
    once older, the oldest are closed down to the cap."""
    h = await slack_bot(extra="http: max_connections = 4\nhttp: header_timeout_seconds = 30")
    h.bot.gate.grace = 0.3
    strangers = []

    async def stranger() -> None:
        reader, writer = await connect(h)
        writer.write(b"POST /slack/events HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        await writer.drain()
        strangers.append((reader, writer))

    for _ in range(8):
        await stranger()
    await eventually(lambda: h.bot.gate.strangers == 8, timeout=10, what="8 newcomers in, over the cap of 4")
    assert h.bot.gate.evicted == 0
    # once old enough they go, down to the cap, with no newcomer asking (when descriptors ran out, none can)
    await eventually(lambda: h.bot.gate.evicted == 4, timeout=10, what="back down to the cap")
    assert h.bot.gate.strangers == 4
    await stranger()  # at the cap, a newcomer closes the oldest
    await eventually(lambda: h.bot.gate.evicted == 5, timeout=10, what="the oldest closed for the newcomer")
    assert h.bot.gate.strangers == 4
    for reader, _writer in strangers[:5]:
        assert await until_closed(reader, timeout=5) == b""
    for _reader, writer in strangers:
        writer.close()


async def test_a_signed_request_keeps_its_connection_and_it_no_longer_counts_as_a_stranger(slack_bot):
    h = await slack_bot(extra="http: max_connections = 2")
    fields_request = h.sender.build(
        {"command": "/idm-upgrade", "text": "help", "user_id": REQUESTER, "channel_id": "C0OPSCHANL"}
    )
    async with aiohttp.ClientSession() as session:
        async with session.post(fields_request.url, data=fields_request.body, headers=fields_request.headers) as r:
            await r.read()
            assert r.headers.get("Connection", "").lower() != "close"
        assert h.bot.gate.strangers == 0  # the kept-alive connection is Slack's now


async def test_a_flood_of_health_checks_asks_the_store_and_slack_once(slack_bot):
    """/healthz is open to anyone: 50 at once share one check (not 50 store calls and 50 auth.test)."""
    h = await slack_bot()
    before = h.bot.health_checks

    async def health() -> int:
        async with aiohttp.ClientSession() as session, session.get(f"{h.bot.url}/healthz") as response:
            await response.read()
            return response.status

    statuses = await asyncio.gather(*(health() for _ in range(50)))
    assert set(statuses) == {200}
    assert h.bot.health_checks - before <= 2  # one, or two if the flood straddled the 1 s window


async def test_the_bot_listens_on_127_0_0_1_unless_configured(slack_bot):
    h = await slack_bot()
    assert h.bot._runner.addresses[0][0] == "127.0.0.1" and h.bot.url.startswith("http://127.0.0.1:")


async def test_http_bind_is_honoured(slack_bot):
    h = await slack_bot(extra='http: bind = "127.0.0.2"')
    assert h.bot._runner.addresses[0][0] == "127.0.0.2"
    assert (await h.sender.send_slash_command(REQUESTER, "help")).status == 200


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.asynccontextmanager
async def serving(tmp_path, slack, host, *args: str, http: str = "", nofile: int | None = None):
    """`idm-upgrade serve --http ARGS` as a program (its log in a file): yields (port, the log's path)."""
    endpoint = urlsplit(host.endpoint)
    path = tmp_path / "bot.toml"
    path.write_text(f"""
[slack]
channel = "C0OPSCHANL"
requesters = ["{REQUESTER}"]
approvers = ["{APPROVER}"]
[database]
path = "{tmp_path / "bot.db"}"
[installer]
url = "{host.installer_url}"
sha256 = "{host.state.artifact.advertised_sha256}"
version = "19.03.0.1"
[winrm]
scheme = "http"
transport = "basic"
[http]
{http}
[hosts.host01]
address = "{endpoint.hostname}"
port = {endpoint.port}
""")
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("IDM_UPGRADE_", "SLACK_"))}
    env |= {
        "SLACK_BOT_TOKEN": "xoxb-sandbox",
        "SLACK_SIGNING_SECRET": SIGNING_SECRET,
        "SLACK_API_URL": slack.api_url,
        "WINRM_USERNAME": host.username,
        "WINRM_PASSWORD": host.password,
    }

    def limit() -> None:  # in the child, before it starts: a hard limit its own raise cannot pass
        if nofile is not None:
            resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))

    log_path = tmp_path / "bot.log"
    with log_path.open("w") as log_file:
        process = await asyncio.create_subprocess_exec(
            *(sys.executable, "-m", "bot", "serve", "--http", "--port", str(port), "--config", str(path), *args),
            cwd=ROOT,
            env=env,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=log_file,
            preexec_fn=limit,
        )
        try:
            yield port, log_path
        finally:
            process.terminate()
            await asyncio.wait_for(process.wait(), 60)


async def healthy(url: str) -> bool:
    try:
        async with aiohttp.ClientSession() as session, session.get(f"{url}/healthz") as response:
            return response.status in (200, 503)
    except aiohttp.ClientConnectionError:
        return False


async def test_serve_bind_overrides_the_configuration(tmp_path):
    """`idm-upgrade serve --http --bind ADDR` as a program: it listens there, not at `http.bind`."""
    async with SlackStandIn(signing_secret=SIGNING_SECRET) as slack:
        with running_host("default") as host:
            async with serving(tmp_path, slack, host, "--bind", "127.0.0.3", http='bind = "127.0.0.2"') as (
                port,
                log_path,
            ):
                assert await eventually(
                    lambda: healthy(f"http://127.0.0.3:{port}"), timeout=60, what="the bot answering on 127.0.0.3"
                )
                with socket.socket() as probe:
                    assert probe.connect_ex(("127.0.0.2", port)) != 0  # not at the configured address
            assert f"serving Slack at http://127.0.0.3:{port}/slack/events" in log_path.read_text()


async def test_out_of_descriptors_the_bot_says_so_once_and_serves_again_when_they_are_free(tmp_path):
    """A bot with only 96 descriptors (a hard limit it cannot raise), 200 strangers connecting at once: accepts
    fail with EMFILE (asyncio retries each second), the log says so in one line, not one per retry; once the
    newcomers' grace has passed the bot closes the oldest down to its cap, and a signed request is answered
    again, strangers still connected, without a restart."""
    async with SlackStandIn(signing_secret=SIGNING_SECRET) as slack:
        with running_host("default") as host:
            http = "header_timeout_seconds = 30\nmax_connections = 1000"  # the strangers stay: descriptors run out
            async with serving(tmp_path, slack, host, http=http, nofile=96) as (port, log_path):
                url = f"http://127.0.0.1:{port}"
                assert await eventually(lambda: healthy(url), timeout=60, what="the bot answering")
                strangers = []

                async def stranger() -> None:
                    with contextlib.suppress(OSError, TimeoutError):
                        reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 2)
                        writer.write(b"POST /slack/events HTTP/1.1\r\nHost: 127.0.0.1\r\n")
                        strangers.append(writer)

                await asyncio.gather(*(stranger() for _ in range(200)))
                await eventually(
                    lambda: ACCEPT_MESSAGE in log_path.read_text(), timeout=20, what="the bot out of descriptors"
                )
                await asyncio.sleep(3)  # three more accept retries, held back
                sender = slack.sender(f"{url}/slack/events", SIGNING_SECRET)

                async def answered() -> bool:
                    try:
                        return (await sender.send_slash_command(REQUESTER, "help")).status == 200
                    except (aiohttp.ClientError, OSError, TimeoutError):
                        return False

                # the strangers still connected: the bot closed the oldest down to its cap, so descriptors are free
                assert await eventually(answered, timeout=30, what="a signed request answered again")
                for writer in strangers:
                    writer.close()
            log = log_path.read_text()
            assert log.count(ACCEPT_MESSAGE) == 1, log[-3000:]
            assert "Traceback" not in log


def _record(message: str, exc: BaseException | None = None) -> logging.LogRecord:
    exc_info = (type(exc), exc, None) if exc else None
    return logging.LogRecord("asyncio", logging.ERROR, __file__, 1, message, (), exc_info)


def test_out_of_descriptor_accept_errors_are_logged_at_most_once_per_interval():
    now = [1000.0]
    accept_filter = AcceptErrorFilter(interval=60, clock=lambda: now[0])
    emfile = OSError(errno.EMFILE, "Too many open files")
    passed = []
    for _ in range(100):  # asyncio retries the accept every second
        record = _record(f"{ACCEPT_MESSAGE}\nsocket: <asyncio.TransportSocket fd=6>", emfile)
        if accept_filter.filter(record):
            passed.append(record)
        now[0] += 1
    assert len(passed) == 2  # at 0 s and at 60 s
    first, second = (r.getMessage() for r in passed)
    assert first.startswith(ACCEPT_MESSAGE) and "Too many open files" in first and "\n" not in first
    assert "59 more held back in the last 60 s" in second
    assert passed[0].exc_info is None  # no traceback per line
    assert accept_filter.filter(_record("Unclosed client session"))  # everything else passes untouched


async def test_the_accept_error_filter_is_on_the_asyncio_logger_while_serving(slack_bot):
    h = await slack_bot()
    assert h.bot._accept_errors in logging.getLogger("asyncio").filters
    await h.bot.stop()
    assert h.bot._accept_errors not in logging.getLogger("asyncio").filters


def test_the_systemd_unit_raises_the_descriptor_limit_and_keeps_its_files_private():
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.optionxform = str  # type: ignore[assignment,method-assign]
    unit.read(ROOT / "deploy" / "idm-upgrade.service")
    service = unit["Service"]
    assert int(service["LimitNOFILE"]) >= 65536
    assert service["UMask"] == "0077"
    assert service["StateDirectoryMode"] == "0700"
