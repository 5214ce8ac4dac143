"""What `make sandbox` installs: the bot and the sandbox extra, not the test extra (ruff, hypothesis, pyvmomi…)."""

from __future__ import annotations

import ast
import importlib.metadata
import re
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
OWN_PACKAGES = {"bot", "handlers", "steps", "sandbox", "tests", "bench"}


def makefile() -> tuple[dict[str, list[str]], dict[str, list[str]]]:
    """The Makefile's targets: their prerequisites and their recipe lines, with $(VARIABLES) expanded."""
    variables: dict[str, str] = {}
    prerequisites: dict[str, list[str]] = {}
    recipes: dict[str, list[str]] = {}
    current: str | None = None

    def expand(text: str) -> str:
        for _ in range(5):
            text = re.sub(r"\$\((\w+)\)", lambda m: variables.get(m.group(1), m.group(0)), text)
        return text

    for line in (ROOT / "Makefile").read_text().splitlines():
        if line.startswith("\t") and current is not None:
            recipes[current].append(expand(line.strip()))
            continue
        if assignment := re.match(r"^(\w+)\s*(?::=|\?=|=)\s*(.*)$", line):
            variables[assignment.group(1)] = assignment.group(2).strip()
            current = None
        elif rule := re.match(r"^([^\s#:=][^:=]*):(?!=)\s*(.*)$", line):
            current = expand(rule.group(1).strip())
            prerequisites[current] = expand(rule.group(2)).split()
            recipes[current] = []
        elif line.strip() and not line.startswith("#"):
            current = None
    return prerequisites, recipes


def install_lines(target: str) -> list[str]:
    """Every `pip install` line that making `target` may run, through its prerequisites."""
    prerequisites, recipes = makefile()
    found, todo, seen = [], [target], set()
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        found += [line for line in recipes.get(name, []) if "pip install" in line and "--upgrade pip" not in line]
        todo += prerequisites.get(name, [])
    return found


def extras() -> dict[str, list[str]]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]


def test_make_sandbox_installs_the_sandbox_extra_and_not_the_test_extra():
    lines = install_lines("sandbox")
    assert lines, "make sandbox installs nothing?"
    assert all("test" not in line for line in lines), lines
    assert any(".[sandbox]" in line for line in lines), lines
    assert "sandbox" in extras()


def test_make_test_still_installs_the_test_extra():
    assert any(".[test]" in line for line in install_lines("test"))
    assert any(".[test]" in line for line in install_lines("lint"))


def _name(requirement: str) -> str:
    match = re.match(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)", requirement)
    assert match, requirement
    return re.sub(r"[-_.]+", "-", match.group(1)).lower()


def _closure(requirements: list[str]) -> set[str]:
    """These distributions and everything they require (without their extras), as installed here."""
    found: set[str] = set()
    todo = [_name(r) for r in requirements]
    while todo:
        name = todo.pop()
        if name in found:
            continue
        found.add(name)
        try:
            required = importlib.metadata.requires(name) or []
        except importlib.metadata.PackageNotFoundError:
            continue
        todo += [_name(r) for r in required if "extra ==" not in r]
    return found


def _imported_distributions(*packages: str) -> dict[str, set[str]]:
    """The third-party distributions each package's modules import: {distribution: {module path, ...}}."""
    distributions = importlib.metadata.packages_distributions()
    found: dict[str, set[str]] = {}
    for package in packages:
        for path in (ROOT / package).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.Import):
                    modules = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    modules = [node.module]
                else:
                    continue
                for module in modules:
                    top = module.split(".")[0]
                    if top in sys.stdlib_module_names or top in OWN_PACKAGES:
                        continue
                    for distribution in distributions.get(top, [top]):
                        found.setdefault(_name(distribution), set()).add(str(path.relative_to(ROOT)))
    return found


def test_the_sandbox_extra_covers_what_the_sandbox_imports():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    installed = _closure(project["dependencies"] + extras()["sandbox"])
    # the bot's optional integrations (vCenter, Kerberos, CredSSP) are imported only when configured
    optional = _closure([r for name, reqs in extras().items() if name not in ("test", "sandbox") for r in reqs])
    imported = _imported_distributions("sandbox", "bot", "handlers", "steps")
    missing = {d: paths for d, paths in imported.items() if d not in installed and d not in optional}
    assert not missing, f"imported but not installed by `make sandbox`: {missing}"
    sandbox_only = _imported_distributions("sandbox")
    assert not {d for d in sandbox_only if d not in installed}, "the sandbox itself needs no optional extra"
