"""Secrets never leave the bot: distinctive fake secrets, every path that handles them, and a scan of
everything the bot wrote, sent or logged for them (and for their base64 forms): zero hits.

Each secret is ``<kind>-SECRET-<role>-<random hex>``; the needles are the whole secret, its random core,
the base64 of ``user:password`` as an ``Authorization: Basic`` header carries it, and the base64 of the
secret itself at the three byte alignments (so it is found inside any longer base64 text).

What is scanned (never the stand-ins' own state, which legitimately knows the secrets):
- every log record of every logger at DEBUG (formatted, with tracebacks, plus the raw arguments), and
  the stderr and stdout of every subprocess (run with the root logger at DEBUG);
- every Slack message (every version: text and blocks), ephemeral, response_url post, ack body, Socket
  Mode ack, and the parameters of every Web API call the bot made;
- every row of every table of the bot's database, and the raw bytes of the database, its WAL and lease;
- the text, repr and traceback of every exception the failure paths raised;
- `idm-upgrade audit export` (JSON and CSV) and `audit verify`;
- this test's own output.

Paths: a full default upgrade through Slack over HTTP (Workspace ONE Access, vCenter, both approvals);
a wrong WinRM password; a refused Workspace ONE Access token (Socket Mode, so the app token is used); a
revoked Slack bot token; `check-config`, `serve` with a secret missing, and the terminal `idm-upgrade run`
as subprocesses; an installer.url with a pre-signed query string (the host downloads with it; a failed
download's error names it). The counts are printed and recorded in tests/reliability/.results/secrets.json.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import os
import re
import secrets
import sqlite3
import sys
import traceback
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import pytest

from bot.core.config import Secrets, VCenterConfig
from bot.core.gates import gate_named
from bot.core.models import ApprovalState, RunState
from bot.slack.app import SlackBot, StartupError
from bot.systems.vcenter import VCenterClient
from bot.systems.winrm import WinRMExecutor
from bot.systems.workspace_one import WorkspaceOneClient
from sandbox.run import sandbox_config
from sandbox.slack import SlackStandIn
from sandbox.slack_state import APPROVER, OPS_CHANNEL, REQUESTER
from sandbox.winrm_server import start_hosts
from sandbox.workspace_one import WorkspaceOneStandIn
from tests.reliability import results
from tests.support.waiting import eventually
from tests.vcsim import VCSimUnavailable, build, running_vcsim

ROOT = Path(__file__).resolve().parents[2]
WINRM_USER = "sandbox-admin"
WS1_CLIENT_ID = "idm-upgrade-bot"
VCENTER_USER = "svc-snapshots@vsphere.local"
VM_NAME = "DC0_H0_VM0"


def _fake(prefix: str) -> str:
    return f"{prefix}{secrets.token_hex(10)}"


# The secrets of this run: distinctive, random, never seen anywhere before.
SECRET = {
    "SLACK_BOT_TOKEN": _fake("xoxb-SECRET-bot-"),
    "SLACK_SIGNING_SECRET": _fake("SECRET-signing-"),
    "SLACK_APP_TOKEN": _fake("xapp-SECRET-app-"),
    "WINRM_PASSWORD": _fake("SECRET-winrm-"),
    "WINRM_PASSWORD_WRONG": _fake("SECRET-winrm-wrong-"),
    "WS1_CLIENT_SECRET": _fake("SECRET-ws1-"),
    "WS1_CLIENT_SECRET_WRONG": _fake("SECRET-ws1-wrong-"),
    "VCENTER_PASSWORD": _fake("SECRET-vcenter-"),
    "VCENTER_PASSWORD_WRONG": _fake("SECRET-vcenter-wrong-"),
}
BASIC_USER = {
    "WINRM_PASSWORD": WINRM_USER,
    "WINRM_PASSWORD_WRONG": WINRM_USER,
    "WS1_CLIENT_SECRET": WS1_CLIENT_ID,
    "WS1_CLIENT_SECRET_WRONG": WS1_CLIENT_ID,
    "VCENTER_PASSWORD": VCENTER_USER,
    "VCENTER_PASSWORD_WRONG": VCENTER_USER,
}


def b64_forms(secret: str) -> list[str]:
    """The base64 text that any base64 encoding containing `secret` must contain, for each alignment."""
    forms = []
    for skip in range(3):
        data = secret[skip:].encode()
        data = data[: len(data) - len(data) % 3]
        forms.append(base64.b64encode(data).decode())
    return forms


MIN_CORE = 12  # the shortest random core searched on its own


def needles(extra: dict[str, str] | None = None) -> list[tuple[str, str, str]]:
    """(secret name, form, needle) for every secret of this run and `extra` (e.g. issued bearer tokens)."""
    found = []
    for name, value in {**SECRET, **(extra or {})}.items():
        found.append((name, "plain", value))
        core = value.rsplit("-", 1)[-1]
        # an issued token (token_urlsafe) may contain "-" anywhere: a short tail would match ordinary text
        if len(core) >= MIN_CORE:
            found.append((name, "core", core))
        if name in BASIC_USER:
            header = base64.b64encode(f"{BASIC_USER[name]}:{value}".encode()).decode()
            found.append((name, "basic-header", header))
        for index, form in enumerate(b64_forms(value)):
            found.append((name, f"base64/{index}", form))
    return found


# ----- what is scanned -------------------------------------------------------------------------------


@dataclass
class Corpus:
    """Texts to scan, each with where it came from (a category and a detail)."""

    items: list[tuple[str, str, str]] = field(default_factory=list)  # (category, detail, text)
    counts: Counter = field(default_factory=Counter)  # category -> units (lines, messages, rows, ...)

    def add(self, category: str, detail: str, text: str, units: int | None = None) -> None:
        self.items.append((category, detail, text))
        self.counts[category] += units if units is not None else len(text.splitlines())

    def scan(self, extra: dict[str, str] | None = None) -> list[str]:
        hits = []
        for name, form, needle in needles(extra):
            for category, detail, text in self.items:
                if needle in text:
                    at = text.index(needle)
                    context = text[max(0, at - 80) : at + len(needle) + 40].replace("\n", "\\n")
                    hits.append(f"{name} ({form}) in {category} [{detail}]: …{context}…")
        return hits


class LogCapture(logging.Handler):
    """Every record of every logger at DEBUG: the formatted line (tracebacks included) and the raw args."""

    FORMAT = logging.Formatter("%(asctime)s %(levelname)s %(name)s %(threadName)s: %(message)s")

    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.records: list[str] = []
        self._saved: list[tuple[logging.Logger, int, bool]] = []

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = self.FORMAT.format(record)
            raw = repr({k: v for k, v in vars(record).items() if k not in ("msg", "message", "asctime")})
        except Exception as exc:  # a record that cannot be formatted is still scanned as far as it goes
            text, raw = f"<unformattable {record.name}: {exc!r}> {record.msg!r}", repr(record.args)
        self.records.append(text + "\n" + f"{record.msg!s}" + "\n" + raw)

    def __enter__(self) -> LogCapture:
        root = logging.getLogger()
        self._saved.append((root, root.level, root.propagate))
        root.setLevel(logging.DEBUG)
        root.addHandler(self)
        for logger in list(logging.Logger.manager.loggerDict.values()):
            if isinstance(logger, logging.Logger):
                self._saved.append((logger, logger.level, logger.propagate))
                if logger.level > logging.DEBUG:
                    logger.setLevel(logging.DEBUG)
                if not logger.propagate:  # a logger that does not reach the root gets the handler itself
                    logger.addHandler(self)
        return self

    def __exit__(self, *exc_info: object) -> None:
        for logger, level, propagate in self._saved:
            logger.setLevel(level)
            if not propagate or logger is logging.getLogger():
                with contextlib.suppress(ValueError):
                    logger.removeHandler(self)
        self._saved.clear()

    def into(self, corpus: Corpus) -> None:
        for index, text in enumerate(self.records):
            corpus.add("log records", f"record {index}", text, units=1)


def exception_text(exc: BaseException) -> str:
    return f"{exc}\n{exc!r}\n" + "".join(traceback.format_exception(exc))


def slack_into(corpus: Corpus, slack: SlackStandIn, senders: list) -> None:
    """What Slack shows and what the bot sent to it."""
    ws = slack.workspace
    with ws.lock:
        for channel, messages in ws.messages.items():
            for message in messages:
                for number, version in enumerate(message.versions):
                    text = version.text + "\n" + json.dumps(version.blocks, ensure_ascii=False)
                    corpus.add("slack messages", f"{channel} {message.ts} v{number}", text, units=1)
        for ephemeral in ws.ephemerals:
            text = ephemeral.text + "\n" + json.dumps(ephemeral.blocks, ensure_ascii=False)
            corpus.add("slack ephemerals", f"{ephemeral.user} {ephemeral.source}", text, units=1)
        for record in ws.response_urls.values():
            for post in record.posts:
                corpus.add("slack response_url posts", record.kind, json.dumps(post.body, default=str), units=1)
        for view in ws.views.values():
            corpus.add("slack views", view.id, json.dumps(view.view, default=str), units=1)
    for call in slack.calls:
        corpus.add("slack api calls by the bot", call.method, json.dumps(call.params, default=str), units=1)
    for sender in senders:
        for result in sender.sent:
            corpus.add("bot http answers", str(result.status), result.body + json.dumps(result.headers), units=1)
    for ack in slack.socket.acks:
        corpus.add("socket mode acks", "ack", repr(ack), units=1)


def database_into(corpus: Corpus, db_path: Path) -> None:
    """Every row of every table, stringified; then the raw bytes of the files beside it."""
    conn = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    try:
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        for table in tables:
            for row in conn.execute(f'SELECT * FROM "{table}"'):
                corpus.add("database rows", table, str(row), units=1)
        for (sql,) in conn.execute("SELECT sql FROM sqlite_master WHERE sql IS NOT NULL"):
            corpus.add("database schema", "sqlite_master", sql, units=1)
    finally:
        conn.close()
    for path in sorted(db_path.parent.glob(db_path.name + "*")):
        corpus.add("database files (raw bytes)", path.name, path.read_bytes().decode("latin-1"), units=1)


PYTHON_DEBUG = (
    "import logging, sys; "
    "logging.basicConfig(level=logging.DEBUG, format='%(asctime)s %(levelname)s %(name)s: %(message)s'); "
    "from bot.cli import main; sys.exit(main(sys.argv[1:]))"
)


@dataclass
class Done:
    code: int
    out: str
    err: str


async def idm_upgrade(
    corpus: Corpus,
    *args: str,
    env: dict[str, str],
    stdin: str = "",
    timeout: float = 120,
    stdout_is: str = "subprocess stdout",
) -> Done:
    """`idm-upgrade ARGS` in a subprocess with every logger at DEBUG; its output goes into the corpus."""
    base = {k: os.environ[k] for k in ("PATH", "HOME", "LANG", "TMPDIR") if k in os.environ}
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        PYTHON_DEBUG,
        *args,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd=ROOT,
        env={**base, **env},
    )
    out, err = await asyncio.wait_for(process.communicate(stdin.encode()), timeout)
    done = Done(process.returncode, out.decode(errors="replace"), err.decode(errors="replace"))
    name = " ".join(a for a in args if not a.startswith("/"))[:60]
    corpus.add(stdout_is, name, done.out)
    corpus.add("subprocess stderr", name, done.err)
    return done


def write_toml(
    path: Path,
    db_path: Path,
    hosts: list,
    *,
    ws1_url: str | None = None,
    vcenter_url: str | None = None,
    installer_url: str | None = None,
):
    tables = "".join(
        f'[hosts.host{i:02d}]\naddress = "127.0.0.1"\nport = {urlsplit(h.endpoint).port}\n'
        + (f'vm_name = "{VM_NAME}"\n' if vcenter_url and i == 1 else "")
        for i, h in enumerate(hosts, start=1)
    )
    path.write_text(f"""
