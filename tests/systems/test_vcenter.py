"""bot.vcenter with real pyVmomi against govmomi's vCenter simulator (tests/vcsim)."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import threading
import time
from datetime import datetime
from urllib.parse import urlsplit

import pytest
from pyVim.connect import Disconnect, SmartConnect
from pyVmomi import vim

from bot.core.config import Secrets, VCenterConfig
from bot.systems.vcenter import (
    Snapshot,
    SnapshotFailed,
    SnapshotTimedOut,
    VCenterAuthError,
    VCenterClient,
    VCenterError,
    VMNotFound,
)
from tests.support.waiting import eventually
from tests.vcsim import running_vcsim, vcsim_fixture

VM = "DC0_H0_VM0"
RUN_ID = "r20240501-0007"
PASSWORD = "Vc-pa55word!"  # the simulator's required password in the login tests

vcsim = vcsim_fixture()


@pytest.fixture(autouse=True)
def _debug_logs(caplog):
    caplog.set_level(logging.DEBUG)


def client_for(sim, *, username=None, password=None, **config) -> VCenterClient:
    return VCenterClient(
        VCenterConfig(url=sim["url"], **config),
        Secrets(vcenter_username=username or sim["username"], vcenter_password=password or sim["password"]),
    )


def raw_vm(sim, name):
    """An independent pyVmomi connection and the VM NAME, to check what the client did."""
    parts = urlsplit(sim["url"])
    si = SmartConnect(
        protocol=parts.scheme, host=parts.hostname, port=parts.port, user=sim["username"], pwd=sim["password"]
    )
    content = si.RetrieveContent()
    view = content.viewManager.CreateContainerView(content.rootFolder, [vim.VirtualMachine], True)
    try:
        return si, next(vm for vm in view.view if vm.name == name)
    finally:
        view.Destroy()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ------------------------------------------------------------------------------------------ snapshots


async def test_snapshot_is_taken_named_with_the_run_id_and_visible_on_the_vm(vcsim):
    name = f"idm-upgrade {RUN_ID}"
    async with client_for(vcsim) as client:
        assert await client.find_snapshot(VM, name) is None
        snap = await client.take_snapshot(VM, name, f"before the connector upgrade, run {RUN_ID}", deadline=30)

        assert isinstance(snap, Snapshot)
        assert snap.name == name and RUN_ID in snap.name
        assert snap.id.startswith("snapshot-")
        assert snap.vm == VM
        assert snap.memory is False
        assert snap.quiesced is False  # VMware Tools is not running in this VM
        assert datetime.fromisoformat(snap.created).tzinfo is not None

        assert [s.id for s in await client.snapshots(VM)] == [snap.id]
        found = await client.find_snapshot(VM, name)
        assert found is not None and found.id == snap.id and found.name == name
        assert await client.find_snapshot(VM, "another name") is None
        assert await client.snapshots("DC0_H0_VM1") == []

    si, vm = raw_vm(vcsim, VM)  # seen through a separate session, as the vSphere Client would
    try:
        tree = vm.snapshot.rootSnapshotList
        assert [(t.name, t.snapshot._moId) for t in tree] == [(name, snap.id)]
        assert tree[0].description == f"before the connector upgrade, run {RUN_ID}"
        assert vm.snapshot.currentSnapshot._moId == snap.id
    finally:
        Disconnect(si)


async def test_quiesced_when_vmware_tools_runs_and_the_tree_is_flattened():
    with running_vcsim(tools_running=[VM]) as sim:
        async with client_for(sim) as client:
            first = await client.take_snapshot(VM, "first", "", deadline=30)
            second = await client.take_snapshot(VM, "second", "", deadline=30)  # a child of the first
            assert first.quiesced and second.quiesced
            assert not first.memory and not second.memory
            listed = await client.snapshots(VM)
            assert [s.name for s in listed] == ["first", "second"]
            assert [s.id for s in listed] == [first.id, second.id]

            not_quiesced = await client.take_snapshot(VM, "third", "", deadline=30, quiesce=False)
            assert not not_quiesced.quiesced
            assert (await client.find_snapshot(VM, "second")).id == second.id


async def test_one_connection_is_reused_from_one_worker_thread(vcsim, caplog):
    async with client_for(vcsim) as client:
        for _ in range(3):
            await client.snapshots(VM)
        await client.take_snapshot(VM, "one", "", deadline=30)
        assert sum("connected to vCenter" in r.getMessage() for r in caplog.records) == 1
        assert {r.threadName for r in caplog.records if r.name == "bot.systems.vcenter"} <= {"vcenter_0"}


async def test_an_expired_session_is_logged_in_again(vcsim, caplog):
    async with client_for(vcsim) as client:
        await client.snapshots(VM)
        # vCenter ends idle sessions; end this one behind the client's back, in its own thread
        await asyncio.get_running_loop().run_in_executor(
            client._executor, lambda: client._conn.content.sessionManager.Logout()
        )
        snap = await client.take_snapshot(VM, "after expiry", "", deadline=30)
        assert snap.name == "after expiry"
        assert any("session expired" in r.getMessage() for r in caplog.records)


# ----------------------------------------------------------------------------------- finding the VM


async def test_vm_not_found_names_what_was_searched_and_where(vcsim):
    async with client_for(vcsim) as client:
        with pytest.raises(VMNotFound) as caught:
            await client.take_snapshot("idm-conn-07", f"idm-upgrade {RUN_ID}", "", deadline=30, host="host07")
        message = str(caught.value)
        assert "no virtual machine named 'idm-conn-07'" in message
        assert f"in vCenter {vcsim['url'].removesuffix('/sdk')}" in message
        assert "searched the 4 virtual machines" in message
        assert "set hosts.host07.vm_name to its name in vCenter" in message
        assert caught.value.vm_name == "idm-conn-07"

        with pytest.raises(VMNotFound, match=r"hosts\.NAME\.vm_name"):
            await client.snapshots("nope")
        with pytest.raises(VMNotFound):
            await client.find_snapshot("nope", "x")


async def test_vm_names_match_ignoring_case_and_ambiguity_is_an_error():
    rename = {"DC0_H0_VM0": "IDM-Connector-01", "DC0_H0_VM1": "conn", "DC0_C0_RP0_VM0": "CONN"}
    with running_vcsim(rename=rename) as sim:
        async with client_for(sim) as client:
            snap = await client.take_snapshot("idm-connector-01", "s", "", deadline=30)
            assert snap.vm == "IDM-Connector-01"
            assert (await client.take_snapshot("conn", "s", "", deadline=30)).vm == "conn"  # exact name wins
            with pytest.raises(VCenterError) as caught:
                await client.snapshots("Conn")
            assert not isinstance(caught.value, VMNotFound)
            assert "several virtual machines match 'Conn'" in str(caught.value)
            assert "'CONN' (vm-" in str(caught.value) and "'conn' (vm-" in str(caught.value)


# -------------------------------------------------------------------------------- failing snapshots


async def test_a_snapshot_task_in_error_raises_its_message():
    with running_vcsim(fail_snapshot=[VM]) as sim:
        async with client_for(sim) as client:
            with pytest.raises(SnapshotFailed) as caught:
                await client.take_snapshot(VM, f"idm-upgrade {RUN_ID}", "", deadline=30)
            message = str(caught.value)
            assert f"the snapshot 'idm-upgrade {RUN_ID}' of '{VM}' failed" in message
            assert "Failed to quiesce the virtual machine." in message
            assert caught.value.fault == "ApplicationQuiesceFault"
            assert caught.value.task and caught.value.task in message
            assert await client.snapshots(VM) == []


async def test_a_refused_snapshot_call_raises_snapshot_failed():
    with running_vcsim(disable_snapshot=[VM]) as sim:
        async with client_for(sim) as client:
            with pytest.raises(SnapshotFailed) as caught:
                await client.take_snapshot(VM, "s", "", deadline=30)
            assert caught.value.fault == "MethodDisabled"
            assert f"refused the snapshot of '{VM}'" in str(caught.value)


async def test_a_snapshot_past_its_deadline_times_out_and_the_task_is_left_running():
    with running_vcsim(hang_snapshot=[VM]) as sim:
        async with client_for(sim) as client:
            started = time.monotonic()
            with pytest.raises(SnapshotTimedOut) as caught:
                await client.take_snapshot(VM, "slow", "", deadline=0.6)
            assert 0.5 <= time.monotonic() - started < 5
            task = caught.value.task
            assert task.startswith("task-")
            assert "did not finish within 0.6 s" in str(caught.value) and task in str(caught.value)
            assert "left running" in str(caught.value)

            si, _ = raw_vm(sim, VM)
            try:
                assert vim.Task(task, si._stub).info.state == "running"
            finally:
                Disconnect(si)


async def test_cancelling_a_wait_frees_the_worker(monkeypatch):
    with running_vcsim(hang_snapshot=[VM]) as sim:
        async with client_for(sim) as client:
            polling = threading.Event()  # the worker is in the wait for the (hanging) snapshot task
            wait = client._wait

            def observed_wait(*args):
                polling.set()
                return wait(*args)

            monkeypatch.setattr(client, "_wait", observed_wait)
            waiting = asyncio.create_task(client.take_snapshot(VM, "slow", "", deadline=600))
            await eventually(polling.is_set, what="the client waiting for the snapshot task")
            waiting.cancel()
            with pytest.raises(asyncio.CancelledError):
                await waiting
            # the worker thread stopped polling (its deadline is 600 s): the next call is served
            assert await asyncio.wait_for(client.snapshots("DC0_H0_VM1"), 30) == []


# ---------------------------------------------------------------------------- login and connection


async def test_wrong_credentials_are_an_auth_error_without_the_password(caplog):
    with running_vcsim(username="svc-idm-upgrade", password=PASSWORD) as sim:
        wrong = "Wr0ng-" + PASSWORD
        async with client_for(sim, username="svc-idm-upgrade", password=wrong) as client:
            with pytest.raises(VCenterAuthError) as caught:
                await client.snapshots(VM)
        message = str(caught.value)
        assert "refused the login" in message and "VCENTER_PASSWORD" in message
        assert sim["url"].removesuffix("/sdk") in message

        async with client_for(sim, username="svc-idm-upgrade", password=PASSWORD) as client:
            assert (await client.take_snapshot(VM, "ok", "", deadline=30)).name == "ok"

    logged = "\n".join(r.getMessage() for r in caplog.records) + caplog.text
    for secret in (PASSWORD, wrong, "svc-idm-upgrade"):
        assert secret not in message
        assert secret not in logged


async def test_connection_refused_names_the_url():
    port = free_port()
    client = VCenterClient(
        VCenterConfig(url=f"http://127.0.0.1:{port}"), Secrets(vcenter_username="u", vcenter_password="p")
    )
    try:
        with pytest.raises(
            VCenterError, match=rf"cannot connect to vCenter http://127\.0\.0\.1:{port}: connection refused"
        ):
            await client.snapshots(VM)
    finally:
        await client.close()


async def test_tls_is_validated_unless_told_to_ignore(caplog, monkeypatch, tmp_path):
    with running_vcsim(tls=True) as sim:
        assert sim["url"].startswith("https://")
        async with client_for(sim) as client:  # a self-signed certificate, even on 127.0.0.1
            with pytest.raises(VCenterError) as caught:
                await client.snapshots(VM)
        assert "TLS certificate could not be verified" in str(caught.value)
        assert 'server_cert_validation = "ignore"' in str(caught.value)

        ca = tmp_path / "vcenter-ca.pem"
        ca.write_text(sim["certificate"])
        monkeypatch.setenv("SSL_CERT_FILE", str(ca))  # trusting its certificate is enough
        async with client_for(sim) as client:
            assert await client.snapshots(VM) == []
        monkeypatch.delenv("SSL_CERT_FILE")

        async with client_for(sim, server_cert_validation="ignore") as client:
            assert await client.snapshots(VM) == []
        assert any(
            r.levelno == logging.WARNING and "TLS certificate validation is OFF" in r.getMessage()
            for r in caplog.records
        )


def test_configuration_and_credentials_are_required():
    secrets = Secrets(vcenter_username="u", vcenter_password="p")
    with pytest.raises(ValueError, match=r"vcenter\.url"):
        VCenterClient(VCenterConfig(), secrets)
    with pytest.raises(ValueError, match="VCENTER_USERNAME and VCENTER_PASSWORD"):
        VCenterClient(VCenterConfig(url="https://vc.example.com"), Secrets())
    with pytest.raises(ValueError, match="VCENTER_PASSWORD") as caught:
        VCenterClient(VCenterConfig(url="https://vc.example.com"), Secrets(vcenter_username="u"))
    assert "VCENTER_USERNAME" not in str(caught.value)


async def test_a_closed_client_refuses_calls(vcsim):
    client = client_for(vcsim)
    await client.snapshots(VM)
    await client.close()
    await client.close()  # twice is harmless
    with pytest.raises(VCenterError, match="is closed"):
        await client.snapshots(VM)


# ------------------------------------------------------------------------------------ the simulator


def test_the_simulator_stops_with_its_context():
    with running_vcsim() as sim:
        pid = sim["pid"]
        parts = urlsplit(sim["url"])
        assert sim["any_login"] and sim["username"] and sim["password"]
        assert sim["vms"] == ["DC0_C0_RP0_VM0", "DC0_C0_RP0_VM1", "DC0_H0_VM0", "DC0_H0_VM1"]
        socket.create_connection((parts.hostname, parts.port), timeout=2).close()
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    with pytest.raises(OSError):
        socket.create_connection((parts.hostname, parts.port), timeout=1).close()
