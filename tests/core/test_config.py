"""Configuration: every documented key parses; each class of error is one line naming the key, exit 2."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from pydantic import BaseModel

from bot import cli
from bot.core.config import Config, ConfigError, Secrets, config_path, load_config, parse_config

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "idm-upgrade.example.toml"

MINIMAL = """
[slack]
channel = "C0OPSCHANL"
requesters = ["U0REQ00001"]
[installer]
url = "https://artifacts.example.com/connector.exe"
sha256 = "%s"
version = "19.03.0.1"
[hosts.host01]
address = "10.0.0.1"
""" % ("ab" * 32)

EVERY_KEY = """
[slack]
channel = "G0PRIVATE1"
requesters = ["U0REQ00001", "S0GROUP001"]
approvers = ["W0ENTUSER1"]
allow_self_approval = true
min_approvals = 2
approval_timeout_minutes = 15
messages_per_second = 0.5
updates_per_minute = 30
fleet_progress = "threads"
max_hosts_per_request = 5
app_id = "A0APP00001"
allow_direct_messages = true
home_refresh_seconds = 2.5
[preflight]
min_free_disk_gb = 7.5
pending_reboot = "ask"
[policy]
approve_install = false
[database]
path = "/tmp/x.db"
[installer]
url = "https://fileserver.corp.example/share/connector.exe"
sha256 = "%s"
version = "19.03.0.1"
arguments = "/S /log={log} /from={installer}"
work_dir = 'D:\\idm'
timeout_minutes = 90
busy_retries = 1
busy_wait_seconds = 30
[connector]
service = "OtherService"
product_name = "VMware IDM*"
log_path = 'D:\\conn.log'
service_timeout_seconds = 100
[winrm]
scheme = "http"
port = 5999
transport = "kerberos"
server_cert_validation = "ignore"
ca_trust_path = "/etc/ca.pem"
connect_timeout_seconds = 3
operation_timeout_seconds = 10
read_timeout_seconds = 15
command_timeout_seconds = 120
poll_seconds = 2
max_parallel = 20
max_output_kib = 1024
[reboot]
timeout_seconds = 900
delay_seconds = 10
[terminal]
allow_yes = true
[workspace_one]
url = "https://tenant.example.com/"
directory_change = "manual"
verify_tls = false
timeout_seconds = 12
token_path = "/t"
directories_path = "/d"
directory_list_media_type = "a/l"
directory_media_type = "a/d"
update_method = "PATCH"
[vcenter]
url = "https://vcenter.example.com"
server_cert_validation = "ignore"
snapshot_timeout_seconds = 60
[http]
bind = "0.0.0.0"
header_timeout_seconds = 2
body_timeout_seconds = 3
max_connections = 50
[hosts.conn-a1]
address = "conn-a1.corp"
port = 5986
scheme = "https"
transport = "credssp"
vm_name = "CONN-A1"
""" % ("AB" * 32)


def problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse_config(tomllib.loads(text))
    return caught.value.problems


def test_minimal_config_uses_documented_defaults():
    config = parse_config(tomllib.loads(MINIMAL))
    assert config.slack.allow_self_approval is False and config.slack.min_approvals == 1
    assert config.policy.approve_install is True  # the installer's downtime is approved unless said otherwise
    assert config.preflight.pending_reboot == "refuse"
    assert config.terminal.allow_yes is False and config.reboot.delay_seconds == 5
    assert config.winrm.transport == "ntlm" and config.winrm.scheme == "https"
    assert config.winrm.server_cert_validation == "validate"
    assert config.workspace_one.directory_change == "api"
    assert config.connector.service == "VMwareIDMConnector"
    assert config.winrm_endpoint("host01") == "https://10.0.0.1:5986/wsman"
    assert config.http.bind == "127.0.0.1"  # HTTP mode listens on loopback unless asked


def test_every_key_is_parsed():
    config = parse_config(tomllib.loads(EVERY_KEY))
    assert config.slack.model_dump() == {
        "channel": "G0PRIVATE1",
        "requesters": ["U0REQ00001", "S0GROUP001"],
        "approvers": ["W0ENTUSER1"],
        "allow_self_approval": True,
        "min_approvals": 2,
        "approval_timeout_minutes": 15,
        "messages_per_second": 0.5,
        "updates_per_minute": 30,
        "fleet_progress": "threads",
        "max_hosts_per_request": 5,
        "app_id": "A0APP00001",
        "allow_direct_messages": True,
        "home_refresh_seconds": 2.5,
    }
    assert config.preflight.min_free_disk_gb == 7.5 and config.preflight.pending_reboot == "ask"
    assert config.policy.approve_install is False
    assert config.database.path == "/tmp/x.db"
    assert config.installer.sha256 == "ab" * 32  # normalised to lower case
    assert config.installer.arguments == "/S /log={log} /from={installer}"
    assert config.connector.model_dump() == {
        "service": "OtherService",
        "product_name": "VMware IDM*",
        "log_path": "D:\\conn.log",
        "service_timeout_seconds": 100,
    }
    assert (config.installer.work_dir, config.installer.timeout_minutes) == ("D:\\idm", 90)
    assert (config.installer.busy_retries, config.installer.busy_wait_seconds) == (1, 30)
    assert config.reboot.delay_seconds == 10 and config.terminal.allow_yes is True
    assert config.winrm.model_dump() == {
        "scheme": "http",
        "port": 5999,
        "transport": "kerberos",
        "server_cert_validation": "ignore",
        "ca_trust_path": "/etc/ca.pem",
        "connect_timeout_seconds": 3,
        "operation_timeout_seconds": 10,
        "read_timeout_seconds": 15,
        "command_timeout_seconds": 120,
        "poll_seconds": 2,
        "max_parallel": 20,
        "max_output_kib": 1024,
    }
    assert config.reboot.timeout_seconds == 900
    assert config.workspace_one.url == "https://tenant.example.com"
    assert config.workspace_one.directory_change == "manual"
    assert config.vcenter.url == "https://vcenter.example.com"
    assert config.vcenter.server_cert_validation == "ignore" and config.vcenter.snapshot_timeout_seconds == 60
    assert config.workspace_one.model_dump() == {
        "url": "https://tenant.example.com",
        "directory_change": "manual",
        "verify_tls": False,
        "timeout_seconds": 12,
        "token_path": "/t",
        "directories_path": "/d",
        "directory_list_media_type": "a/l",
        "directory_media_type": "a/d",
        "update_method": "PATCH",
    }
    assert config.http.model_dump() == {
        "bind": "0.0.0.0",
        "header_timeout_seconds": 2,
        "body_timeout_seconds": 3,
        "max_connections": 50,
    }
    host = config.hosts["conn-a1"]
    assert (host.address, host.port, host.scheme, host.transport, host.vm_name) == (
        "conn-a1.corp",
        5986,
        "https",
        "credssp",
        "CONN-A1",
    )
    assert config.winrm_endpoint("conn-a1") == "https://conn-a1.corp:5986/wsman"
    assert config.transport_for("conn-a1") == "credssp"


def _model_in(annotation: object) -> type[BaseModel] | None:
    """The model a field holds: itself, or inside ``X | None``, ``dict[str, X]`` or ``list[X]``."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()):
        if found := _model_in(arg):
            return found
    return None


