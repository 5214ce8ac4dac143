"""deploy/: the systemd unit (verified and scored by Debian's systemd-analyze) and the Containerfile (linted here,
as hadolint is not in the registries). The image's HEALTHCHECK script: tests/slack/test_container_healthcheck.py."""

from __future__ import annotations

import configparser
import re
import shlex
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
UNIT = ROOT / "deploy" / "idm-upgrade.service"
CONTAINERFILE = ROOT / "deploy" / "Containerfile"
HEALTHCHECK = ROOT / "deploy" / "healthcheck.py"
INSTALLED_BINARY = "/opt/idm-upgrade/bin/idm-upgrade"
# systemd-analyze security's overall exposure (0 best, 10 worst); the unit scores 1.2, 8.5 without its hardening
MAX_EXPOSURE = 1.5


def systemd_analyze() -> str:
    found = shutil.which("systemd-analyze")
    if found is None:
        pytest.fail("systemd-analyze is missing: apt-get install systemd (.ci/run installs it)")
    return found


def unit_with_a_stub_binary(tmp_path: Path) -> Path:
    """The unit as shipped, but its ExecStart binary a stub here: `verify` checks that the command exists."""
    stub = tmp_path / "idm-upgrade"
    stub.write_text("#!/bin/sh\nexit 0\n")
    stub.chmod(0o755)
    unit = tmp_path / "idm-upgrade.service"
    text = UNIT.read_text()
    assert INSTALLED_BINARY in text
    unit.write_text(text.replace(INSTALLED_BINARY, str(stub)))
    return unit


def test_the_systemd_unit_verifies_without_a_warning(tmp_path):
    unit = unit_with_a_stub_binary(tmp_path)
    result = subprocess.run(
        [systemd_analyze(), "verify", "--man=no", str(unit)], capture_output=True, text=True, cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == "", result.stderr  # an unknown or misspelt key is only a warning


def test_the_systemd_unit_scores_ok_in_systemd_analyze_security(tmp_path):
    unit = unit_with_a_stub_binary(tmp_path)
    result = subprocess.run(
        [
            systemd_analyze(),
            "security",
            "--offline=yes",
            f"--threshold={round(MAX_EXPOSURE * 10)}",  # in tenths
            "--no-pager",
            str(unit),
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    score = re.search(r"Overall exposure level for \S+: (\d+\.\d+) (\w+)", result.stdout)
    assert score, result.stdout[-2000:] + result.stderr
    assert float(score.group(1)) <= MAX_EXPOSURE and score.group(2) == "OK", score.group(0)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr


def unit_service() -> configparser.SectionProxy:
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.optionxform = str  # type: ignore[assignment,method-assign]
    unit.read(UNIT)
    return unit["Service"]


def test_the_unit_keeps_its_files_private_and_its_descriptor_limit():
    service = unit_service()
    assert service["UMask"] == "0077" and service["StateDirectoryMode"] == "0700"
    assert int(service["LimitNOFILE"]) >= 65536
    assert service["CapabilityBoundingSet"] == "" and service["AmbientCapabilities"] == ""
    assert service["RestrictAddressFamilies"].split() == ["AF_INET", "AF_INET6", "AF_UNIX"]


def test_the_unit_says_how_to_create_its_user():
    text = UNIT.read_text()
    user = unit_service()["User"]
    assert re.search(rf"useradd --system .*{user}\b", text.replace("\\\n#", " "))


# -- the Containerfile ---------------------------------------------------------------------------------


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments), continuation lines joined, comments dropped."""
    joined = re.sub(
        r"\\\n", " ", "\n".join(line for line in CONTAINERFILE.read_text().splitlines() if not line.startswith("#"))
    )
    found = []
    for line in joined.splitlines():
        if line.strip():
            keyword, _, rest = line.strip().partition(" ")
            found.append((keyword.upper(), " ".join(rest.split())))
    return found


def named(keyword: str) -> list[str]:
    return [args for kw, args in instructions() if kw == keyword]


def test_the_image_has_a_tagged_base_and_runs_as_a_fixed_uid_that_owns_data():
    (base,) = named("FROM")
    image, _, tag = base.partition(":")
    assert tag and tag != "latest" and "latest" not in base, base
    user = named("USER")[-1]
    uid, _, gid = user.partition(":")
    assert uid.isdigit() and int(uid) >= 1000, f"USER {user}: a fixed numeric UID, not a name or root"
    runs = " && ".join(named("RUN"))
    assert re.search(rf"useradd [^&]*--uid {uid}\b", runs) and re.search(rf"groupadd [^&]*--gid {gid or uid}\b", runs)
    assert re.search(r"mkdir -p [^&]*/data\b", runs)
    assert re.search(rf"chown {uid}(:{gid or uid})? /data\b", runs)
    assert named("VOLUME") == ['["/data"]']
    assert named("WORKDIR")[-1] == "/data"  # database.path's default (a relative idm-upgrade.db) lands in /data


def test_every_pip_install_in_the_image_keeps_no_cache():
    pips = [run for run in named("RUN") if "pip install" in run]
    assert pips
    for run in pips:
        for command in run.split("&&"):
            if "pip install" in command:
                assert "--no-cache-dir" in command, command


def test_the_image_has_the_example_config_with_the_database_under_data():
    copies = [shlex.split(c) for c in named("COPY")]
    example = next((c for c in copies if c[0] == "idm-upgrade.example.toml"), None)
    assert example, "the example config is not copied into the image"
    assert named("ENV") == ["IDM_UPGRADE_CONFIG=/data/idm-upgrade.toml"]
    # the image's edit of the example config, applied here to the example as it is now
    edit = next(run for run in named("RUN") if "sed -i" in run and example[1] in run)
    match = re.search(r"sed -i 's#(.+?)#(.+?)#' (\S+)", edit)
    assert match and match.group(3) == example[1], edit
    edited = re.sub(match.group(1), match.group(2), (ROOT / "idm-upgrade.example.toml").read_text(), flags=re.M)
    assert tomllib.loads(edited)["database"]["path"] == "/data/idm-upgrade.db"


def test_the_image_has_a_healthcheck_that_asks_healthz():
    (check,) = named("HEALTHCHECK")
    script = shlex.split(check.split("CMD", 1)[1].strip().strip("[]").replace(",", " "))[-1]
    copies = [shlex.split(c) for c in named("COPY")]
    assert ["deploy/healthcheck.py", script] in copies, (script, copies)
    assert "/healthz" in HEALTHCHECK.read_text()
    assert re.search(r"--timeout=\d+s", check) and re.search(r"--start-period=\d+s", check)
