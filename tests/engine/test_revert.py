"""Revert to snapshot end to end: the real steps and pywinrm against a simulated host whose VM is a vcsim VM
(tests/support/vm_binding.py), real pyVmomi; the engine asks the revert approval, reverts, powers on, verifies."""

from __future__ import annotations

import asyncio

import pytest

from bot.core.config import Secrets
from bot.engine.approvals import ApprovalPolicy
from bot.runtime import Runtime
from bot.systems.services import build_services
from bot.systems.winrm import WinRMExecutor
from sandbox.threaded import running_host
from tests.steps.conftest import Clicker, sandbox_config
from tests.support.configs import APPROVER, APPROVER2, REQUESTER
from tests.support.vm_binding import bound_vm
from tests.vcsim import vcsim_fixture

VM = "DC0_H0_VM0"
vcsim = vcsim_fixture()
vcsim_stuck = vcsim_fixture(hang_snapshot=["DC0_H0_VM1"])


def wrong_build(state) -> None:
    """The installer runs and leaves another build than 19.03.0.1: the run fails after changing the host."""
    state.installer.installs_version = "19.03.0.2"


class Revert:
    """A failed upgrade of host01 (its VM bound to vcsim), its runtime kept alive to revert it."""

    def __init__(self, tmp_path, sim, *, restores=True, by_hand=False, extra="", decisions=None, stuck_on=""):
        self.stuck_on = stuck_on
        self.tmp_path, self.sim, self.restores, self.by_hand, self.extra = tmp_path, sim, restores, by_hand, extra
        self.clicker = Clicker("approve", decisions or {})

    async def __aenter__(self):
        self._host = running_host("default")
        self.host = self._host.__enter__()
        wrong_build(self.host.state)
        self._binding = bound_vm(self.sim, VM, self.host, restores=self.restores, stuck_on=self.stuck_on)
        self.binding = self._binding.__enter__()
        config = sandbox_config(
            self.host,
            self.tmp_path / "revert.db",
            self.extra,
            5,
            vcenter_url=None if self.by_hand else self.binding.url,
            vm_name=VM,
        )
        env = {"WINRM_USERNAME": self.host.username, "WINRM_PASSWORD": self.host.password}
        if not self.by_hand:
            env |= {"VCENTER_USERNAME": self.sim["username"], "VCENTER_PASSWORD": self.sim["password"]}
        secrets = Secrets.from_env(env)
        self.config, self.secrets = config, secrets
        services = build_services(config, secrets)
        services.winrm.close()
        services.winrm = WinRMExecutor(config, secrets, retry_delays=(0.1, 0.2))
        self.runtime = Runtime.build(
            config,
            secrets,
            policy=ApprovalPolicy(config.slack),
            sinks=[self.clicker],
            services=services,
            approval_poll_seconds=0.05,
        )
        self.engine = self.clicker.engine = self.runtime.engine
        [run] = await self.engine.submit(["host01"], REQUESTER)
        await self.engine.join()
        self.run = self.engine.store.get_run(run.id)
        return self

    async def __aexit__(self, *exc):
        await self.stop()
        self._binding.__exit__(None, None, None)
        self._host.__exit__(None, None, None)

    async def stop(self):
        """Stop this runtime (its lease too), so another front end may drive the database."""
        if self.runtime is None:
            return
        runtime, self.runtime = self.runtime, None
        await runtime.stop()
        runtime.store.close()

    def restarted(self):
        """A new runtime on the same database (after a crash): its engine resumes what is recorded."""
        self.clicker = Clicker("approve")
        self.runtime = Runtime.build(
            self.config,
            self.secrets,
            policy=ApprovalPolicy(self.config.slack),
            sinks=[self.clicker],
            services=self.services(),
            approval_poll_seconds=0.05,
        )
        self.engine = self.clicker.engine = self.runtime.engine
        return self.engine

    def services(self):
        services = build_services(self.config, self.secrets)
        services.winrm.close()
        services.winrm = WinRMExecutor(self.config, self.secrets, retry_delays=(0.1, 0.2))
        return services

    def events(self, prefix=""):
        return [e.event for e in self.engine.store.audit_events(self.run.id) if e.event.startswith(prefix)]

    async def revert(self, user=REQUESTER, why=None):
        reply = await self.engine.revert(self.run.id, user, why)
        await self.engine.join()
        return reply, self.engine.store.get_run(self.run.id)


