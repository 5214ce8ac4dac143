"""Figures from the reliability suite: each test writes its counts to tests/reliability/.results/<name>.json.

The report (docs/RELIABILITY.md) is built from these files, so the figures it quotes are those of a real run.
"""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path
from typing import Any

RESULTS_DIR = Path(__file__).resolve().parent / ".results"


def record(name: str, section: str, figures: dict[str, Any]) -> Path:
    """Merge `figures` under `section` into .results/<name>.json (one file per suite, one section per test)."""
    RESULTS_DIR.mkdir(exist_ok=True)
    path = RESULTS_DIR / f"{name}.json"
    try:
        data = json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        data = {}
    data.setdefault("sections", {})[section] = {
        **figures,
        "recorded_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    data["python"] = platform.python_version()
    data["totals"] = _totals(data["sections"])
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)
    return path


def _totals(sections: dict[str, dict[str, Any]]) -> dict[str, int]:
    totals: dict[str, int] = {}
    for figures in sections.values():
        for key, value in figures.items():
            if isinstance(value, int) and not isinstance(value, bool):
                totals[key] = totals.get(key, 0) + value
    return totals
