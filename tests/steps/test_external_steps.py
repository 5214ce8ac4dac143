"""The steps outside the Windows server: STARTTLS through the Workspace ONE Access stand-in, snapshots
through govmomi's vCenter simulator with real pyvmomi, and the post-check."""

from __future__ import annotations

import logging

from bot.core.config import Secrets, VCenterConfig
from bot.core.models import RunState, StepState
from bot.engine.approvals import ApprovalPolicy
from bot.engine.engine import Engine
from bot.store.store import Store
from bot.systems.services import build_services
from bot.systems.vcenter import VCenterClient
from sandbox.threaded import running_host
from sandbox.workspace_one import WorkspaceOneStandIn, iwa_directory
from steps.plan import upgrade_plan
from tests.steps.conftest import Clicker, sandbox_config
from tests.support.configs import REQUESTER
from tests.vcsim import running_vcsim


def gates(clicker) -> list[str]:
    return [a["gate"] for a in clicker.asked]


async def test_starttls_on_is_approved_updated_and_read_back(upgrade, caplog):
    caplog.set_level(logging.DEBUG)
    async with WorkspaceOneStandIn() as ws1:
        ldap_before = ws1.serialize(next(i for i, d in ws1.directories.items() if d["type"] == "ACTIVE_DIRECTORY_LDAP"))
        engine, _host, clicker, run = await upgrade("physical", ws1=ws1)
        [iwa_id] = ws1.iwa_ids()
        assert ws1.directories[iwa_id]["useStartTls"] is False
        [update] = ws1.updates
        assert update.directory_id == iwa_id
        # nothing else in the document changed, and the LDAP directory was never touched
        assert {k: v for k, v in update.document.items() if k != "useStartTls"} == {
            k: v for k, v in ws1.directories[iwa_id].items() if k != "useStartTls"
        }
        ldap_id = next(i for i, d in ws1.directories.items() if d["type"] == "ACTIVE_DIRECTORY_LDAP")
        assert ws1.serialize(ldap_id) == ldap_before
        secret = ws1.client_secret
    assert run.state is RunState.succeeded, run.result
    assert gates(clicker) == ["STARTTLS", "install"]
    request = clicker.asked[0]["evidence"]
    # shown as an approver reads it (Slack and the terminal alike), not as the API's document
    assert request["directories"] == [f"corp.example.com ({iwa_id})"]
    assert "nothing else" in request["what_changes"]
    starttls = engine.store.step(run.id, "starttls")
    assert starttls.state is StepState.succeeded and "read back" in starttls.reason
    post = engine.store.step(run.id, "postcheck")
    assert post.state is StepState.succeeded and "do not enable STARTTLS" in post.reason
    assert secret not in caplog.text


async def test_a_directory_that_appears_after_the_last_check_is_not_written(upgrade):
    """Between the look after the grant and the update (the third read of the list) a tenant admin adds an
    AD-over-IWA directory with STARTTLS on: apply writes only the granted one, and verify says the new one
    is still on, for a person to look at; the new directory is never written."""
    async with WorkspaceOneStandIn() as ws1:
        [granted_id] = ws1.iwa_ids()
        added = iwa_directory("branch.example.com", domains=["branch.example.com"])

        def admin_adds_a_directory(reads: int) -> None:
            if reads == 3:
                ws1.directories[added["directoryId"]] = added

        ws1.before_list = admin_adds_a_directory
        engine, _host, clicker, run = await upgrade("physical", ws1=ws1)
        assert [u.directory_id for u in ws1.updates] == [granted_id]
        assert ws1.directories[added["directoryId"]]["useStartTls"] is True
    assert gates(clicker) == ["STARTTLS"]
    assert run.state is RunState.failed
    step = engine.store.step(run.id, "starttls")
    assert step.state is StepState.failed and "still on for branch.example.com" in step.reason


async def test_starttls_already_off_is_skipped_with_the_kb_note(upgrade):
    async with WorkspaceOneStandIn([iwa_directory("corp.example.com", use_start_tls=False)]) as ws1:
        engine, _host, clicker, run = await upgrade("physical", ws1=ws1)
        assert ws1.update_requests == []
    assert run.state is RunState.succeeded
    step = engine.store.step(run.id, "starttls")
    assert step.state is StepState.skipped
    assert step.reason == "STARTTLS already off (the KB 77158 hotfix may have done this)"
    assert "STARTTLS" not in gates(clicker)