[slack]
channel = "{OPS_CHANNEL}"
requesters = ["U0REQUESTER"]
approvers = ["{APPROVER}"]
[database]
path = "{db_path}"
[installer]
url = "{installer_url or hosts[0].installer_url}"
sha256 = "{hosts[0].installer_sha256}"
version = "19.03.0.1"
[winrm]
scheme = "http"
transport = "basic"
poll_seconds = 0.2
connect_timeout_seconds = 1
[reboot]
timeout_seconds = 60
[workspace_one]
{f'url = "{ws1_url}"' if ws1_url else ""}
[vcenter]
{f'url = "{vcenter_url}"' if vcenter_url else ""}
{tables}""")
    return path


def secret_env(**overrides: str | None) -> dict[str, str]:
    env = {
        "SLACK_BOT_TOKEN": SECRET["SLACK_BOT_TOKEN"],
        "SLACK_SIGNING_SECRET": SECRET["SLACK_SIGNING_SECRET"],
        "SLACK_APP_TOKEN": SECRET["SLACK_APP_TOKEN"],
        "WINRM_USERNAME": WINRM_USER,
        "WINRM_PASSWORD": SECRET["WINRM_PASSWORD"],
        "WS1_CLIENT_ID": WS1_CLIENT_ID,
        "WS1_CLIENT_SECRET": SECRET["WS1_CLIENT_SECRET"],
        "VCENTER_USERNAME": VCENTER_USER,
        "VCENTER_PASSWORD": SECRET["VCENTER_PASSWORD"],
    }
    env.update(overrides)
    return {k: v for k, v in env.items() if v is not None}


# ----- the report --------------------------------------------------------------------------------------


def _key(category: str) -> str:
    return re.sub(r"\W+", "_", category).strip("_")


@pytest.fixture(scope="module")
def report():
    """Counts per path, recorded in tests/reliability/.results/secrets.json; the totals printed at the end."""
    figures: dict[str, dict[str, int]] = {}
    yield figures
    total = Counter()
    for entry in figures.values():
        total.update({k: v for k, v in entry.items() if isinstance(v, int)})
    print("\nsecrets scan, all paths:\n" + json.dumps(dict(total), indent=2))


@pytest.fixture
def scan(report, capsys, request):
    """scan(corpus, extra_secrets) at the end of a test: this test's own output is scanned as well."""

    def go(corpus: Corpus, extra: dict[str, str] | None = None) -> None:
        captured = capsys.readouterr()
        corpus.add("test output", "stdout", captured.out)
        corpus.add("test output", "stderr", captured.err)
        hits = corpus.scan(extra)
        figures = {f"scanned_{_key(category)}": n for category, n in corpus.counts.items()}
        figures |= {
            "scanned_items": sum(corpus.counts.values()),
            "secret_names": sorted({**SECRET, **(extra or {})}),
            "needles": len(needles(extra)),
            "hits": len(hits),
        }
        report[request.node.name] = figures
        results.record("secrets", request.node.name, figures)
        with capsys.disabled():
            print(f"\n{request.node.name}: {json.dumps(figures)}")
            sys.stdout.write(captured.out)
        assert not hits, "secrets leaked:\n" + "\n".join(hits[:20])

    return go


