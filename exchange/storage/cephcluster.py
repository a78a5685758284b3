"""A throwaway single-node Ceph cluster with an S3 gateway (RGW), for tests and benchmarks.

Debian's ``ceph-mon``, ``ceph-osd`` and ``radosgw`` packages, run in the
foreground from a temporary directory on 127.0.0.1, each one a child process
stopped by its PID. The layout is the smallest that behaves like a deployment
(facts verified on this machine, see issue 18):

- one monitor, no manager (nothing here needs one);
- one BlueStore OSD on a sparse file (``memstore`` loses data on SIGKILL and
  hangs), so a killed gateway or OSD keeps every acknowledged write;
- ``auth * required = none`` with ``ms mon client mode = crc`` (without the
  latter radosgw never answers), pool size 1, every address 127.0.0.1
  (otherwise heartbeats bind to all interfaces);
- short Paxos intervals (the monitor commits in milliseconds, not seconds)
  and short RGW garbage-collection intervals (deleted data would otherwise
  wait two hours).

An OSD restarted after a SIGKILL must first be marked down (``ceph osd down
0``), or the monitor keeps sending clients to the dead instance for a while.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path

from exchange.errors import StorageError
from exchange.ports import unused_port

#: The Debian packages that provide the daemons below.
PACKAGES = ("ceph-mon", "ceph-osd", "radosgw")
_BINARIES = ("ceph-mon", "ceph-osd", "radosgw", "radosgw-admin", "ceph", "monmaptool")

#: How long a daemon may take to come up on a loaded machine.
START_TIMEOUT_S = 120.0


class CephUnavailable(StorageError):
    """The Ceph daemons are not installed on this machine."""


class _DaemonExited(StorageError):
    """A daemon exited while starting."""


@dataclass(frozen=True, slots=True)
class S3Account:
    """Where the gateway listens and the credentials of its one user."""

    endpoint: str
    access_key: str
    secret_key: str
    region: str = "default"


def find_ceph() -> None:
    """Raise :class:`CephUnavailable` unless every Ceph binary this helper runs is on PATH."""
    missing = [name for name in _BINARIES if shutil.which(name) is None]
    if missing:
        raise CephUnavailable(
            f"ceph binaries not found on PATH: {', '.join(missing)}; install the Debian "
            f"packages {' '.join(PACKAGES)}"
        )


def _config(base: Path, fsid: str, mon_port: int) -> str:
    return f"""[global]
