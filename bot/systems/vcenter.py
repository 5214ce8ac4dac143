"""The vCenter client: finds a virtual machine and takes a snapshot of it, through pyVmomi.

pyVmomi is synchronous and its stub is not meant to be shared between threads, so every call runs in
one dedicated worker thread (``max_workers=1``) that owns the one connection, made lazily and reused;
the event loop never blocks on vCenter. Properties are read with the PropertyCollector
(``RetrievePropertiesEx``), one round trip for many objects, never object by object.

A session that vCenter expired (``NotAuthenticated``) is logged in again once and the call repeated;
that is safe because vCenter refuses an unauthenticated call before doing anything. A connection lost
while asking for the snapshot is not repeated: the snapshot may exist, and the caller finds it by
name (``find_snapshot``) before taking another.

Deadlines are durations in seconds, as in ``bot.winrm``. Messages name the vCenter URL and what was
looked for, never the user name or the password.
"""

from __future__ import annotations

import asyncio
import http.client
import logging
import socket
import ssl
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any, TypeVar
from urllib.parse import urlsplit

from bot.core.config import Secrets, VCenterConfig
from bot.core.errors import ExternalSystemError

try:  # the optional "vcenter" extra; the errors and Snapshot stay importable without it
    from pyVim.connect import Disconnect, SmartConnect
    from pyVmomi import vim, vmodl
except ImportError:  # pragma: no cover - exercised only where pyvmomi is absent
    Disconnect = SmartConnect = vim = vmodl = None  # type: ignore[assignment]

log = logging.getLogger(__name__)

T = TypeVar("T")

CONNECT_TIMEOUT_SECONDS = 15.0  # reaching the vCenter TCP port
CALL_TIMEOUT_SECONDS = 120.0  # any one SOAP call once connected
TOOLS_RUNNING = "guestToolsRunning"


class VCenterError(ExternalSystemError):
    """vCenter did not do what was asked. The message is for people: no user name, no password."""


class VMNotFound(VCenterError):
    def __init__(self, message: str, vm_name: str, url: str):
        self.vm_name, self.url = vm_name, url
        super().__init__(message)


class SnapshotFailed(VCenterError):
    """vCenter refused the snapshot or its task ended in error; ``fault`` is the vSphere fault type."""

    def __init__(self, message: str, fault: str = "", task: str | None = None):
        self.fault, self.task = fault, task
        super().__init__(message)


class SnapshotTimedOut(VCenterError):
    """The snapshot task did not finish within the deadline. It was left running in vCenter."""

    def __init__(self, message: str, task: str):
        self.task = task
        super().__init__(message)


class VCenterAuthError(VCenterError):
    pass


class SnapshotGone(VCenterError):
    """The snapshot to revert to is no longer on the VM (deleted since): nothing was reverted."""


class RevertFailed(VCenterError):
    """vCenter refused the revert or the power-on, or its task ended in error, or ran past its deadline."""

    def __init__(self, message: str, fault: str = "", task: str | None = None):
        self.fault, self.task = fault, task
        super().__init__(message)


@dataclass(frozen=True)
class PowerState:
    vm: str
    state: str  # vSphere's word: poweredOn, poweredOff, suspended

    @property
    def on(self) -> bool:
        return self.state == "poweredOn"


@dataclass(frozen=True)
class Snapshot:
    name: str
    id: str  # the snapshot's managed object id, e.g. "snapshot-123"
    vm: str  # the virtual machine's name in vCenter
    created: str  # ISO 8601, as vCenter recorded it
    quiesced: bool
    memory: bool


@dataclass(frozen=True)
class _VM:
    id: str
    name: str


@dataclass(frozen=True)
class _Conn:
    si: Any  # vim.ServiceInstance
    content: Any  # its ServiceContent, read once
    stub: Any


class _Lost(VCenterError):
    """The connection broke during a call."""


class _Refused(VCenterError):
    """vCenter answered the call with a fault."""

    def __init__(self, message: str, fault: str):
        self.fault = fault
        super().__init__(message)


class _Cancelled(Exception):
    """The caller went away (cancelled); nobody reads this."""


