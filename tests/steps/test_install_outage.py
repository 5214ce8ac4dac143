"""The install poll rides out a WinRM outage: the installer keeps running on the host, so the poll keeps
polling, with a bounded backoff, until installer.timeout_minutes, saying when contact was lost and when it
came back. Real pywinrm against a simulated host that really stops listening."""

from __future__ import annotations

import asyncio

from bot.core.models import RunState, StepState
from tests.steps.conftest import Clicker


class Outage(Clicker):
    """Approves every gate; once the installer runs, takes the host's WinRM service away until the
    install poll has said it lost contact (``restore=False``: for good)."""

    def __init__(self, *, restore: bool = True, stall: bool = False):
        super().__init__("approve")
        self.restore, self.stall = restore, stall
        self.notes: list[str] = []
        self.refused = False

    async def deliver(self, event) -> None:
        await super().deliver(event)
        if event.kind != "step.note" or event.step != "install":
            return
        self.notes.append(event.text)
        if event.text.startswith("installer started") and not self.refused:
            self.refused = True
            if self.stall:  # a starved host: it listens but answers nothing in time
                self.host.faults.delay_seconds = 5
            else:
                await asyncio.to_thread(self.host.refuse_connections)
        elif event.text.startswith("lost contact") and self.restore:
            if self.stall:
                self.host.faults.delay_seconds = 0
            else:
                await asyncio.to_thread(self.host.accept_connections)


def long_install(state) -> None:
    state.installer.duration_seconds = 300  # 3 s at the tests' time scale: still running through the outage


async def test_the_install_poll_rides_out_an_outage_longer_than_the_executors_retries(upgrade):
    outage = Outage()
    engine, host, _clicker, run = await upgrade(
        decision=outage, extra="policy: approve_install = true", tweak=long_install
    )
    assert outage.refused
    assert run.state is RunState.succeeded, run.result
    record = engine.store.step(run.id, "install")
    assert record.state is StepState.succeeded and record.facts["exit_code"] == 0
    lost = [n for n in outage.notes if n.startswith("lost contact with host01")]
    back = [n for n in outage.notes if n.startswith("host01 answers again")]
    assert len(lost) == 1 and "cannot reach the WinRM service" in lost[0] and "the installer keeps running" in lost[0]
    assert len(back) == 1 and "without contact" in back[0]
    assert outage.notes.index(lost[0]) < outage.notes.index(back[0])
    assert host.state.installs_started == 1  # the installer ran once: the poll waited for it, nothing restarted it


async def test_an_outage_past_the_install_deadline_fails_saying_contact_was_lost(upgrade):
    outage = Outage(restore=False)
    engine, host, _clicker, run = await upgrade(
        decision=outage, extra="installer: timeout_minutes = 0.05", tweak=long_install
    )
    assert run.state is RunState.failed
    record = engine.store.step(run.id, "install")
    assert record.state is StepState.failed
    assert "lost contact with host01" in record.reason and "deadline of 0.05 min" in record.reason, record.reason
    assert "run again to resume waiting" in record.reason
    assert not [n for n in outage.notes if "answers again" in n]


async def test_the_install_poll_rides_out_a_host_that_answers_nothing_in_time(upgrade):
    outage = Outage(stall=True)
    extra = "winrm: operation_timeout_seconds = 1\nwinrm: read_timeout_seconds = 2"
    engine, host, _clicker, run = await upgrade(decision=outage, extra=extra, tweak=long_install)
    assert run.state is RunState.succeeded, run.result
    lost = [n for n in outage.notes if n.startswith("lost contact with host01")]
    assert len(lost) == 1 and "did not answer in time" in lost[0], outage.notes
    assert [n for n in outage.notes if n.startswith("host01 answers again")]
    assert host.state.installs_started == 1