# ----- the bot in Slack, with the stand-ins -------------------------------------------------------------


@dataclass
class Stack:
    slack: SlackStandIn
    bot: SlackBot
    hosts: list
    ws1: WorkspaceOneStandIn
    db_path: Path
    senders: list

    @property
    def sender(self):
        return self.senders[0]


@contextlib.asynccontextmanager
async def slack_stack(
    tmp_path: Path,
    *,
    scenario: str = "default",
    bot_env: dict[str, str],
    standin_bot_token: str = SECRET["SLACK_BOT_TOKEN"],
    ws1_secret: str = SECRET["WS1_CLIENT_SECRET"],
    vcenter: dict[str, Any] | None = None,
    socket_mode: bool = False,
    installer_url: Callable[[str], str] | None = None,
):
    """``installer_url``: the configured installer.url made from the sandbox's (a pre-signed one, say)."""
    async with contextlib.AsyncExitStack() as stack:
        slack = await stack.enter_async_context(
            SlackStandIn(
                bot_token=standin_bot_token,
                app_token=SECRET["SLACK_APP_TOKEN"],
                signing_secret=SECRET["SLACK_SIGNING_SECRET"],
            )
        )
        hosts = await start_hosts(1, scenario, username=WINRM_USER, password=SECRET["WINRM_PASSWORD"], time_scale=0.01)
        for host in hosts:
            stack.push_async_callback(host.stop)
        ws1 = await stack.enter_async_context(WorkspaceOneStandIn(client_id=WS1_CLIENT_ID, client_secret=ws1_secret))
        db_path = tmp_path / "bot.db"
        config = sandbox_config(hosts, ws1.url, db_path)
        if installer_url:
            url = installer_url(hosts[0].installer_url)
            config = config.model_copy(update={"installer": config.installer.model_copy(update={"url": url})})
        if vcenter:
            config = config.model_copy(
                update={
                    "vcenter": VCenterConfig(url=vcenter["url"]),
                    "hosts": {"host01": config.hosts["host01"].model_copy(update={"vm_name": VM_NAME})},
                }
            )
        bot = SlackBot(config, Secrets.from_env(bot_env), socket_mode=socket_mode, api_url=slack.api_url)
        await bot.start(port=0)
        stack.push_async_callback(bot.stop)
        if socket_mode:
            await slack.wait_socket_connected(30)
        senders = [slack.sender(f"{bot.url}/slack/events")] if bot.url else []
        yield Stack(slack, bot, hosts, ws1, db_path, senders)