def _fields(model: type[BaseModel], prefix: str = "") -> set[str]:
    keys = set()
    for name, field in model.model_fields.items():
        inner = _model_in(field.annotation)
        if inner is not None:
            if name != "hosts":
                keys |= _fields(inner, f"{prefix}{name}.")
        else:
            keys.add(prefix + name)
    return keys


def test_example_file_loads_and_documents_every_key():
    config = load_config(str(EXAMPLE))
    assert config.hosts
    text = EXAMPLE.read_text()
    documented = set()
    section = ""
    for line in text.splitlines():
        if m := re.match(r"^#?\s*\[\[?(?:(hosts|windows|groups)\.[^\]]+|([a-z_.]+))\]", line):
            section = m.group(1) or m.group(2)
        elif m := re.match(r"^#?\s*([a-z_0-9]+) = ", line):
            documented.add(f"{section}.{m.group(1)}")
    host_keys = {f"hosts.{k}" for k in Config.model_fields["hosts"].annotation.__args__[1].model_fields}
    assert _fields(Config) | host_keys <= documented, (_fields(Config) | host_keys) - documented
    # ...and each documented key has a comment line right above it
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if re.match(r"^[a-z_]+ = ", line) and not line.startswith("address"):
            assert lines[i - 1].startswith("#") or lines[i - 1].startswith("["), f"undocumented: {line}"