async def test_a_failed_upgrade_is_reverted_to_its_snapshot_and_verified(tmp_path, vcsim):
    async with Revert(tmp_path, vcsim) as r:
        assert r.run.state.value == "failed"
        assert r.host.state.connector.version == "19.03.0.2"  # the host was changed
        assert "revert" in r.engine.offers(r.run, r.engine.store.steps(r.run.id))
        snapshot = r.engine.store.step(r.run.id, "snapshot").facts["snapshot"]

        reply, run = await r.revert(why="the wrong build went in")
        assert reply.ok, reply.message

        asked = [a for a in r.clicker.asked if a["gate"] == "revert"]
        assert len(asked) == 1
        [approval] = [a for a in r.engine.store.approvals(run.id) if a.gate == "revert"]
        assert approval.change == {
            "host": "host01",
            "vm": VM,
            "snapshot_id": snapshot["id"],
            "snapshot_name": snapshot["name"],
            "run": run.id,
            "revert_request": next(e.seq for e in r.engine.store.audit_events(run.id) if e.event == "revert.requested"),
        }
        assert approval.evidence["requested_by"] == REQUESTER and snapshot["id"] in approval.evidence["what_changes"]
        assert approval.state.value == "granted"

        assert run.state.value == "failed" and run.recovery == "reverted" and run.ended_as is None
        assert r.engine.offers(run, r.engine.store.steps(run.id)) == []  # nothing left to retry or revert
        assert f"reverted to snapshot '{snapshot['name']}'" in run.result
        assert "connector 19.03.0.0 (as before the run), service Running" in run.result
        assert r.host.state.connector.version == "19.03.0.0" and r.host.state.service.state == "Running"
        assert r.binding.calls[-2:] == ["RevertToSnapshot_Task", "PowerOnVM_Task"]
        assert r.binding.vm.snapshot.currentSnapshot._moId == snapshot["id"]  # vcsim shows it
        assert r.binding.vm.runtime.powerState == "poweredOn"
        assert r.events("revert.") == [
            "revert.requested",
            "revert.started",
            "revert.reverted",
            "revert.powered_on",
            "revert.verified",
        ]
        trail = r.events()
        after = trail[trail.index("revert.requested") :]
        assert after.index("approval.requested") < after.index("approval.granted") < after.index("revert.started")
        assert trail[-2:] == ["revert.verified", "run.failed"]
        assert r.engine.store.verify_audit().ok


async def test_a_revert_that_does_not_bring_the_version_back_ends_revert_failed(tmp_path, vcsim):
    async with Revert(tmp_path, vcsim, restores=False) as r:
        reply, run = await r.revert()
        assert reply.ok
        assert run.state.value == "failed" and run.recovery is None
        assert r.events("revert.")[-1] == "revert.failed"
        assert "revert.verified" not in r.events()
        assert "the connector is at 19.03.0.2, not 19.03.0.0 as before the run" in run.result


async def test_the_asker_may_not_approve_their_own_revert(tmp_path, vcsim):
    extra = f'slack: approvers = ["{APPROVER}", "{APPROVER2}"]'
    async with Revert(tmp_path, vcsim, extra=extra, decisions={"revert": "none"}) as r:
        reply = await r.engine.revert(r.run.id, APPROVER, "asked by an approver")
        assert reply.ok
        approval = None
        for _ in range(400):  # bounded: the request is written by the revert task
            found = [a for a in r.engine.store.approvals(r.run.id) if a.gate == "revert"]
            if found:
                approval = found[0]
                break
            await asyncio.sleep(0.01)
        assert approval is not None
        cancel = await r.engine.cancel(r.run.id, REQUESTER)
        assert not cancel.ok and "cannot be cancelled" in cancel.message
        own = await r.engine.decide(approval.id, APPROVER, "approve")
        assert not own.ok and "you asked for this revert" in own.message
        assert r.engine.store.get_approval(approval.id).state.value == "open"
        assert "approval.refused" in r.events()
        other = await r.engine.decide(approval.id, APPROVER2, "approve")
        assert other.ok
        await r.engine.join()
        run = r.engine.store.get_run(r.run.id)
        assert "reverted to snapshot" in run.result and r.events("revert.")[-1] == "revert.verified"


async def test_a_denied_revert_reverts_nothing(tmp_path, vcsim):
    async with Revert(tmp_path, vcsim, decisions={"revert": "deny"}) as r:
        calls = list(r.binding.calls)
        reply, run = await r.revert()
        assert reply.ok
        assert run.state.value == "failed" and run.recovery is None
        assert "revert request denied by" in run.result and "nothing was reverted" in run.result
        assert r.binding.calls == calls and r.host.state.connector.version == "19.03.0.2"
        assert r.events("revert.") == ["revert.requested"]


async def test_refusals_write_nothing(tmp_path, vcsim):
    async with Revert(tmp_path, vcsim) as r:
        before = len(r.engine.store.audit_events())
        unknown = await r.engine.revert("run-00000000", REQUESTER)
        assert not unknown.ok and "There is no run 'run-00000000'" in unknown.message
        outsider = await r.engine.revert(r.run.id, "U0OUTSIDER1")
        assert not outsider.ok and "only the person who started the run or an approver" in outsider.message
        assert len(r.engine.store.audit_events()) == before
        assert r.engine.store.get_run(r.run.id).recovery is None