async def settle(s: Stack, run_id: str, *, socket: bool = False, timeout: float = 90) -> None:
    """Click every open request as the approver until the run ends; then wait for the thread."""
    clicked: set[str] = set()
    loop = asyncio.get_running_loop()
    stop = loop.time() + timeout
    while loop.time() < stop:
        run = await s.bot.store.call(s.bot.store.get_run, run_id)
        if not run.state.active:
            break
        for approval in await s.bot.store.call(s.bot.store.approvals, run_id):
            if approval.state is not ApprovalState.open or approval.id in clicked:
                continue
            action = gate_named(approval.gate).button
            found = s.slack.latest_button(OPS_CHANNEL, action, value=approval.id)
            if found is None:
                continue
            if socket:
                await s.slack.socket_click_button(APPROVER, action, value=approval.id, message_ts=found[0].ts)
            else:
                await s.sender.click_button(APPROVER, action, value=approval.id, message_ts=found[0].ts)
            clicked.add(approval.id)
        await asyncio.sleep(0.05)
    assert not (await s.bot.store.call(s.bot.store.get_run, run_id)).state.active, "the run did not finish"
    assert await s.bot.progress.idle(timeout=60), "the outbox did not drain"


async def audit_into(corpus: Corpus, config_path: Path) -> None:
    env = {"IDM_UPGRADE_CONFIG": str(config_path)}
    for fmt in ("json", "csv"):
        done = await idm_upgrade(corpus, "audit", "export", "--format", fmt, env=env, stdout_is="audit export")
        assert done.code == 0 and done.out.strip(), done.err
    done = await idm_upgrade(corpus, "audit", "verify", env=env)
    assert done.code == 0, done.out + done.err