@pytest.mark.parametrize(
    ("patch", "expected"),
    [
        (("[hosts.host01]", "[hosts.host01]\nport = 70000"), "hosts.host01.port: must be 1-65535"),
        (("[hosts.host01]", "[hosts.host01]\nprot = 5986"), "hosts.host01.prot: unknown key (check the spelling"),
        (("[slack]", "[slack]\nmin_aprovals = 2"), "slack.min_aprovals: unknown key"),
        (("[slack]", "[slak]\nchannel = 'C0X'\n[slack]"), "slak: unknown key"),
        (('version = "19.03.0.1"', ""), "installer.version: required key is missing"),
        (('channel = "C0OPSCHANL"', 'channel = "#ops"'), "slack.channel: '#ops' is not a Slack channel ID"),
        (("[slack]", '[slack]\napprovers = ["@alice"]'), "slack.approvers.0: '@alice' is not a Slack user ID"),
        (("[slack]", "[slack]\nmin_approvals = 0"), "slack.min_approvals: Input should be greater than or equal to 1"),
        (("[slack]", '[slack]\napp_id = "idm-upgrade"'), "slack.app_id: 'idm-upgrade' is not a Slack app ID"),
        (
            ('requesters = ["U0REQ00001"]', 'requesters = ["anyone", "U0REQ00001"]'),
            'slack.requesters: "anyone" already lets everyone start runs',
        ),
        (('requesters = ["U0REQ00001"]', 'requesters = ["everyone"]'), "slack.requesters.0: 'everyone' is not a"),
        (("[slack]", "[policy]\napprove_install = 'yes please'\n[slack]"), "policy.approve_install: Input should be"),
        (
            ("[slack]", '[slack]\nallow_self_approval = "maybe"'),
            "slack.allow_self_approval: Input should be a valid boolean",
        ),
        (('sha256 = "' + "ab" * 32, 'sha256 = "abc'), "installer.sha256: must be 64 hexadecimal characters"),
        (
            ("[installer]", '[installer]\narguments = "/s {setup}"'),
            "installer.arguments: unknown placeholder(s) ['setup']",
        ),
        (('url = "https://artifacts', 'url = "ftp://artifacts'), "installer.url: must be an http:// or https:// URL"),
        (("[hosts.host01]", "[hosts.Host_01]"), "hosts: host name(s) 'Host_01' must be a DNS label"),
        (("[hosts.host01]", "[hosts.host01]\ntransport = 'telnet'"), "hosts.host01.transport: Input should be"),
        (
            ("[slack]", "[preflight]\npending_reboot = 'ignore'\n[slack]"),
            "preflight.pending_reboot: Input should be 'refuse' or 'ask'",
        ),
        (("[slack]", "[winrm]\noperation_timeout_seconds = 40\n[slack]"), "winrm: read_timeout_seconds must be larger"),
        (
            ("[slack]", "[workspace_one]\nurl = 'https://t.example.com/SAAS/API'\n[slack]"),
            "workspace_one.url: must be the tenant root",
        ),
    ],
)
def test_each_error_is_one_line_naming_the_key(patch, expected):
    text = MINIMAL.replace(*patch, 1)
    assert text != MINIMAL
    found = problems(text)
    assert len(found) == 1, found
    assert found[0].startswith(expected), found


# MINIMAL as serve would start with it: approvers, and the environment serve needs (see serve_ready)
READY = MINIMAL.replace('requesters = ["U0REQ00001"]', 'requesters = ["U0REQ00001"]\napprovers = ["U0APR00001"]')
SERVE_ENV = {"SLACK_BOT_TOKEN": "xoxb-t", "SLACK_SIGNING_SECRET": "s", "WINRM_USERNAME": "u", "WINRM_PASSWORD": "p"}


@pytest.fixture
def serve_ready(monkeypatch):
    """The environment serve needs for READY (HTTP mode), and nothing else."""
    for name in Secrets.model_fields:
        monkeypatch.delenv(name.upper(), raising=False)
    for name, value in SERVE_ENV.items():
        monkeypatch.setenv(name, value)


REQUESTERS_REFUSED = (
    "slack.requesters: is empty or missing, which would let anyone in the workspace start upgrades; list the "
    'Slack user IDs (U…/W…) or user group IDs (S…) who may, or write requesters = ["anyone"] to let everyone '
    "start runs"
)


@pytest.mark.parametrize("line", ["requesters = []", ""], ids=["empty", "missing"])
def test_empty_or_missing_requesters_are_refused_with_what_to_do(line):
    assert problems(MINIMAL.replace('requesters = ["U0REQ00001"]', line)) == [REQUESTERS_REFUSED]


