"""The floor plan (DESIGN.md section 4): arrows point down only.

Front ends (bot.slack, bot.terminal, bot.cli) → bot.runtime → bot.engine → bot.store → bot.core;
steps → bot.systems → bot.core. bot/ imports sandbox/ nowhere but bot/cli.py. Imports under
``if TYPE_CHECKING:`` are annotations only and are not arrows.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OURS = ("bot", "steps", "handlers", "sandbox")

# For each layer (the longest matching prefix of a module's name), the layers it may import.
ALLOWED: dict[str, set[str]] = {
    "bot.core": {"bot.core"},
    "bot.store": {"bot.core", "bot.store"},
    "bot.systems": {"bot.core", "bot.systems"},
    "steps": {"bot.core", "bot.systems", "steps"},
    "bot.engine": {"bot.core", "bot.store", "bot.engine", "steps.base"},
    "bot.runtime": {"bot.core", "bot.store", "bot.engine", "bot.systems", "steps"},
    "bot.slack": {"bot.core", "bot.store", "bot.engine", "bot.systems", "bot.slack", "bot.runtime", "handlers"},
    "handlers": {"bot.core", "bot.store", "bot.engine", "bot.slack", "handlers"},
    "bot.terminal": {"bot.core", "bot.store", "bot.engine", "bot.systems", "bot.terminal", "bot.runtime"},
    "bot.cli": {"bot", "steps", "sandbox"},
    "bot.__main__": {"bot.cli"},
}


def layer(module: str) -> str | None:
    candidates = [name for name in ALLOWED if module == name or module.startswith(name + ".")]
    return max(candidates, key=len) if candidates else None


def _runtime_nodes(tree: ast.Module) -> list[ast.stmt]:
    """Every statement except the bodies of ``if TYPE_CHECKING:``."""
    found: list[ast.stmt] = []

    def visit(body: list[ast.stmt]) -> None:
        for node in body:
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                visit(node.orelse)
                continue
            found.append(node)
            for child in ast.iter_child_nodes(node):
                if isinstance(child, ast.stmt):
                    visit([child])
            for field in ("body", "orelse", "finalbody", "handlers"):
                for child in getattr(node, field, []) or []:
                    if isinstance(child, ast.ExceptHandler):
                        visit(child.body)

    visit(tree.body)
    return found


def imports_of(source: str) -> set[str]:
    names: set[str] = set()
    for node in _runtime_nodes(ast.parse(source)):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return {n for n in names if n.split(".")[0] in OURS}


def violations(module: str, source: str) -> list[str]:
    own = layer(module)
    if own is None:
        return [f"{module}: not in the floor plan (add its layer to ALLOWED)"]
    allowed = ALLOWED[own]
    wrong = []
    for name in sorted(imports_of(source)):
        # `from bot.store import audit` names bot.store.audit; the package alone says nothing yet
        if name in ("bot", "bot.store", "bot.slack", "bot.core") and any(
            other.startswith(name + ".") for other in imports_of(source)
        ):
            continue
        if not any(name == a or name.startswith(a + ".") for a in allowed):
            wrong.append(f"{module} imports {name}: {own} may import only {', '.join(sorted(allowed))}")
    return wrong


def modules() -> dict[str, str]:
    found = {}
    for folder in ("bot", "steps", "handlers"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            found[name] = path.read_text(encoding="utf-8")
    return found


ROOT_PACKAGES = ("bot", "steps", "handlers")  # empty __init__ files, no layer of their own


def test_every_arrow_points_down():
    checked = {name: source for name, source in modules().items() if name not in ROOT_PACKAGES}
    assert len(checked) > 40 and "bot.runtime" in checked and "steps.reboot" in checked
    assert [v for name, source in checked.items() for v in violations(name, source)] == []


def test_an_arrow_pointing_up_is_caught():
    """The check itself can fail: each of these is an arrow up."""
    assert violations("steps.install", "from bot.store.store import Store\n")
    assert violations("steps.reboot", "from bot.engine.engine import Engine\n")
    assert violations("steps.stage", "import bot.slack.messages\n")
    assert violations("bot.core.models", "from bot.store import audit\n")
    assert violations("bot.store.store", "from bot.engine.engine import Engine\n")
    assert violations("bot.systems.winrm", "from steps.common import tail\n")
    assert violations("bot.engine.engine", "from bot.slack.messages import card\n")
    assert violations("bot.slack.app", "from sandbox.slack import SlackStandIn\n")
    assert violations("bot.terminal.run", "def f():\n    from sandbox.run import run_sandbox\n")
    # what is allowed is not reported
    assert not violations("bot.cli", "from sandbox.run import run_sandbox\n")
    assert not violations(
        "steps.snapshot", "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import bot.store\n"
    )
    assert not violations("bot.engine.engine", "from steps.base import Step\nfrom bot.store.store import Store\n")


def test_only_the_cli_imports_the_sandbox():
    users = [name for name, source in modules().items() if any(i.startswith("sandbox") for i in imports_of(source))]
    assert users == ["bot.cli"]