async def first_run(s: Stack, timeout: float = 30):
    runs = await eventually(lambda: s.bot.store.call(s.bot.store.runs), timeout=timeout, what="a run was created")
    return runs[0]


async def replied(s: Stack, *answered) -> None:
    """Wait for the bot's reply to each request, sent through its response_url after the ack."""
    for result in answered:
        rid = str(result.sent_payload["response_url"]).rsplit("/", 1)[-1]
        await eventually(lambda rid=rid: s.slack.response_urls[rid].posts, what=f"a reply to {rid}")


@pytest.fixture(scope="module")
def vcsim_binary():
    try:
        return build()
    except VCSimUnavailable as exc:
        pytest.fail(str(exc), pytrace=False)


# ----- the scan itself --------------------------------------------------------------------------------


def test_the_scan_finds_planted_secrets():
    """A control: each needle form is found where a leak would put it, so zero hits means something."""
    quiet = logging.getLogger("tests.reliability.quiet")
    quiet.propagate = False
    try:
        with LogCapture() as logs:
            header = base64.b64encode(f"{WINRM_USER}:{SECRET['WINRM_PASSWORD']}".encode()).decode()
            logging.getLogger("urllib3.connectionpool").debug("headers: {'Authorization': 'Basic %s'}", header)
            try:
                raise RuntimeError(f"token {SECRET['SLACK_APP_TOKEN']} refused")
            except RuntimeError:
                quiet.exception("a library that does not propagate")
    finally:
        quiet.propagate = True
    corpus = Corpus()
    logs.into(corpus)
    for skip, name in enumerate(["WS1_CLIENT_SECRET", "VCENTER_PASSWORD", "SLACK_SIGNING_SECRET"]):
        wrapped = base64.b64encode(("x" * skip + f"secret={SECRET[name]};").encode()).decode()
        corpus.add("planted", f"base64 at offset {skip}", json.dumps({"blob": wrapped}))
    corpus.add("planted", "core", "…" + SECRET["SLACK_BOT_TOKEN"].rsplit("-", 1)[-1] + "…")
    found = {hit.split(" ", 1)[0] for hit in corpus.scan()}
    assert found == {
        "WINRM_PASSWORD",
        "SLACK_APP_TOKEN",
        "WS1_CLIENT_SECRET",
        "VCENTER_PASSWORD",
        "SLACK_SIGNING_SECRET",
        "SLACK_BOT_TOKEN",
    }, found
    assert any("(basic-header) in log records" in hit for hit in corpus.scan())


# ----- the paths -----------------------------------------------------------------------------------------