@pytest.mark.parametrize("line", ["requesters = []", ""], ids=["empty", "missing"])
def test_check_config_exits_2_on_empty_requesters(tmp_path, capsys, line):
    path = tmp_path / "c.toml"
    path.write_text(MINIMAL.replace('requesters = ["U0REQ00001"]', line))
    assert cli.main(["check-config", "--config", str(path)]) == 2
    captured = capsys.readouterr()
    assert captured.err.splitlines() == [f"config error: {REQUESTERS_REFUSED}"] and captured.out == ""


def test_anyone_is_the_explicit_opt_in_and_check_config_warns(tmp_path, capsys, serve_ready):
    text = READY.replace('requesters = ["U0REQ00001"]', 'requesters = ["anyone"]')
    assert parse_config(tomllib.loads(text)).slack.anyone_may_request
    path = tmp_path / "c.toml"
    path.write_text(text)
    assert cli.main(["check-config", "--config", str(path)]) == 0
    out = capsys.readouterr().out
    assert "requesters: anyone in the workspace" in out
    assert 'warning: slack.requesters = ["anyone"]: every member of the workspace may start upgrades' in out


def test_check_config_says_whether_the_install_is_approved(tmp_path, capsys, serve_ready):
    path = tmp_path / "c.toml"
    path.write_text(READY)
    assert cli.main(["check-config", "--config", str(path)]) == 0
    out = capsys.readouterr().out
    assert "install approved first" in out and "approve_install" not in out
    path.write_text(READY.replace("[slack]", "[policy]\napprove_install = false\n[slack]"))
    assert cli.main(["check-config", "--config", str(path)]) == 0
    out = capsys.readouterr().out
    assert "install WITHOUT approval" in out
    assert "warning: policy.approve_install = false: the installer stops the connector without an approval" in out


def test_no_hosts_and_several_problems_at_once():
    text = MINIMAL.split("[hosts.host01]")[0].replace('channel = "C0OPSCHANL"', "channel = 5")
    found = problems(text)
    assert any(p.startswith("hosts: required key is missing") for p in found)
    assert any(p.startswith("slack.channel: Input should be a valid string") for p in found)
    assert len(found) == 2


def test_empty_hosts_table_is_an_error():
    found = problems(MINIMAL.split("[hosts.host01]")[0] + "[hosts]\n")
    assert found == ["hosts: Dictionary should have at least 1 item after validation, not 0"]


def test_missing_file_and_syntax_error(tmp_path):
    with pytest.raises(ConfigError) as missing:
        load_config(str(tmp_path / "nope.toml"))
    assert "configuration file not found" in missing.value.problems[0]
    broken = tmp_path / "broken.toml"
    broken.write_text("[slack\nchannel = 1\n")
    with pytest.raises(ConfigError) as syntax:
        load_config(str(broken))
    assert syntax.value.problems[0].startswith(f"{broken}: TOML syntax error")


def test_config_path_precedence(tmp_path):
    assert config_path("a.toml", {"IDM_UPGRADE_CONFIG": "b.toml"}) == Path("a.toml")
    assert config_path(None, {"IDM_UPGRADE_CONFIG": "b.toml"}) == Path("b.toml")
    assert config_path(None, {}) == Path("idm-upgrade.toml")


def check_config_process(path: Path) -> subprocess.CompletedProcess[str]:
    """`check-config` as a separate program, so its exit code and exact output are what a person sees."""
    return subprocess.run(
        [sys.executable, "-m", "bot", "check-config", "--config", str(path)], capture_output=True, text=True, cwd=ROOT
    )