async def test_update_rejected_goes_to_the_console_and_is_verified(upgrade):
    async with WorkspaceOneStandIn() as ws1:
        ws1.reject_updates = True
        [iwa_id] = ws1.iwa_ids()

        class ConsoleUser(Clicker):
            async def deliver(self, event):
                if event.kind == "approval.requested" and event.data["gate"] == "STARTTLS console":
                    ws1.directories[iwa_id]["useStartTls"] = False  # the person clears the box and saves
                await super().deliver(event)

        engine, _host, clicker, run = await upgrade("physical", ws1=ws1, decision=ConsoleUser())
        assert len(ws1.update_requests) == 1 and ws1.updates == []
    assert run.state is RunState.succeeded, run.result
    assert gates(clicker) == ["STARTTLS", "STARTTLS console", "install"]
    console = clicker.asked[1]
    assert "Identity & Access Management > Manage > Directories" in console["evidence"]["what_to_do"]
    facts = engine.store.step(run.id, "starttls").facts
    assert facts["changed_by"] == "a person in the console" and "400" in facts["api_rejected"]
    assert engine.store.step(run.id, "starttls").reason.endswith("(read back)")


async def test_console_confirmation_without_the_change_fails_verification(upgrade):
    async with WorkspaceOneStandIn() as ws1:
        ws1.reject_updates = True
        engine, _host, _clicker, run = await upgrade("physical", ws1=ws1)
    assert run.state is RunState.failed
    assert "STARTTLS is still on for corp.example.com" in engine.store.step(run.id, "starttls").reason


async def test_denied_starttls_sends_no_update(upgrade):
    async with WorkspaceOneStandIn() as ws1:
        engine, host, _clicker, run = await upgrade("default", ws1=ws1, decision={"STARTTLS": "deny"})
        assert ws1.update_requests == []
    assert run.state is RunState.denied and run.result.startswith("STARTTLS approval denied by ")
    assert host.stats["installs_started"] == 0  # the upgrade never started
    assert engine.store.step(run.id, "starttls").state is StepState.denied
    # what was and was not changed, in words; no revert advice: the host is as it was
    cause, changed, unchanged, advice = run.result.split("\n")
    snapshot = engine.store.step(run.id, "snapshot").facts["snapshot"]["name"]
    assert changed == f"Changed: snapshot '{snapshot}' taken (by a person)"
    assert unchanged == (
        "Not changed: STARTTLS (still on for corp.example.com); the connector (the installer did not run); "
        "the server (not rebooted)"
    )
    assert "revert" in advice and advice.startswith("Nothing on the host needs a revert")


async def test_denied_reboot_says_the_host_changed_and_advises_the_snapshot(upgrade):
    async with WorkspaceOneStandIn() as ws1:
        engine, host, _clicker, run = await upgrade("default", ws1=ws1, decision={"reboot": "deny"})
    assert run.state is RunState.denied and host.stats["installs_started"] == 1
    lines = run.result.split("\n")
    assert lines[0].startswith("reboot approval denied by ") and "has NOT been rebooted" in lines[0]
    changed = next(line for line in lines if line.startswith("Changed: "))
    assert "STARTTLS turned off tenant-wide on corp.example.com" in changed
    assert "connector upgraded by the installer (exit code 0)" in changed
    assert "Not changed: the server (not rebooted)" in lines
    assert lines[-1].startswith("If something is wrong, revert the VM to snapshot '")


async def test_two_host_batch_changes_starttls_once(tmp_path):
    async with WorkspaceOneStandIn() as ws1:
        with (
            running_host("physical", password="Batch-Pw-1") as one,
            running_host("physical", password="Batch-Pw-1") as two,
        ):
            two.state.artifact_url = one.installer_url  # both download from the same artifact store
            config = sandbox_config(one, tmp_path / "batch.db", ws1_url=ws1.url, more_hosts=(two,))
            secrets = Secrets.from_env(
                {
                    "WINRM_USERNAME": one.username,
                    "WINRM_PASSWORD": "Batch-Pw-1",
                    "WS1_CLIENT_ID": ws1.client_id,
                    "WS1_CLIENT_SECRET": ws1.client_secret,
                }
            )
            services = build_services(config, secrets)
            clicker = Clicker()
            engine = Engine(
                Store(config.database.path),
                config,
                upgrade_plan(),
                policy=ApprovalPolicy(config.slack),
                sinks=[clicker],
                services=services,
                approval_poll_seconds=0.05,
            )
            clicker.engine = engine
            runs = await engine.submit(["host01", "host02"], REQUESTER)
            await engine.join()
            await engine.stop()
            await services.close()
            assert [engine.store.get_run(r.id).state for r in runs] == [RunState.succeeded] * 2
            assert len(ws1.updates) == 1
            second = engine.store.step(runs[1].id, "starttls")
            assert second.state is StepState.skipped and "already off" in second.reason
            assert one.state.connector.version == two.state.connector.version == "19.03.0.1"