async def test_full_upgrade_through_slack_leaks_nothing(tmp_path, scan, vcsim_binary):
    corpus = Corpus()
    with (
        LogCapture() as logs,
        running_vcsim(username=VCENTER_USER, password=SECRET["VCENTER_PASSWORD"]) as vcsim,
    ):
        async with slack_stack(tmp_path, bot_env=secret_env(), vcenter=vcsim) as s:
            forged = await s.sender.send_slash_command(REQUESTER, "host01", signature="v0=" + "0" * 64)
            assert forged.status == 401
            response = await s.sender.send_slash_command(REQUESTER, "host01")
            assert response.status == 200
            run = await first_run(s)
            await settle(s, run.id)
            run = await s.bot.store.call(s.bot.store.get_run, run.id)
            assert run.state is RunState.succeeded, run.result
            steps = {r.step: r.state.value for r in await s.bot.store.call(s.bot.store.steps, run.id)}
            assert steps["snapshot"] == "succeeded" and steps["starttls"] == "succeeded", steps
            assert s.ws1.updates, "STARTTLS was turned off through the API"
            status = await s.sender.send_slash_command(REQUESTER, f"status {run.id}")
            history = await s.sender.send_slash_command(REQUESTER, "history host01")
            async with aiohttp.ClientSession() as http, http.get(f"{s.bot.url}/healthz") as health:
                corpus.add("bot http answers", "/healthz", await health.text(), units=1)
            await replied(s, status, history)  # their answers are part of what is scanned
            print(s.slack.render_channel(OPS_CHANNEL))
            tokens = {f"WS1_ACCESS_TOKEN_{i}": t for i, t in enumerate(s.ws1.issued_tokens)}
            assert tokens, "the bot used a Workspace ONE bearer token"
        slack_into(corpus, s.slack, s.senders)
        database_into(corpus, s.db_path)
        config_path = write_toml(tmp_path / "audit.toml", s.db_path, s.hosts)
        await audit_into(corpus, config_path)
    logs.into(corpus)
    scan(corpus, tokens)


async def test_wrong_winrm_password_leaks_nothing(tmp_path, scan):
    corpus = Corpus()
    with LogCapture() as logs:
        env = secret_env(WINRM_PASSWORD=SECRET["WINRM_PASSWORD_WRONG"], VCENTER_USERNAME=None, VCENTER_PASSWORD=None)
        async with slack_stack(tmp_path, bot_env=env) as s:
            await s.sender.send_slash_command(REQUESTER, "host01")
            run = await first_run(s)
            await settle(s, run.id)
            run = await s.bot.store.call(s.bot.store.get_run, run.id)
            assert run.state is RunState.failed and "refused the credentials" in run.result, run.result
            assert any(r.status == 401 for r in s.hosts[0].requests)
            # the executor's own exception, as any caller would see it
            executor = WinRMExecutor(s.bot.config, Secrets.from_env(env), retry_delays=())
            try:
                with pytest.raises(Exception) as raised:
                    await executor.run("host01", "preflight")
            finally:
                executor.close()
            corpus.add("exception texts", "WinRMExecutor.run, wrong password", exception_text(raised.value))
            print(s.slack.render_channel(OPS_CHANNEL))
        slack_into(corpus, s.slack, s.senders)
        database_into(corpus, s.db_path)
        await audit_into(corpus, write_toml(tmp_path / "audit.toml", s.db_path, s.hosts))
    logs.into(corpus)
    scan(corpus)


async def test_workspace_one_token_refused_in_socket_mode_leaks_nothing(tmp_path, scan):
    corpus = Corpus()
    with LogCapture() as logs:
        env = secret_env(VCENTER_USERNAME=None, VCENTER_PASSWORD=None)
        # the tenant's client secret was rotated: the bot's is refused at the token endpoint
        async with slack_stack(
            tmp_path, bot_env=env, ws1_secret=SECRET["WS1_CLIENT_SECRET_WRONG"], socket_mode=True
        ) as s:
            await s.slack.socket_send_slash_command(REQUESTER, "host01")
            run = await first_run(s)
            await settle(s, run.id, socket=True)
            run = await s.bot.store.call(s.bot.store.get_run, run.id)
            assert run.state is RunState.failed and run.result.startswith("starttls failed"), run.result
            assert any(r.path.endswith("oauthtoken") and r.status == 401 for r in s.ws1.requests)
            client = WorkspaceOneClient(s.ws1.config(timeout_seconds=5), Secrets.from_env(env))
            try:
                with pytest.raises(Exception) as raised:
                    await client.list_directories()
            finally:
                await client.close()
            corpus.add("exception texts", "WorkspaceOneClient, refused secret", exception_text(raised.value))
            print(s.slack.render_channel(OPS_CHANNEL))
        slack_into(corpus, s.slack, s.senders)
        database_into(corpus, s.db_path)
        await audit_into(corpus, write_toml(tmp_path / "audit.toml", s.db_path, s.hosts))
    logs.into(corpus)
    scan(corpus)