fsid = {fsid}
mon host = v1:127.0.0.1:{mon_port}
mon initial members = a
public addr = 127.0.0.1
cluster addr = 127.0.0.1
auth cluster required = none
auth service required = none
auth client required = none
ms mon client mode = crc
ms bind msgr2 = false
run dir = {base}/run
admin socket = {base}/run/$name.asok
log file = {base}/log/$name.log
log to stderr = false
err to stderr = true
mon data = {base}/mon/$cluster-$id
osd data = {base}/osd/$cluster-$id
osd objectstore = bluestore
bluestore block create = true
bluestore block size = 21474836480
bluestore fsck on mkfs = false
bluestore cache size = 67108864
osd memory target = 536870912
osd pool default size = 1
osd pool default min size = 1
osd pool default pg num = 8
osd pool default pgp num = 8
osd crush chooseleaf type = 0
mon allow pool size one = true
mon allow pool delete = true
mon warn on pool no redundancy = false
mon max pg per osd = 1000
paxos propose interval = 0.05
paxos min wait = 0.01
mon osd report timeout = 30
osd heartbeat grace = 5
osd class update on start = false
osd crush update on start = false
rgw gc obj min wait = 1
rgw gc processor period = 5
rgw gc processor max time = 5
rgw dns name = 127.0.0.1
rgw thread pool size = 64
"""


class CephCluster:
    """One temporary Ceph cluster; :meth:`start` returns the S3 account of its gateway."""

    def __init__(self) -> None:
        find_ceph()
        self._dir: Path | None = None
        self._procs: dict[str, subprocess.Popen[bytes]] = {}
        self.rgw_port = 0
        self.account: S3Account | None = None
        #: Seconds :meth:`start` took, for the record (tests print it).
        self.start_seconds = 0.0

    @property
    def directory(self) -> Path:
        """The cluster's temporary directory (configuration, logs, data)."""
        if self._dir is None:
            raise StorageError("the ceph cluster is not started")
        return self._dir

    @property
    def conf(self) -> Path:
        """The cluster's ``ceph.conf``."""
        return self.directory / "ceph.conf"

    def _run(self, *argv: str, timeout: float = 60.0) -> str:
        for attempt in range(3):
            result = subprocess.run(
                [argv[0], "-c", str(self.conf), *argv[1:]], capture_output=True, text=True,
                check=False, timeout=timeout,
            )
            # Seen once while a second cluster started on the same machine: the CLI
            # briefly reached a monitor that did not know it yet; asking again works.
            if result.returncode == 0 or "EPERM" not in result.stderr or attempt == 2:
                break
            time.sleep(0.5)
        if result.returncode != 0:
            raise StorageError(
                f"{argv[0]} {argv[1] if len(argv) > 1 else ''} failed with exit status "
                f"{result.returncode}: {(result.stderr or result.stdout)[-2000:]}"
            )
        return result.stdout

    def _spawn(self, name: str, *argv: str) -> None:
        log = (self.directory / "log" / f"{name}.out").open("ab")
        with log:
            self._procs[name] = subprocess.Popen(
                [argv[0], "-f", "-c", str(self.conf), *argv[1:]],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True,
            )

    def start(self) -> S3Account:
        """Create the cluster, start mon, OSD and gateway, create a user; return its account."""
        began = time.monotonic()
        base = Path(tempfile.mkdtemp(prefix="exchange-ceph-"))
        self._dir = base
        try:
            for sub in ("run", "log", "mon", "osd"):
                (base / sub).mkdir()
            fsid = str(uuid.uuid4())
            mon_port = unused_port()
            self.conf.write_text(_config(base, fsid, mon_port))
            monmap = base / "monmap"
            subprocess.run(
                ["monmaptool", "--create", "--fsid", fsid, "--addv", "a",
                 f"[v1:127.0.0.1:{mon_port}]", str(monmap)],
                capture_output=True, check=True, timeout=30,
            )
            self._run("ceph-mon", "--mkfs", "-i", "a", "--monmap", str(monmap))
            self._spawn("mon.a", "ceph-mon", "-i", "a")
            osd_uuid = str(uuid.uuid4())
            osd_id = self._run("ceph", "osd", "create", osd_uuid, timeout=START_TIMEOUT_S).strip()
            if osd_id != "0":
                raise StorageError(f"the new cluster numbered its first OSD {osd_id!r}, not 0")
            (base / "osd" / "ceph-0").mkdir()
            self._run("ceph-osd", "-i", "0", "--mkfs", "--osd-uuid", osd_uuid,
                      timeout=START_TIMEOUT_S)
            # Placed by us, not by the OSD at start-up: its own early monitor commands
            # are sometimes refused ("wrong fsid", EPERM) and it exits.
            self._run("ceph", "osd", "crush", "add", "osd.0", "1.0", "root=default")
            self.start_osd()
            self._run("ceph", "osd", "pool", "create", ".rgw.root", "8")
            self.rgw_port = unused_port()
            self.start_rgw()
            access, secret = secrets.token_hex(10).upper(), secrets.token_hex(20)
            self._run(
                "radosgw-admin", "user", "create", "--uid", "exchange",
                "--display-name", "exchange tests", "--access-key", access,
                "--secret-key", secret, timeout=START_TIMEOUT_S,
            )
            self.account = S3Account(
                endpoint=f"http://127.0.0.1:{self.rgw_port}", access_key=access,
                secret_key=secret,
            )
        except BaseException:
            self.stop()
            raise
        self.start_seconds = time.monotonic() - began
        return self.account

    # -- daemons -------------------------------------------------------------

    def start_osd(self) -> None:
        """Start OSD 0 and wait until the monitor reports it up.

        A fresh OSD's first commands to the monitor are sometimes refused
        (EPERM) and it exits; a second start works, so it gets three.
        """
        for attempt in range(3):
            self._spawn("osd.0", "ceph-osd", "-i", "0")
            try:
                self._wait(self._osd_up, "osd.0 to come up")
                return
            except _DaemonExited:
                if attempt == 2:
                    raise

    def _osd_up(self) -> bool:
        proc = self._procs.get("osd.0")
        if proc is not None and proc.poll() is not None:
            tail = (self.directory / "log" / "osd.0.out").read_text(errors="replace")[-1500:]
            raise _DaemonExited(
                f"ceph-osd exited with status {proc.returncode} while starting: {tail}"
            )
        return self._run("ceph", "osd", "dump").find("osd.0 up ") >= 0

    def kill_osd(self) -> None:
        """SIGKILL OSD 0 and mark it down, so a restart is not confused with the dead one."""
        self._signal("osd.0", signal.SIGKILL)
        self._run("ceph", "osd", "down", "0")

    def start_rgw(self) -> None:
        """Start the gateway on :attr:`rgw_port` and wait until it answers HTTP."""
        self._spawn(
            "rgw", "radosgw", "-n", "client.rgw",
            "--rgw-frontends", f"beast endpoint=127.0.0.1:{self.rgw_port}",
        )
        self._wait(self._rgw_answers, "radosgw to answer HTTP")

    def stop_rgw(self, sig: signal.Signals = signal.SIGTERM) -> None:
        """Stop the gateway with ``sig`` (SIGKILL to simulate a crash) and reap it."""
        self._signal("rgw", sig)

    def _rgw_answers(self) -> bool:
        proc = self._procs.get("rgw")
        if proc is not None and proc.poll() is not None:
            raise StorageError(
                f"radosgw exited with status {proc.returncode}; see {self.directory}/log"
            )
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.rgw_port}/", timeout=5):
                return True
        except urllib.error.HTTPError:
            return True  # any HTTP answer (403 for anonymous) means it is serving
        except OSError:
            return False

    def _wait(self, ready: object, what: str) -> None:
        assert callable(ready)
        deadline = time.monotonic() + START_TIMEOUT_S
        delay = 0.05
        while not ready():
            if time.monotonic() > deadline:
                raise StorageError(f"timed out waiting for {what}; see {self.directory}/log")
            time.sleep(delay)
            delay = min(delay * 2, 0.5)

    def _signal(self, name: str, sig: signal.Signals) -> None:
        proc = self._procs.pop(name, None)
        if proc is None or proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, sig)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)

    def stop(self) -> None:
        """Stop every daemon (gateway, OSD, monitor, by PID) and delete the cluster's files."""
        for name in ("rgw", "osd.0", "mon.a"):
            self._signal(name, signal.SIGTERM)
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None


__all__ = ["PACKAGES", "CephCluster", "CephUnavailable", "S3Account", "find_ceph"]
