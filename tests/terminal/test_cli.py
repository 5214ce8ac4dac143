"""The command line as DESIGN.md describes it; parts not built yet say so and change nothing."""

from __future__ import annotations

import argparse
import importlib.metadata
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from bot import cli
from bot.store import audit
from bot.store.store import Store
from tests.support.configs import write_config

ROOT = Path(__file__).resolve().parents[2]


def test_help_lists_every_command():
    done = subprocess.run([sys.executable, "-m", "bot", "--help"], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0
    for command in ("serve", "run", "sandbox", "audit", "check-config"):
        assert command in done.stdout


def test_audit_help_lists_export_and_verify(capsys):
    with pytest.raises(SystemExit) as done:
        cli.main(["audit", "--help"])
    assert done.value.code == 0
    out = capsys.readouterr().out
    assert "export" in out and "verify" in out


def test_usage_error_exits_2(capsys):
    with pytest.raises(SystemExit) as done:
        cli.main(["audit", "export", "--format", "xml"])
    assert done.value.code == 2


def test_sandbox_host_rejects_unknown_scenario(capsys):
    assert cli.main(["sandbox", "host", "--name", "h1", "--port", "0", "--scenario", "nope"]) == 2
    err = capsys.readouterr().err
    assert "unknown scenario 'nope'" in err and "already-current" in err


def test_sandbox_lists_the_change_scenarios_with_the_host_scenarios(capsys):
    assert cli.main(["sandbox", "--scenario", "nope"]) == 2
    err = capsys.readouterr().err
    assert "unknown scenario 'nope'" in err and "already-current" in err and "scheduled" in err


def every_parser(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()):
    """(command words, parser) for the program and each subcommand, depth first."""
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                yield from every_parser(child, (*path, name))


def test_every_subcommand_has_a_description_an_example_and_documented_options():
    for path, parser in every_parser(cli._parser()):
        if not path:
            continue
        words = " ".join(path)
        assert parser.description, f"`idm-upgrade {words}` has no description"
        assert parser.epilog and parser.epilog.startswith("examples:\n"), f"`idm-upgrade {words}` has no example"
        assert f"idm-upgrade {words}" in parser.epilog, parser.epilog
        for action in parser._actions:
            if action.option_strings and action.help is None:
                pytest.fail(f"`idm-upgrade {words} {action.option_strings[0]}` has no help text")


def test_sandbox_help_shows_both_forms_and_no_phantom_argument():
    done = subprocess.run([sys.executable, "-m", "bot", "sandbox", "--help"], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0
    usage = done.stdout.split("\n\n")[0]
    assert usage.splitlines() == [
        "usage: idm-upgrade sandbox [--hosts N] [--scenario NAME] [--approve auto|prompt] [--database PATH] "
        "[--servicenow] [--home]",
        "       idm-upgrade sandbox host --name NAME --port PORT [--scenario NAME]",
    ]
    assert "positional arguments" not in done.stdout and "host ..." not in done.stdout
    host_help = subprocess.run(
        [sys.executable, "-m", "bot", "sandbox", "host", "--help"], capture_output=True, text=True, cwd=ROOT
    )
    assert host_help.stdout.startswith("usage: idm-upgrade sandbox host [-h] --name NAME --port PORT")


def test_version_comes_from_the_package_and_else_from_pyproject(monkeypatch):
    expected = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    done = subprocess.run([sys.executable, "-m", "bot", "--version"], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0 and done.stdout == f"idm-upgrade {expected}\n"

    def not_installed(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "version", not_installed)
    assert cli.version() == expected


def audit_database(tmp_path: Path, events: int) -> Path:
    config = write_config(tmp_path, hosts=1)
    store = Store(tmp_path / "idm-upgrade.db")
    with store.transaction():
        for index in range(events):
            audit.append(store.conn, "run.requested", actor="bot", run_id="run-0000beef", detail={"n": index})
    store.close()
    return config


def test_audit_export_into_a_pipe_closed_early_exits_without_a_traceback(tmp_path):
    # far more than a pipe holds (64 KiB), so the export is still writing when the reader goes away
    config = audit_database(tmp_path, 3000)
    proc = subprocess.Popen(
        [sys.executable, "-m", "bot", "audit", "export", "--config", str(config)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout is not None and proc.stderr is not None
    assert proc.stdout.read(100).startswith(b"[")
    proc.stdout.close()  # as `| head` does once it has its lines
    err = proc.stderr.read().decode()
    assert proc.wait(60) == 1
    assert err == "", err


def test_audit_export_of_an_unknown_run_exits_1_saying_so(tmp_path, capsys):
    config = audit_database(tmp_path, 2)
    assert cli.main(["audit", "export", "--run", "run-0000dead", "--config", str(config)]) == 1
    captured = capsys.readouterr()
    assert captured.err == "idm-upgrade: no such run run-0000dead\n" and captured.out == ""
