"""Every command, flag and configuration key the README mentions exists."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from bot.core.config import Config

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()


def help_text(*args: str) -> str:
    return subprocess.run(
        [sys.executable, "-m", "bot", *args, "--help"], capture_output=True, text=True, cwd=ROOT
    ).stdout


TABLES_BY_NAME = ("hosts", "windows", "groups")  # [hosts.NAME]: the README writes hosts.NAME.key


def config_keys() -> set[str]:
    keys = set()
    for section, field in Config.model_fields.items():
        model = field.annotation
        if section in TABLES_BY_NAME:
            model = model.__args__[1]
            keys |= {f"{section}.NAME.{k}" for k in model.model_fields}
        elif section == "freeze":  # [[freeze]]: a list of tables
            keys |= {f"freeze.{k}" for k in model.__args__[0].model_fields}
        else:
            keys |= {f"{section}.{k}" for k in model.model_fields}
            if section == "change":
                keys |= {
                    f"change.servicenow.{k}"
                    for k in model.model_fields["servicenow"].annotation.__args__[0].model_fields
                }
    return keys


def test_every_command_and_flag_in_the_readme_exists():
    # `/idm-upgrade …` is the Slack command, not the command line
    found = re.findall(r"(?<![/\w-])idm-upgrade ([a-z][a-z-]*[a-z])(?=[\s`]|$)([^`\n]*)", README)
    assert len(found) >= 8
    for command, rest in found:
        words = [command]
        if command == "audit" and rest.split() and rest.split()[0] in ("export", "verify", "keygen", "checkpoint"):
            words.append(rest.split()[0])
        text = help_text(*words)
        assert text, f"`idm-upgrade {command}` does not exist"
        for flag in re.findall(r"(?<![\w-])--[a-z][a-z-]*", rest):
            assert flag in text, f"`idm-upgrade {' '.join(words)} {flag}` does not exist"


def test_every_configuration_key_in_the_readme_exists():
    keys = config_keys()
    mentioned = set(
        re.findall(
            r"`((?:slack|preflight|database|installer|connector|winrm|reboot|workspace_one|vcenter|terminal|audit|http|change|freeze)\.[a-z_0-9.]+)",
            README,
        )
    )
    mentioned |= set(re.findall(r"`((?:hosts|windows|groups)\.NAME\.[a-z_]+)", README))
    assert mentioned, "the README names no keys?"
    assert mentioned <= keys, mentioned - keys


def test_every_make_target_in_the_readme_exists():
    makefile = (ROOT / "Makefile").read_text()
    for target in set(re.findall(r"make ([a-z]+)", README)):
        assert re.search(rf"^{target}:", makefile, re.MULTILINE), target