def test_cli_exits_2_with_one_line_per_problem_and_no_traceback(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text(MINIMAL.replace("[hosts.host01]", "[hosts.host01]\nport = 0\nvm = 'x'"))
    done = check_config_process(bad)
    assert done.returncode == 2
    assert done.stdout == ""
    assert done.stderr.splitlines() == [
        "config error: hosts.host01.port: must be 1-65535",
        "config error: hosts.host01.vm: unknown key (check the spelling; every key is listed in idm-upgrade.example.toml)",
    ]
    assert "Traceback" not in done.stderr


def test_missing_config_via_environment_exits_2(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("IDM_UPGRADE_CONFIG", str(tmp_path / "missing.toml"))
    assert cli.main(["audit", "verify"]) == 2
    assert "missing.toml: configuration file not found" in capsys.readouterr().err


def test_check_config_summary_shows_no_secrets(tmp_path, monkeypatch, capsys):
    path = tmp_path / "c.toml"
    path.write_text(EVERY_KEY.replace("/tmp/x.db", str(tmp_path / "x.db")))
    monkeypatch.setenv("WINRM_PASSWORD", "Sup3r-Secret-Winrm-Pw")
    monkeypatch.setenv("SLACK_BOT_TOKEN", "xoxb-secret-token-value")
    # the other secrets are missing: serve would refuse, and check-config says so and exits 1
    assert cli.main(["check-config", "--config", str(path)]) == 1
    out = capsys.readouterr().out
    assert "Sup3r-Secret-Winrm-Pw" not in out and "xoxb-secret-token-value" not in out
    assert "WINRM_PASSWORD set" in out and "WINRM_USERNAME missing" in out
    assert "conn-a1" in out and "https://conn-a1.corp:5986/wsman" in out
    assert "approvers: W0ENTUSER1; min_approvals=2, self-approval allowed" in out
    assert "pending_reboot=ask" in out and "directory_change=manual" in out and "snapshots=vCenter" in out
    assert "warning: winrm.server_cert_validation = 'ignore'" in out
    assert "warning: slack.min_approvals = 2 but only 1 approvers" in out


def test_secrets_come_from_environment_and_stay_hidden():
    secrets = Secrets.from_env({"WINRM_PASSWORD": "hunter2-very-secret", "WINRM_USERNAME": "svc"})
    assert secrets.winrm_password.get_secret_value() == "hunter2-very-secret"
    assert "hunter2-very-secret" not in repr(secrets) and "hunter2-very-secret" not in str(secrets)
    assert secrets.present()["WINRM_PASSWORD"] and not secrets.present()["SLACK_BOT_TOKEN"]


CREDENTIALS_REFUSED = (
    "installer.url: must not contain a user name or password; serve the file without credentials "
    "or use a pre-signed URL"
)


@pytest.mark.parametrize(
    "url",
    [
        "https://user:pass@artifacts.example.com/connector.exe",
        "https://user@artifacts.example.com/connector.exe",
        "http://:pass@artifacts.example.com:8080/connector.exe",
        "https://svc%40corp:p%3Ass@artifacts.example.com/connector.exe",
    ],
)
def test_installer_url_with_credentials_is_refused_in_one_clear_line(url):
    found = problems(MINIMAL.replace("https://artifacts.example.com/connector.exe", url))
    assert found == [CREDENTIALS_REFUSED]


def test_check_config_refuses_installer_url_credentials_without_echoing_them(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text(MINIMAL.replace("https://artifacts", "https://svc-upload:Pa55-in-url@artifacts"))
    done = check_config_process(bad)
    assert done.returncode == 2
    assert done.stderr.splitlines() == [f"config error: {CREDENTIALS_REFUSED}"]
    assert "Pa55-in-url" not in done.stdout + done.stderr


def test_check_config_shows_a_presigned_installer_url_without_its_query(tmp_path, capsys, serve_ready):
    path = tmp_path / "c.toml"
    signed = "https://artifacts.example.com/connector.exe?X-Amz-Signature=0f1e2d3c4b5a&X-Amz-Credential=AKIAEXAMPLE"
    path.write_text(READY.replace("https://artifacts.example.com/connector.exe", signed))
    assert load_config(str(path)).installer.url == signed  # kept as it is: the host downloads with it
    assert cli.main(["check-config", "--config", str(path)]) == 0
    out = capsys.readouterr().out
    assert "installer: 19.03.0.1 from https://artifacts.example.com/connector.exe?<redacted>" in out
    assert "0f1e2d3c4b5a" not in out and "AKIAEXAMPLE" not in out


def test_check_config_checks_the_audit_signing_key(tmp_path, tmp_path_factory, capsys, serve_ready):
    from bot.core.signing import generate_key_file, key_id

    path = tmp_path / "c.toml"
    path.write_text(READY)
    assert cli.main(["check-config", "--config", str(path)]) == 0
    out = capsys.readouterr().out
    assert "audit checkpoints: every 15 min" in out and "NOT signed" in out and "audit keygen" in out
    key = tmp_path_factory.mktemp("etc") / "audit.key"
    public = generate_key_file(key)
    path.write_text(f'[audit]\nsigning_key_file = "{key}"\n' + READY)
    assert cli.main(["check-config", "--config", str(path)]) == 0
    assert f"signed, key id {key_id(public)}" in capsys.readouterr().out
    key.chmod(0o644)
    assert cli.main(["check-config", "--config", str(path)]) == 1
    out = capsys.readouterr().out
    assert "error: audit.signing_key_file" in out and "chmod 600" in out and "would refuse" in out
