"""VCenterClient.revert_to_snapshot and power_on, with real pyVmomi against govmomi's vCenter simulator."""

from __future__ import annotations

import pytest
from pyVim.connect import Disconnect

from bot.systems.vcenter import RevertFailed, SnapshotGone
from tests.systems.test_vcenter import VM, client_for, raw_vm
from tests.vcsim import vcsim_fixture

vcsim = vcsim_fixture()


async def test_revert_makes_the_snapshot_current_and_reads_the_power_state(vcsim):
    async with client_for(vcsim) as client:
        first = await client.take_snapshot(VM, "before", "", deadline=30)
        second = await client.take_snapshot(VM, "after", "", deadline=30)
        state = await client.revert_to_snapshot(VM, first.id, deadline=30)
        assert state.vm == VM and state.state in ("poweredOn", "poweredOff")
    si, vm = raw_vm(vcsim, VM)
    try:
        assert vm.snapshot.currentSnapshot._moId == first.id != second.id
    finally:
        Disconnect(si)


async def test_power_on_a_powered_off_vm_and_leave_a_running_one_alone(vcsim):
    si, vm = raw_vm(vcsim, VM)
    try:
        vm.PowerOffVM_Task()
        assert vm.runtime.powerState == "poweredOff"
        async with client_for(vcsim) as client:
            assert not (await client.power_state(VM)).on
            assert (await client.power_on(VM, deadline=30)).on
            assert (await client.power_on(VM, deadline=30)).on  # already on: no second PowerOnVM_Task
        assert vm.runtime.powerState == "poweredOn"
    finally:
        Disconnect(si)


async def test_a_snapshot_that_no_longer_exists_reverts_nothing(vcsim):
    async with client_for(vcsim) as client:
        kept = await client.take_snapshot(VM, "kept", "", deadline=30)
        with pytest.raises(SnapshotGone) as caught:
            await client.revert_to_snapshot(VM, "snapshot-9999", deadline=30)
        assert "snapshot-9999 is no longer on VM 'DC0_H0_VM0'" in str(caught.value)
        assert "nothing was reverted" in str(caught.value)
        assert vcsim["password"] not in str(caught.value)
        assert [s.id for s in await client.snapshots(VM)] == [kept.id]


async def test_a_vm_without_snapshots_and_an_unknown_vm(vcsim):
    async with client_for(vcsim) as client:
        with pytest.raises(SnapshotGone):
            await client.revert_to_snapshot("DC0_H0_VM1", "snapshot-1", deadline=30)
        with pytest.raises(Exception, match="no virtual machine named 'nope'"):
            await client.revert_to_snapshot("nope", "snapshot-1", deadline=30)


def test_revert_failed_names_the_task():
    failed = RevertFailed("the revert of 'vm' failed", fault="timeout", task="task-7")
    assert failed.task == "task-7" and failed.fault == "timeout"