class VCenterClient:
    """One connection to the vCenter in ``config``, used from one worker thread."""

    def __init__(self, config: VCenterConfig, secrets: Secrets):
        if vim is None:
            raise VCenterError("vCenter support needs pyVmomi: pip install 'idm-upgrade-bot[vcenter]'")
        if not config.url:
            raise ValueError("vcenter.url is not set: give the vCenter address, such as https://vcenter.example.com")
        missing = [
            name
            for name, value in (
                ("VCENTER_USERNAME", secrets.vcenter_username),
                ("VCENTER_PASSWORD", secrets.vcenter_password),
            )
            if value is None or not value.get_secret_value()
        ]
        if missing:
            raise ValueError(f"{' and '.join(missing)} must be set in the environment to use vCenter")
        parts = urlsplit(config.url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"vcenter.url: {config.url!r} is not an http(s):// address")
        self.config = config
        self._protocol = parts.scheme
        self._host = parts.hostname
        self._port = parts.port or (443 if parts.scheme == "https" else 80)
        host = f"[{self._host}]" if ":" in self._host else self._host
        default_port = (parts.scheme == "https" and self._port == 443) or (parts.scheme == "http" and self._port == 80)
        self.url = f"{parts.scheme}://{host}{'' if default_port else f':{self._port}'}"  # never credentials
        self._username = secrets.vcenter_username.get_secret_value()  # type: ignore[union-attr]
        self._password = secrets.vcenter_password.get_secret_value()  # type: ignore[union-attr]
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="vcenter")
        self._conn: _Conn | None = None  # touched only in the worker thread
        self._closing = threading.Event()
        self._closed = False

    # ----------------------------------------------------------------------------------- public API

    async def take_snapshot(
        self,
        vm_name: str,
        name: str,
        description: str,
        *,
        deadline: float | None = None,
        quiesce: bool | None = None,
        host: str | None = None,
    ) -> Snapshot:
        """Snapshot VM_NAME without memory and wait for it, at most ``deadline`` seconds in all.

        ``quiesce=None`` quiesces exactly when VMware Tools is running in the guest. ``host`` (the
        configured host name) only makes a "not found" message point at the right setting.
        """
        seconds = self.config.snapshot_timeout_seconds if deadline is None else deadline
        return await self._call(self._take_snapshot, vm_name, name, description, seconds, quiesce, host)

    async def snapshots(self, vm_name: str, *, host: str | None = None) -> list[Snapshot]:
        """Every snapshot of VM_NAME, the whole tree flattened, oldest first."""
        return await self._call(self._snapshots, vm_name, host)

    async def find_snapshot(self, vm_name: str, name: str, *, host: str | None = None) -> Snapshot | None:
        """The newest snapshot of VM_NAME called exactly NAME, or None."""
        found = [s for s in await self.snapshots(vm_name, host=host) if s.name == name]
        return max(found, key=lambda s: s.created) if found else None

    async def revert_to_snapshot(
        self, vm_name: str, snapshot_id: str, *, deadline: float | None = None, host: str | None = None
    ) -> PowerState:
        """Revert VM_NAME to its snapshot SNAPSHOT_ID (RevertToSnapshot_Task) and wait, at most ``deadline``
        seconds; return the VM's power state after it (a snapshot without memory leaves it powered off).

        The snapshot is looked up in the VM's tree first: one that is gone is SnapshotGone, nothing reverted.
        Reverting again to the same snapshot gives the same disk, so a caller may repeat it after a crash."""
        seconds = self.config.revert_timeout_seconds if deadline is None else deadline
        return await self._call(self._revert, vm_name, snapshot_id, seconds, host)

    async def power_state(self, vm_name: str, *, host: str | None = None) -> PowerState:
        return await self._call(self._power_state, vm_name, host)

    async def power_on(self, vm_name: str, *, deadline: float | None = None, host: str | None = None) -> PowerState:
        """PowerOnVM_Task unless the VM is already on; wait at most ``deadline`` seconds."""
        seconds = self.config.revert_timeout_seconds if deadline is None else deadline
        return await self._call(self._power_on, vm_name, seconds, host)

    async def about(self) -> str:
        """Log in (when not yet) and name the vCenter that answered; reads nothing else, changes nothing."""
        return await self._call(self._about)

    def _about(self, cancel: threading.Event) -> str:
        return str(self._connect().content.about.fullName)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._closing.set()  # a snapshot wait in progress stops polling
        loop = asyncio.get_running_loop()
        try:
            await asyncio.wait_for(loop.run_in_executor(self._executor, self._disconnect), 10)
        except (TimeoutError, RuntimeError):
            log.debug("vCenter %s: logout did not finish; leaving it", self.url)
        self._executor.shutdown(wait=False, cancel_futures=True)

    async def __aenter__(self) -> VCenterClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # ------------------------------------------------------------------------- worker-thread side

    async def _call(self, fn: Callable[..., T], *args: Any) -> T:
        if self._closed:
            raise VCenterError(f"the client for vCenter {self.url} is closed")
        cancel = threading.Event()
        future = asyncio.get_running_loop().run_in_executor(self._executor, fn, cancel, *args)
        try:
            return await future
        except asyncio.CancelledError:
            cancel.set()  # the worker stops waiting at its next poll
            raise

    def _connect(self) -> _Conn:
        if self._conn is not None:
            return self._conn
        if self._closing.is_set():
            raise VCenterError(f"the client for vCenter {self.url} is closed")
        # SmartConnect's first request (the API version probe) has no timeout of its own: make sure
        # the port answers first, so an unreachable vCenter fails in seconds with a clear message.
        try:
            socket.create_connection((self._host, self._port), timeout=CONNECT_TIMEOUT_SECONDS).close()
        except OSError as exc:
            raise VCenterError(f"cannot connect to vCenter {self.url}: {_reason(exc)}") from None
        ignore_tls = self._protocol == "https" and self.config.server_cert_validation == "ignore"
        tls_context = None
        if ignore_tls:
            log.warning(
                "vCenter %s: TLS certificate validation is OFF (vcenter.server_cert_validation = 'ignore')", self.url
            )
        elif self._protocol == "https":
            # An explicit context: pyVmomi skips validation for 127.0.0.1/localhost when given none.
            # The system's CAs (or SSL_CERT_FILE) decide what is trusted.
            tls_context = ssl.create_default_context()
        try:
            si = SmartConnect(
                protocol=self._protocol,
                host=self._host,
                port=self._port,
                user=self._username,
                pwd=self._password,
                disableSslCertValidation=ignore_tls,
                sslContext=tls_context,
                httpConnectionTimeout=CALL_TIMEOUT_SECONDS,
            )
        except vim.fault.InvalidLogin:
            raise VCenterAuthError(
                f"vCenter {self.url} refused the login: wrong user name or password "
                "(check VCENTER_USERNAME and VCENTER_PASSWORD)"
            ) from None
        except ssl.SSLCertVerificationError as exc:
            raise VCenterError(
                f"cannot connect to vCenter {self.url}: its TLS certificate could not be verified "
                f"({self._scrub(exc.verify_message or str(exc))}); trust its CA on this machine, or set "
                'vcenter.server_cert_validation = "ignore"'
            ) from None
        except vmodl.MethodFault as exc:
            raise VCenterError(f"vCenter {self.url} refused the login: {self._fault_message(exc)}") from None
        except (OSError, http.client.HTTPException) as exc:
            raise VCenterError(f"cannot connect to vCenter {self.url}: {self._scrub(_reason(exc))}") from None
        except Exception as exc:  # pyVmomi raises a bare Exception when the answer is not a vSphere API
            raise VCenterError(
                f"cannot connect to vCenter {self.url}: {self._scrub(str(exc))} (is this the vCenter address?)"
            ) from None
        try:
            content = si.RetrieveContent()
        except (OSError, http.client.HTTPException) as exc:
            raise VCenterError(f"cannot connect to vCenter {self.url}: {self._scrub(_reason(exc))}") from None
        log.info("connected to vCenter %s (%s)", self.url, content.about.fullName)
        self._conn = _Conn(si, content, si._stub)
        return self._conn

    def _disconnect(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                Disconnect(conn.si)
            except Exception as exc:  # logging out of a dead session is not worth an error
                log.debug("vCenter %s: logout failed: %s", self.url, type(exc).__name__)

    def _session(self, what: str, fn: Callable[[_Conn], T], *, resend: bool = True) -> T:
        """fn(connection), logging in again once when vCenter expired the session.

        Transport trouble drops the connection (the next call connects again) and is reported naming
        WHAT was being done. ``resend=False``: a lost connection is not retried, the call may have
        taken effect. Any other vSphere fault becomes a VCenterError with vCenter's message.
        """
        for attempt in (1, 2):
            conn = self._connect()
            try:
                return fn(conn)
            except vim.fault.NotAuthenticated:
                self._conn = None  # the session expired or was terminated: log in again once
                if attempt == 2:
                    raise VCenterError(f"vCenter {self.url} ended the session again while {what}") from None
                log.info("vCenter %s: the session expired; logging in again", self.url)
            except vmodl.MethodFault as exc:
                raise _Refused(
                    f"vCenter {self.url} refused {what}: {self._fault_message(exc)}", _fault_name(exc)
                ) from None
            except (OSError, http.client.HTTPException) as exc:
                self._disconnect()
                if attempt == 2 or not resend:
                    raise _Lost(
                        f"lost the connection to vCenter {self.url} while {what}: {self._scrub(_reason(exc))}"
                    ) from None
                log.warning("vCenter %s: %s while %s; connecting again", self.url, _reason(exc), what)
        raise AssertionError("unreachable")

    def _retrieve(self, conn: _Conn, obj: Any, kind: type, paths: list[str], traverse_view: bool = False) -> list[Any]:
        """RetrievePropertiesEx for one object (or every object of a ContainerView), all pages."""
        _PC = vmodl.query.PropertyCollector
        select = [_PC.TraversalSpec(name="view", path="view", skip=False, type=vim.view.ContainerView)]
        obj_spec = _PC.ObjectSpec(obj=obj, skip=traverse_view, selectSet=select if traverse_view else [])
        spec = _PC.FilterSpec(objectSet=[obj_spec], propSet=[_PC.PropertySpec(type=kind, pathSet=paths, all=False)])
        collector = conn.content.propertyCollector
        result = collector.RetrievePropertiesEx([spec], _PC.RetrieveOptions())
        objects: list[Any] = []
        while result is not None:
            objects.extend(result.objects)
            if not result.token:
                break
            result = collector.ContinueRetrievePropertiesEx(result.token)
        return objects

    def _properties(self, conn: _Conn, obj: Any, kind: type, paths: list[str]) -> dict[str, Any]:
        found = self._retrieve(conn, obj, kind, paths)
        return {prop.name: prop.val for prop in found[0].propSet} if found else {}

    def _find_vm(self, vm_name: str, host: str | None) -> _VM:
        def search(conn: _Conn) -> list[tuple[str, str]]:
            content = conn.content
            view = content.viewManager.CreateContainerView(content.rootFolder, [vim.VirtualMachine], True)
            try:
                found = self._retrieve(conn, view, vim.VirtualMachine, ["name"], traverse_view=True)
            finally:
                view.Destroy()
            return [(o.obj._moId, p.val) for o in found for p in o.propSet if p.name == "name"]

        every = self._session(f"looking for virtual machine {vm_name!r}", search)
        matches = [(moid, name) for moid, name in every if name == vm_name]
        if not matches:
            matches = [(moid, name) for moid, name in every if name.casefold() == vm_name.casefold()]
        setting = f"hosts.{host}.vm_name" if host else "hosts.NAME.vm_name"
        if not matches:
            raise VMNotFound(
                f"no virtual machine named {vm_name!r} in vCenter {self.url} (searched the {len(every)} virtual "
                f"machines this account can see, ignoring case); set {setting} to its name in vCenter",
                vm_name,
                self.url,
            )
        if len(matches) > 1:
            listed = ", ".join(f"{name!r} ({moid})" for moid, name in sorted(matches))
            raise VCenterError(
                f"several virtual machines match {vm_name!r} in vCenter {self.url}: {listed}; "
                f"rename them or set {setting} to the exact name of one"
            )
        moid, name = matches[0]
        return _VM(moid, name)

    def _tree(self, vm: _VM) -> list[Any]:
        def read(conn: _Conn) -> list[Any]:
            props = self._properties(conn, vim.VirtualMachine(vm.id, conn.stub), vim.VirtualMachine, ["snapshot"])
            info = props.get("snapshot")
            return list(info.rootSnapshotList) if info is not None else []

        flat: list[Any] = []
        pending = self._session(f"reading the snapshots of {vm.name!r}", read)
        while pending:
            node = pending.pop(0)
            flat.append(node)
            pending[:0] = list(node.childSnapshotList or [])
        return flat

    def _snapshots(self, cancel: threading.Event, vm_name: str, host: str | None) -> list[Snapshot]:
        vm = self._find_vm(vm_name, host)
        nodes = self._tree(vm)
        return sorted((_snapshot(vm, node) for node in nodes), key=lambda s: s.created)

    def _take_snapshot(
        self,
        cancel: threading.Event,
        vm_name: str,
        name: str,
        description: str,
        seconds: float,
        quiesce: bool | None,
        host: str | None,
    ) -> Snapshot:
        started = time.monotonic()
        ends = started + seconds
        vm = self._find_vm(vm_name, host)

        def state(conn: _Conn) -> dict[str, Any]:
            paths = ["runtime.powerState", "guest.toolsRunningStatus"]
            return self._properties(conn, vim.VirtualMachine(vm.id, conn.stub), vim.VirtualMachine, paths)

        facts = self._session(f"reading the state of {vm.name!r}", state)
        tools = facts.get("guest.toolsRunningStatus")
        if quiesce is None:
            quiesce = tools == TOOLS_RUNNING
        log.info(
            "vCenter %s: snapshot %r of %r (%s, VMware Tools %s): memory no, quiesce %s",
            self.url,
            name,
            vm.name,
            facts.get("runtime.powerState", "power state unknown"),
            tools or "status unknown",
            "yes" if quiesce else "no",
        )

        def create(conn: _Conn) -> str:
            task = vim.VirtualMachine(vm.id, conn.stub).CreateSnapshot_Task(
                name=name, description=description, memory=False, quiesce=quiesce
            )
            return task._moId

        try:
            task_id = self._session(f"the snapshot of {vm.name!r}", create, resend=False)
        except _Refused as exc:
            raise SnapshotFailed(str(exc), fault=exc.fault) from None
        except _Lost as exc:
            raise VCenterError(
                f"{exc}; the snapshot {name!r} may have been started: look for it before taking another"
            ) from None

        info = self._wait(task_id, vm, name, started, ends, cancel)
        if info.state != vim.TaskInfo.State.success:
            error = info.error
            message = self._fault_message(error) if error is not None else "no reason given"
            raise SnapshotFailed(
                f"the snapshot {name!r} of {vm.name!r} failed in vCenter {self.url} (task {task_id}): {message}",
                fault=_fault_name(error) if error is not None else "",
                task=task_id,
            )
        snapshot_id = info.result._moId if info.result is not None else None
        for node in self._tree(vm):
            if node.snapshot._moId == snapshot_id:
                # memory is what was asked for: the simulator records the VM's power state, not the memory
                return _snapshot(vm, node, memory=False)
        raise VCenterError(
            f"the snapshot task {task_id} of {vm.name!r} succeeded in vCenter {self.url}, "
            f"but the snapshot {snapshot_id or name!r} is not in the VM's snapshot tree"
        )

    def _read_power(self, vm: _VM) -> PowerState:
        def read(conn: _Conn) -> dict[str, Any]:
            paths = ["runtime.powerState"]
            return self._properties(conn, vim.VirtualMachine(vm.id, conn.stub), vim.VirtualMachine, paths)

        state = self._session(f"reading the power state of {vm.name!r}", read).get("runtime.powerState")
        return PowerState(vm.name, str(state) if state is not None else "unknown")

    def _power_state(self, cancel: threading.Event, vm_name: str, host: str | None) -> PowerState:
        return self._read_power(self._find_vm(vm_name, host))

    def _run_task(
        self, vm: _VM, what: str, start: Callable[[_Conn], Any], seconds: float, cancel: threading.Event
    ) -> None:
        """Start a task (never resent: it may have begun) and wait for it; RevertFailed naming WHAT."""
        started = time.monotonic()
        try:
            task_id = self._session(what, lambda conn: start(conn)._moId, resend=False)
        except _Refused as exc:
            raise RevertFailed(str(exc), fault=exc.fault) from None
        try:
            info = self._wait(task_id, vm, "", started, started + seconds, cancel, what=what)
        except SnapshotTimedOut as exc:
            raise RevertFailed(str(exc), fault="timeout", task=task_id) from None
        if info.state != vim.TaskInfo.State.success:
            error = info.error
            message = self._fault_message(error) if error is not None else "no reason given"
            raise RevertFailed(
                f"{what} failed in vCenter {self.url} (task {task_id}): {message}",
                fault=_fault_name(error) if error is not None else "",
                task=task_id,
            )

    def _revert(
        self, cancel: threading.Event, vm_name: str, snapshot_id: str, seconds: float, host: str | None
    ) -> PowerState:
        vm = self._find_vm(vm_name, host)
        node = next((n for n in self._tree(vm) if n.snapshot._moId == snapshot_id), None)
        if node is None:
            raise SnapshotGone(
                f"snapshot {snapshot_id} is no longer on VM {vm.name!r} in vCenter {self.url} (deleted?); "
                "nothing was reverted"
            )
        log.info("vCenter %s: reverting %r to snapshot %r (%s)", self.url, vm.name, node.name, snapshot_id)
        self._run_task(
            vm,
            f"the revert of {vm.name!r} to snapshot {node.name!r} ({snapshot_id})",
            lambda conn: vim.vm.Snapshot(snapshot_id, conn.stub).RevertToSnapshot_Task(),
            seconds,
            cancel,
        )
        return self._read_power(vm)

    def _power_on(self, cancel: threading.Event, vm_name: str, seconds: float, host: str | None) -> PowerState:
        vm = self._find_vm(vm_name, host)
        if self._read_power(vm).on:
            return self._read_power(vm)
        self._run_task(
            vm,
            f"powering on {vm.name!r}",
            lambda conn: vim.VirtualMachine(vm.id, conn.stub).PowerOnVM_Task(),
            seconds,
            cancel,
        )
        return self._read_power(vm)

    def _wait(
        self,
        task_id: str,
        vm: _VM,
        name: str,
        started: float,
        ends: float,
        cancel: threading.Event,
        what: str | None = None,
    ) -> Any:
        """Poll the task until it ends; never past ``ends``. The task is left alone on timeout."""
        what = what or f"the snapshot {name!r} of {vm.name!r}"
        delay = 0.1
        while True:

            def read(conn: _Conn) -> Any:
                # the parts read, not all of ``info``: a revert task's entity is a snapshot, which pyVmomi
                # refuses to read as info.entity (a ManagedEntity)
                paths = ["info.state", "info.error", "info.progress", "info.result"]
                found = self._properties(conn, vim.Task(task_id, conn.stub), vim.Task, paths)
                return SimpleNamespace(**{path.removeprefix("info."): found.get(path) for path in paths})

            info = self._session(f"waiting for the task {task_id} ({what})", read)
            if info.state in (vim.TaskInfo.State.success, vim.TaskInfo.State.error):
                return info
            now = time.monotonic()
            if now >= ends:
                progress = f", {info.progress}% done" if info.progress is not None else ""
                raise SnapshotTimedOut(
                    f"{what} did not finish within {ends - started:g} s "
                    f"(vCenter {self.url}, task {task_id}, {info.state}{progress}); the task was left running: "
                    "check it in the vSphere Client",
                    task=task_id,
                )
            if self._closing.is_set():
                raise VCenterError(
                    f"the vCenter client was closed while waiting for the task {task_id} ({what}); "
                    "the task was left running"
                )
            if cancel.wait(min(delay, ends - now)):
                raise _Cancelled()
            delay = min(delay * 2, 2.0)

    # ---------------------------------------------------------------------------------- messages

    def _scrub(self, text: str) -> str:
        for secret in (self._password, self._username):
            if secret:
                text = text.replace(secret, "***")
        return text

    def _fault_message(self, fault: Any) -> str:
        message = getattr(fault, "msg", None) or getattr(fault, "localizedMessage", None)
        name = _fault_name(fault)
        return self._scrub(f"{message} ({name})" if message else name)


def _fault_name(fault: Any) -> str:
    return type(fault).__name__.rsplit(".", 1)[-1]


def _reason(exc: BaseException) -> str:
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, TimeoutError | socket.timeout):
        return "timed out"
    if isinstance(exc, socket.gaierror):
        return f"name not resolved ({exc.strerror})"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__


def _snapshot(vm: _VM, node: Any, memory: bool | None = None) -> Snapshot:
    return Snapshot(
        name=node.name,
        id=node.snapshot._moId,
        vm=vm.name,
        created=node.createTime.isoformat(),
        quiesced=bool(node.quiesced),
        # vSphere records a memory snapshot as taken powered on: reverting to it resumes the VM
        memory=(node.state == vim.VirtualMachine.PowerState.poweredOn) if memory is None else memory,
    )
