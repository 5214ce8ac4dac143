"""A vcsim virtual machine bound to a simulated Windows host, so a revert in vCenter really undoes the host.

govmomi's simulator keeps no disk: its RevertToSnapshot_Task only moves ``currentSnapshot``, and the VM stays
powered on. ``VMBinding`` stands between the bot and the simulator (an HTTP proxy on 127.0.0.1 that forwards
every SOAP call unchanged) and plays the hypervisor for one VM:

- ``CreateSnapshot_Task`` on the VM: the host's state is copied before the call, under the snapshot's name;
- ``RevertToSnapshot_Task`` of one of its snapshots: after vCenter answers, the host is put back to the copy
  and powered off (WinRM refuses), and the VM is powered off in the simulator: a snapshot without memory
  comes back powered off, as vSphere does;
- ``PowerOnVM_Task`` on the VM: the host boots (new boot time, services started) and answers again.

``restores=False`` models a revert that does not bring the disk back (the verify must catch it).
``stuck_on="VM"`` models a revert task vCenter never finishes: the revert is not forwarded; its answer is a
task the simulator keeps running (a snapshot task of VM, a simulator started with ``hang_snapshot=[VM]``).
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import http.client
import threading
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

from pyVim.connect import Disconnect, SmartConnect
from pyVmomi import vim

from sandbox.host import HostState
from sandbox.threaded import RunningHost

# Simulation counters stay as they are: they count what happened, not what is on the disk.
_KEPT = frozenset(
    {
        "artifact_url",
        "downloads",
        "installs_started",
        "installs_run",
        "installs_killed",
        "reboots_requested",
        "boots",
        "shutdown_calls",
        "installer_runs",
    }
)


def restore(live: HostState, saved: HostState) -> None:
    """Put ``live`` back to ``saved`` in place (the server holds ``live``)."""
    for field in dataclasses.fields(HostState):
        if field.name not in _KEPT:
            setattr(live, field.name, copy.deepcopy(getattr(saved, field.name)))


def _call(body: bytes) -> tuple[str, dict[str, str]]:
    """The SOAP method and its simple arguments (``_this``, ``name``)."""
    try:
        envelope = ET.fromstring(body)
    except ET.ParseError:
        return "", {}
    soap_body = next((e for e in envelope if e.tag.endswith("Body")), None)
    if soap_body is None or not len(soap_body):
        return "", {}
    method = soap_body[0]
    return method.tag.rsplit("}", 1)[-1], {child.tag.rsplit("}", 1)[-1]: (child.text or "") for child in method}


class VMBinding:
    def __init__(
        self, sim: dict[str, Any], vm_name: str, host: RunningHost, *, restores: bool = True, stuck_on: str = ""
    ):
        self.sim, self.vm_name, self.host, self.restores, self.stuck_on = sim, vm_name, host, restores, stuck_on
        self.target = urlsplit(sim["url"])
        self.saved: dict[str, HostState] = {}  # snapshot name -> the host as it was
        self.calls: list[str] = []  # the bound VM's calls seen, in order
        parts = self.target
        self._si = SmartConnect(
            protocol=parts.scheme, host=parts.hostname, port=parts.port, user=sim["username"], pwd=sim["password"]
        )
        content = self._si.RetrieveContent()
        view = content.viewManager.CreateContainerView(content.rootFolder, [vim.VirtualMachine], True)
        try:
            self.vm = next(vm for vm in view.view if vm.name == vm_name)
            self.stuck_vm = next((vm for vm in view.view if vm.name == stuck_on), None)
        finally:
            view.Destroy()
        self.vm_id = self.vm._moId
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._thread = threading.Thread(target=self._server.serve_forever, name="vm-binding", daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/sdk"

    def snapshot_name(self, snapshot_id: str) -> str | None:
        def walk(nodes):
            for node in nodes or []:
                yield node
                yield from walk(node.childSnapshotList)

        tree = self.vm.snapshot.rootSnapshotList if self.vm.snapshot else []
        return next((n.name for n in walk(tree) if n.snapshot._moId == snapshot_id), None)

    def before(self, method: str, args: dict[str, str]) -> str | None:
        """Returns the snapshot name a revert is about (looked up before vCenter answers)."""
        if method == "CreateSnapshot_Task" and args.get("_this") == self.vm_id:
            self.calls.append(method)
            self.saved[args.get("name", "")] = copy.deepcopy(self.host.state)
        if method == "RevertToSnapshot_Task":
            name = self.snapshot_name(args.get("_this", ""))
            if name is not None:
                self.calls.append(method)
            return name
        return None

    def after(self, method: str, args: dict[str, str], reverted: str | None) -> None:
        if method == "RevertToSnapshot_Task" and reverted is not None:
            self.host.power_off()
            if self.restores and reverted in self.saved:
                restore(self.host.state, self.saved[reverted])
            if self.vm.runtime.powerState == "poweredOn":
                self.vm.PowerOffVM_Task()  # a snapshot without memory: the VM comes back powered off
        if method == "PowerOnVM_Task" and args.get("_this") == self.vm_id:
            self.calls.append(method)
            self.host.power_on()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        binding = self

        class Forward(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:  # quiet
                pass

            def do_GET(self) -> None:  # SmartConnect's version probe (vimServiceVersions.xml)
                self.do_POST("GET")

            def do_POST(self, verb: str = "POST") -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                method, args = _call(body)
                if method == "RevertToSnapshot_Task" and binding.stuck_vm is not None:
                    binding.calls.append(method)
                    self._answer(200, [("Content-Type", "text/xml; charset=utf-8")], binding.stuck_task())
                    return
                with binding._lock:  # one call at a time: what the host went through stays in order
                    reverted = binding.before(method, args)
                    connection = http.client.HTTPConnection(binding.target.hostname, binding.target.port, timeout=60)
                    headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "connection")}
                    connection.request(verb, self.path, body if verb == "POST" else None, headers)
                    answer = connection.getresponse()
                    data = answer.read()
                    status, answer_headers = answer.status, answer.getheaders()
                    connection.close()
                    if status == 200:
                        binding.after(method, args, reverted)
                self._answer(status, answer_headers, data)

            def _answer(self, status: int, answer_headers: list[tuple[str, str]], data: bytes) -> None:
                self.send_response(status)
                for key, value in answer_headers:
                    if key.lower() not in ("transfer-encoding", "content-length", "connection"):
                        self.send_header(key, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        return Forward

    def stuck_task(self) -> bytes:
        """A RevertToSnapshot_Task answer naming a task that never ends."""
        assert self.stuck_vm is not None
        task = self.stuck_vm.CreateSnapshot_Task(name="stuck", description="", memory=False, quiesce=False)
        return (
            '<?xml version="1.0" encoding="UTF-8"?><soapenv:Envelope '
            'xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" '
            'xmlns:xsd="http://www.w3.org/2001/XMLSchema" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">'
            '<soapenv:Body><RevertToSnapshot_TaskResponse xmlns="urn:vim25">'
            f'<returnval type="Task">{task._moId}</returnval>'
            "</RevertToSnapshot_TaskResponse></soapenv:Body></soapenv:Envelope>"
        ).encode()

    def start(self) -> VMBinding:
        self._thread.start()
        return self

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        with contextlib.suppress(Exception):
            Disconnect(self._si)


@contextlib.contextmanager
def bound_vm(sim: dict[str, Any], vm_name: str, host: RunningHost, **options: Any) -> Iterator[VMBinding]:
    binding = VMBinding(sim, vm_name, host, **options).start()
    try:
        yield binding
    finally:
        binding.close()
