"""`idm-upgrade sandbox --servicenow`: tickets required, the change checked in the ServiceNow stand-in."""

from __future__ import annotations

from tests.e2e.test_sandbox_command import sandbox


def test_sandbox_with_servicenow_checks_the_ticket_and_shows_it():
    proc = sandbox("--servicenow")
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, out[-2000:] + err[-2000:]
    assert "ServiceNow stand-in at http://127.0.0.1:" in out and "CHG0012345 approval approved, state -1" in out
    assert "$ /idm-upgrade host01 ticket:CHG0012345" in out
    # on the card and in each approval request
    assert out.count("*Change ticket:* CHG0012345") >= 4
    last = out.strip().splitlines()[-1]
    assert last.startswith("sandbox: host01 succeeded in ") and "audit chain verified" in last