async def test_revoked_slack_token_and_refused_vcenter_login_leak_nothing(tmp_path, scan, vcsim_binary):
    corpus = Corpus()
    revoked = "xoxb-rotated-by-an-admin"  # what Slack accepts once the bot's token is revoked
    with LogCapture() as logs:
        env = secret_env(VCENTER_USERNAME=None, VCENTER_PASSWORD=None)
        async with slack_stack(tmp_path, bot_env=env, standin_bot_token=revoked) as s:
            # Bolt's auth.test fails: the command is refused before the bot sees it
            await s.sender.send_slash_command(REQUESTER, "check host01")
            assert await s.bot.store.call(s.bot.store.runs) == []
            assert s.slack.calls_to("auth.test", ok=False)
            # the token works, the run starts, and then it is revoked: the thread cannot be delivered
            s.slack.bot_token = SECRET["SLACK_BOT_TOKEN"]
            await s.sender.send_slash_command(REQUESTER, "check host01")
            run = await first_run(s)
            s.slack.bot_token = revoked
            await settle(s, run.id)
            assert s.slack.calls_to(ok=False) and any(c.error == "invalid_auth" for c in s.slack.calls)
            async with aiohttp.ClientSession() as http, http.get(f"{s.bot.url}/healthz") as health:
                corpus.add("bot http answers", "/healthz", await health.text(), units=1)
        slack_into(corpus, s.slack, s.senders)
        database_into(corpus, s.db_path)
        # the bot cannot start without the signing secret: the error names the variable, not a value
        with pytest.raises(StartupError) as raised:
            SlackBot(s.bot.config, Secrets.from_env(secret_env(SLACK_SIGNING_SECRET=None)), socket_mode=False)
        corpus.add("exception texts", "SlackBot without a signing secret", exception_text(raised.value))
        corpus.add("exception texts", "repr(Secrets)", repr(Secrets.from_env(secret_env())))
        with running_vcsim(username=VCENTER_USER, password=SECRET["VCENTER_PASSWORD"]) as vcsim:
            wrong = Secrets.from_env(secret_env(VCENTER_PASSWORD=SECRET["VCENTER_PASSWORD_WRONG"]))
            client = VCenterClient(VCenterConfig(url=vcsim["url"]), wrong)
            try:
                with pytest.raises(Exception) as raised:
                    await client.snapshots(VM_NAME)
            finally:
                await client.close()
            corpus.add("exception texts", "VCenterClient, wrong password", exception_text(raised.value))
            assert "refused the login" in str(raised.value)
    logs.into(corpus)
    scan(corpus)


async def test_cli_check_config_and_serve_with_a_missing_secret_leak_nothing(tmp_path, scan):
    corpus = Corpus()
    hosts = await start_hosts(1, "default", username=WINRM_USER, password=SECRET["WINRM_PASSWORD"], time_scale=0.01)
    try:
        async with WorkspaceOneStandIn(client_id=WS1_CLIENT_ID, client_secret=SECRET["WS1_CLIENT_SECRET"]) as ws1:
            config = write_toml(tmp_path / "idm-upgrade.toml", tmp_path / "serve.db", hosts, ws1_url=ws1.url)
            done = await idm_upgrade(corpus, "check-config", "--config", str(config), env=secret_env())
            assert done.code == 0 and "SLACK_BOT_TOKEN set" in done.out, done.out + done.err
            cases = [
                (["serve", "--http"], {"SLACK_SIGNING_SECRET": None}, "SLACK_SIGNING_SECRET is not set"),
                (["serve", "--socket-mode"], {"SLACK_APP_TOKEN": None}, "SLACK_APP_TOKEN is not set"),
                (["serve", "--http"], {"WS1_CLIENT_SECRET": None}, "WS1_CLIENT_SECRET"),
            ]
            for args, overrides, says in cases:
                done = await idm_upgrade(
                    corpus, *args, "--port", "0", "--config", str(config), env=secret_env(**overrides)
                )
                assert done.code == 2 and says in done.err, (args, done.code, done.err)
            # a configuration error never echoes the environment
            bad = tmp_path / "bad.toml"
            bad.write_text(config.read_text().replace("[slack]", "[slack]\ntoken = 'x'"))
            done = await idm_upgrade(corpus, "check-config", "--config", str(bad), env=secret_env())
            assert done.code == 2 and "unknown key" in done.err
    finally:
        for host in hosts:
            await host.stop()
    scan(corpus)