async def test_a_run_that_changed_nothing_on_the_host_offers_no_revert(tmp_path, vcsim):
    async with Revert(tmp_path, vcsim, decisions={"install": "deny"}) as r:
        assert r.run.state.value == "denied"
        before = len(r.engine.store.audit_events())
        reply = await r.engine.revert(r.run.id, REQUESTER)
        assert not reply.ok and "nothing on the host was changed" in reply.message
        for word in ("queued", "started", "Follow it in"):
            assert word not in reply.message
        assert len(r.engine.store.audit_events()) == before


async def test_without_vcenter_a_person_reverts_by_hand_then_the_bot_verifies(tmp_path, vcsim):
    async with Revert(tmp_path, vcsim, by_hand=True) as r:
        assert r.run.state.value == "failed"
        # the person reverts the VM (vSphere Client) when asked to confirm: the Clicker acts for them
        original = r.clicker.deliver

        async def person(event):
            if event.kind == "approval.requested" and event.data["gate"] == "revert by hand":
                saved = next(iter(r.binding.saved.values()), None)
                assert saved is None  # no vCenter: the binding saw no snapshot; restore the host by hand
                r.host.power_off()
                r.host.state.connector.version = "19.03.0.0"
                r.host.power_on()
            await original(event)

        r.clicker.deliver = person
        r.engine.progress.sinks[:] = [r.clicker]
        reply, run = await r.revert()
        assert reply.ok
        gates = [a.gate for a in r.engine.store.approvals(run.id) if a.step == "revert"]
        assert gates == ["revert", "revert by hand"]
        assert r.events("revert.") == ["revert.requested", "revert.started", "revert.reverted", "revert.verified"]
        assert "reverted to snapshot" in run.result


class Crash(Exception):
    """The process died here (raised from the store's commit hook, after the transition is durable)."""


class CrashAfter:
    def __init__(self, transition: str):
        self.transition, self.crashed = transition, False

    def before_commit(self, transition: str) -> None:
        pass

    def after_commit(self, transition: str) -> None:
        if transition == self.transition and not self.crashed:
            self.crashed = True
            raise Crash(transition)


@pytest.mark.parametrize("transition", ["approval.requested", "revert.started", "revert.reverted"])
async def test_a_crash_mid_revert_resumes_from_what_is_recorded(tmp_path, vcsim, transition):
    async with Revert(tmp_path, vcsim) as r:
        hooks = r.engine.store.hooks = CrashAfter(transition)
        reply = await r.engine.revert(r.run.id, REQUESTER)
        assert reply.ok
        await r.engine.join()
        assert hooks.crashed
        assert r.engine.store.get_run(r.run.id).recovery == "revert"  # still reverting, as recorded
        await r.stop()

        engine = r.restarted()
        await engine.start()
        await engine.join()
        run = engine.store.get_run(r.run.id)
        assert run.state.value == "failed" and run.recovery == "reverted" and "reverted to snapshot" in run.result
        assert r.events("revert.") == [
            "revert.requested",
            "revert.started",
            "revert.reverted",
            "revert.powered_on",
            "revert.verified",
        ]
        assert len([a for a in engine.store.approvals(run.id) if a.gate == "revert"]) == 1
        assert r.binding.calls.count("RevertToSnapshot_Task") == 1
        assert r.host.state.connector.version == "19.03.0.0" and r.binding.vm.runtime.powerState == "poweredOn"


async def test_a_revert_task_past_its_deadline_ends_revert_failed_and_powers_nothing_on(tmp_path, vcsim_stuck):
    async with Revert(tmp_path, vcsim_stuck, extra="vcenter: revert_timeout_seconds = 1", stuck_on="DC0_H0_VM1") as r:
        reply, run = await r.revert()
        assert reply.ok
        assert run.state.value == "failed" and run.recovery is None
        assert r.events("revert.") == ["revert.requested", "revert.started", "revert.failed"]
        assert "did not finish within 1 s" in run.result and "the task was left running" in run.result
        assert "PowerOnVM_Task" not in r.binding.calls


async def test_a_second_revert_after_a_failed_one_asks_its_own_approval(tmp_path, vcsim):
    async with Revert(tmp_path, vcsim, restores=False) as r:
        _reply, failed = await r.revert()
        assert failed.recovery is None and "revert" in r.engine.offers(failed, r.engine.store.steps(failed.id))
        r.binding.restores = True
        reply, run = await r.revert(why="once more")
        assert reply.ok, reply.message
        revert_requests = [a for a in r.engine.store.approvals(run.id) if a.gate == "revert"]
        assert len(revert_requests) == 2 and len([a for a in r.clicker.asked if a["gate"] == "revert"]) == 2
        assert r.events("revert.").count("revert.verified") == 1 and run.recovery == "reverted"


async def test_a_verified_revert_is_not_reverted_again_nor_retried(tmp_path, vcsim):
    async with Revert(tmp_path, vcsim) as r:
        await r.revert()
        before = r.events()
        reply, run = await r.revert(why="once more")
        assert not reply.ok and "already reverted" in reply.message
        retried = await r.engine.retry(run.id, REQUESTER, "again")
        assert not retried.ok and "nothing to resume" in retried.message
        assert r.events() == before  # nothing written
