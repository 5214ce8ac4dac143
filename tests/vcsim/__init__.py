"""govmomi's vCenter simulator for the tests: build it from Debian's packages, start it, stop it.

``tests/vcsim/main.go`` is a few lines over ``github.com/vmware/govmomi/simulator`` (Debian's
golang-github-vmware-govmomi-dev, in /usr/share/gocode); ``make vcsim`` or :func:`build` compiles it
to ``tests/vcsim/vcsim``. Nothing is fetched from the network.

    from tests.vcsim import running_vcsim

    with running_vcsim(tools_running=["DC0_H0_VM0"]) as sim:
        sim["url"], sim["username"], sim["password"], sim["vms"]

The inventory is the simulator's VPX model: one datacenter, virtual machines ``DC0_H0_VM0``,
``DC0_H0_VM1`` (on a standalone host), ``DC0_C0_RP0_VM0`` and ``DC0_C0_RP0_VM1`` (in a cluster), all
powered on, VMware Tools not running unless ``tools_running`` names them.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import selectors
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

HERE = Path(__file__).resolve().parent
BINARY = HERE / "vcsim"
SOURCE = HERE / "main.go"
GOPATH = Path("/usr/share/gocode")
GOVMOMI = GOPATH / "src" / "github.com" / "vmware" / "govmomi"
APT_PACKAGES = "golang-go golang-github-vmware-govmomi-dev"
VMS = ("DC0_C0_RP0_VM0", "DC0_C0_RP0_VM1", "DC0_H0_VM0", "DC0_H0_VM1")


class VCSimUnavailable(RuntimeError):
    pass


def build(force: bool = False) -> Path:
    """Compile tests/vcsim/vcsim when it is missing or older than main.go; return its path.

    A lock file keeps two test processes from building at once.
    """
    if not force and _fresh():
        return BINARY
    go = shutil.which("go")
    if go is None or not (GOVMOMI / "simulator").is_dir():
        raise VCSimUnavailable(
            f"the vCenter simulator needs Go and govmomi's sources: apt-get install -y {APT_PACKAGES}"
        )
    env = dict(os.environ, GOPATH=str(GOPATH), GO111MODULE="off")
    env.setdefault("GOCACHE", str(Path(tempfile.gettempdir()) / "idm-upgrade-go-cache"))
    env.pop("GOFLAGS", None)
    with open(Path(tempfile.gettempdir()) / "idm-upgrade-vcsim-build.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if force or not _fresh():
            done = subprocess.run(
                [go, "build", "-o", str(BINARY), "."], cwd=HERE, env=env, capture_output=True, text=True, timeout=600
            )
            if done.returncode != 0:
                raise VCSimUnavailable(f"building the vCenter simulator failed:\n{done.stderr.strip()}")
    return BINARY


def _fresh() -> bool:
    return BINARY.exists() and BINARY.stat().st_mtime >= SOURCE.stat().st_mtime


@contextlib.contextmanager
def running_vcsim(
    *,
    username: str | None = None,
    password: str | None = None,
    tls: bool = False,
    rename: Mapping[str, str] | None = None,
    tools_running: Iterable[str] = (),
    fail_snapshot: Iterable[str] = (),
    hang_snapshot: Iterable[str] = (),
    disable_snapshot: Iterable[str] = (),
    timeout: float = 30,
) -> Iterator[dict[str, Any]]:
    """Start the simulator on 127.0.0.1 (a free port) and yield what its first line says.

    Yields ``{"url": "http://127.0.0.1:PORT/sdk", "username", "password", "any_login", "vms", "pid"}``.
    Without ``username``/``password`` the simulator accepts any non-empty user and password
    (``any_login`` true); with them, only that login. ``rename`` maps simulator VM names to new ones
    (the other options name VMs after renaming). ``fail_snapshot``: snapshot tasks end in error
    (a quiesce failure); ``hang_snapshot``: snapshot tasks stay running; ``disable_snapshot``:
    CreateSnapshot_Task is a disabled method. The process is stopped (SIGTERM, then SIGKILL) on exit.
    """
    if (username is None) != (password is None):
        raise ValueError("username and password go together")
    args = [str(build())]
    if username is not None:
        args += ["-username", username, "-password", password or ""]
    if tls:
        args.append("-tls")
    for flag, names in (
        ("-rename", [f"{old}={new}" for old, new in (rename or {}).items()]),
        ("-tools-running", tools_running),
        ("-fail-snapshot", fail_snapshot),
        ("-hang-snapshot", hang_snapshot),
        ("-disable-snapshot", disable_snapshot),
    ):
        names = list(names)
        if names:
            args += [flag, ",".join(names)]
    with tempfile.TemporaryFile() as stderr:
        process = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=stderr, stdin=subprocess.DEVNULL)
        try:
            info = _first_line(process, timeout, stderr)
            yield info
        finally:
            _stop(process)


def _first_line(process: subprocess.Popen, timeout: float, stderr: Any) -> dict[str, Any]:
    with selectors.DefaultSelector() as selector:
        selector.register(process.stdout, selectors.EVENT_READ)
        ready = selector.select(timeout)
    line = process.stdout.readline() if ready else b""
    if not line:
        _stop(process)
        stderr.seek(0)
        detail = stderr.read().decode(errors="replace").strip()[-2000:]
        raise VCSimUnavailable(
            f"the vCenter simulator did not start within {timeout:g} s (exit code {process.returncode}): {detail}"
        )
    return json.loads(line)


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    if process.stdout is not None:
        process.stdout.close()


def wait_for_port_closed(url: str, timeout: float = 5) -> bool:
    """True once nothing listens at URL's port any more (for tests of the stop)."""
    parts = urlsplit(url)
    ends = time.monotonic() + timeout
    while time.monotonic() < ends:
        try:
            socket.create_connection((parts.hostname, parts.port), timeout=0.5).close()
        except OSError:
            return True
        time.sleep(0.05)
    return False


def vcsim_fixture(**options: Any):
    """A pytest fixture function running the simulator with OPTIONS for each test that uses it.

    In a conftest or test module: ``vcsim = vcsim_fixture()`` (any name works), or
    ``vcsim_tools = vcsim_fixture(tools_running=["DC0_H0_VM0"])``. A simulator that cannot be
    built or started fails the test with the reason (for instance the apt-get line to run).
    """
    import pytest

    @pytest.fixture
    def fixture() -> Iterator[dict[str, Any]]:
        try:
            build()
        except VCSimUnavailable as exc:
            pytest.fail(str(exc), pytrace=False)
        with running_vcsim(**options) as sim:
            yield sim

    return fixture


vcsim = vcsim_fixture()