async def test_terminal_run_leaks_nothing(tmp_path, scan, vcsim_binary):
    corpus = Corpus()
    hosts = await start_hosts(1, "default", username=WINRM_USER, password=SECRET["WINRM_PASSWORD"], time_scale=0.01)
    try:
        with running_vcsim(username=VCENTER_USER, password=SECRET["VCENTER_PASSWORD"]) as vcsim:
            async with WorkspaceOneStandIn(client_id=WS1_CLIENT_ID, client_secret=SECRET["WS1_CLIENT_SECRET"]) as ws1:
                db_path = tmp_path / "terminal.db"
                config = write_toml(
                    tmp_path / "idm-upgrade.toml", db_path, hosts, ws1_url=ws1.url, vcenter_url=vcsim["url"]
                )
                done = await idm_upgrade(
                    corpus, "run", "host01", "--config", str(config), env=secret_env(), stdin="y\n" * 8
                )
                assert done.code == 0, done.out[-3000:] + done.err[-3000:]
                assert "host01: succeeded" in done.out and "audit trail intact" in done.out
                assert hosts[0].state.connector.version == "19.03.0.1" and ws1.updates
                tokens = {f"WS1_ACCESS_TOKEN_{i}": t for i, t in enumerate(ws1.issued_tokens)}
                print(done.out)
                database_into(corpus, db_path)
                await audit_into(corpus, config)
    finally:
        for host in hosts:
            await host.stop()
    scan(corpus, tokens)


def presigned(core: str) -> dict[str, str]:
    """The secrets of a pre-signed installer URL: the signature and the security token in its query."""
    return {"INSTALLER_URL_SIGNATURE": f"SECRET-sig-{core}", "INSTALLER_URL_TOKEN": f"SECRET-token-{core}x"}


def with_query(url: str, query: dict[str, str]) -> str:
    sig, token = query["INSTALLER_URL_SIGNATURE"], query["INSTALLER_URL_TOKEN"]
    return f"{url}?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Signature={sig}&X-Amz-Security-Token={token}&sig={sig}"


async def test_presigned_installer_url_leaks_nothing(tmp_path, scan):
    """The host downloads with the pre-signed query string; Slack, the database, the audit trail, the logs
    and check-config show the URL without it. A download that fails (the host's error names the URL it
    fetched) leaks nothing either."""
    corpus = Corpus()
    query = presigned(secrets.token_hex(10))
    env = secret_env(VCENTER_USERNAME=None, VCENTER_PASSWORD=None)
    with LogCapture() as logs:
        async with slack_stack(tmp_path, bot_env=env, installer_url=lambda url: with_query(url, query)) as s:
            assert query["INSTALLER_URL_SIGNATURE"] in s.bot.config.installer.url
            await s.sender.send_slash_command(REQUESTER, "host01")
            run = await first_run(s)
            await settle(s, run.id)
            run = await s.bot.store.call(s.bot.store.get_run, run.id)
            assert run.state is RunState.succeeded, run.result
            assert s.hosts[0].state.connector.version == "19.03.0.1", "the host downloaded with the query string"
            status = await s.sender.send_slash_command(REQUESTER, f"status {run.id}")
            await replied(s, status)
            print(s.slack.render_channel(OPS_CHANNEL))
            config_path = write_toml(
                tmp_path / "idm-upgrade.toml",
                s.db_path,
                s.hosts,
                ws1_url=s.ws1.url,
                installer_url=s.bot.config.installer.url,
            )
            done = await idm_upgrade(corpus, "check-config", "--config", str(config_path), env=env)
            assert done.code == 0, done.out + done.err
            shown = [done.out]
        slack_into(corpus, s.slack, s.senders)
        database_into(corpus, s.db_path)
        await audit_into(corpus, config_path)
        # the same query string on a path the artifact store does not have: the host's error names the URL
        failed_db = tmp_path / "failed"
        failed_db.mkdir()
        missing = lambda url: with_query(url.rsplit("/", 1)[0] + "/missing-build.exe", query)  # noqa: E731
        async with slack_stack(failed_db, bot_env=env, installer_url=missing) as s:
            await s.sender.send_slash_command(REQUESTER, "host01")
            run = await first_run(s)
            await settle(s, run.id)
            run = await s.bot.store.call(s.bot.store.get_run, run.id)
            assert run.state is RunState.failed and "download of" in run.result, run.result
            shown.append(run.result)
            print(s.slack.render_channel(OPS_CHANNEL))
        slack_into(corpus, s.slack, s.senders)
        database_into(corpus, s.db_path)
    logs.into(corpus)
    scan(corpus, query)
    # not hidden by dropping it: check-config and the failure show the URL, without its query
    for text in shown:
        assert "/artifacts/" in text and "?<redacted>" in text, text