async def test_vcenter_snapshot_named_with_the_run_id(upgrade):
    with running_vcsim() as vcsim:
        async with WorkspaceOneStandIn() as ws1:
            engine, _host, clicker, run = await upgrade("default", ws1=ws1, vcenter=vcsim)
        assert run.state is RunState.succeeded, run.result
        assert "snapshot" not in gates(clicker)  # taken by vCenter: nobody had to confirm
        facts = engine.store.step(run.id, "snapshot").facts["snapshot"]
        assert run.id in facts["name"] and facts["vm"] == "DC0_H0_VM0"
        client = VCenterClient(
            VCenterConfig(url=vcsim["url"]),
            Secrets.from_env({"VCENTER_USERNAME": vcsim["username"], "VCENTER_PASSWORD": vcsim["password"]}),
        )
        on_vm = await client.snapshots("DC0_H0_VM0")
        await client.close()
        assert [s.name for s in on_vm] == [facts["name"]]
        assert f"revert the VM to snapshot '{facts['name']}'" in run.result


async def test_a_dry_run_with_vcenter_takes_no_snapshot_and_says_vcenter_would(upgrade):
    with running_vcsim() as vcsim:
        async with WorkspaceOneStandIn() as ws1:
            engine, host, clicker, run = await upgrade("default", ws1=ws1, vcenter=vcsim, check_only=True)
            assert ws1.updates == []
        assert run.state is RunState.succeeded, run.result
        assert gates(clicker) == []  # nobody was asked anything
        client = VCenterClient(
            VCenterConfig(url=vcsim["url"]),
            Secrets.from_env({"VCENTER_USERNAME": vcsim["username"], "VCENTER_PASSWORD": vcsim["password"]}),
        )
        on_vm = await client.snapshots("DC0_H0_VM0")
        await client.close()
        assert on_vm == []
    plan = {s["step"]: s for s in engine.store.step(run.id, "preflight").facts["plan"]["steps"]}
    assert plan["snapshot"]["would_run"] and plan["snapshot"]["reason"] == "snapshot VM DC0_H0_VM0 in vCenter"
    assert plan["snapshot"]["gate"] is None  # vCenter takes it: no confirmation
    assert host.stats["installs_started"] == 0


async def test_vcenter_vm_not_found_names_what_was_searched(upgrade, tmp_path):
    with running_vcsim(rename={"DC0_H0_VM0": "something-else"}) as vcsim:
        engine, host, _clicker, run = await upgrade("default", vcenter=vcsim)
    assert run.state is RunState.failed
    reason = engine.store.step(run.id, "snapshot").reason
    assert "no virtual machine named 'DC0_H0_VM0'" in reason and vcsim["url"].removesuffix("/sdk") in reason
    assert reason.startswith("while looking at the host: ")
    assert host.stats["installs_started"] == 0


async def test_without_vcenter_a_person_confirms_the_snapshot(upgrade):
    engine, _host, clicker, run = await upgrade("default", decision={"snapshot": "approve"})
    assert gates(clicker)[0] == "snapshot"
    assert clicker.asked[0]["request_kind"] == "confirmation"
    assert engine.store.step(run.id, "snapshot").state is StepState.succeeded


async def test_postcheck_says_what_to_do_when_this_run_never_touched_starttls(upgrade):
    """Already at the target version, STARTTLS still on (default tenant): not "back ON", but what to do."""
    async with WorkspaceOneStandIn() as ws1:
        engine, _host, _clicker, run = await upgrade("already-current", ws1=ws1)
    assert run.state is RunState.failed
    reason = engine.store.step(run.id, "postcheck").reason
    assert "back ON" not in reason and "this run did not change it" in reason
    assert "Turn it off in the console: Identity & Access Management > Manage > Directories" in reason
