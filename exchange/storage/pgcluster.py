"""A throwaway PostgreSQL cluster for tests and benchmarks (Debian's ``initdb``/``pg_ctl``).

The server binaries refuse to run as root, so as root they run as the
``postgres`` user through ``runuser``. The cluster lives in a temporary
directory, listens on 127.0.0.1 on a free port with trust authentication, and
keeps ``fsync`` at its default (on), so durability costs are real.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path

from exchange.errors import StorageError
from exchange.ports import unused_port


class PostgresUnavailable(StorageError):
    """No PostgreSQL server binaries were found on this machine."""


def find_bindir() -> Path:
    """Return the directory holding ``initdb`` and ``pg_ctl``; raise ``PostgresUnavailable``."""
    candidates = sorted(
        glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(Path(p).parent.name),
        reverse=True,
    )
    found = shutil.which("initdb")
    if found:
        candidates.insert(0, str(Path(found).resolve().parent))
    for directory in candidates:
        if (Path(directory) / "initdb").is_file() and (Path(directory) / "pg_ctl").is_file():
            return Path(directory)
    raise PostgresUnavailable(
        "postgresql server binaries (initdb, pg_ctl) not found on PATH or in "
        "/usr/lib/postgresql/*/bin; install the Debian package 'postgresql'"
    )


class PgCluster:
    """One temporary PostgreSQL cluster; :meth:`start` returns a superuser DSN.

    The cluster directory is world-searchable so the server's Unix socket in
    it is reachable by the test process.
    """

    def __init__(self, *, max_connections: int = 200) -> None:
        self._bindir = find_bindir()
        self._max_connections = max_connections
        self._dir: Path | None = None
        self.dsn = ""
        self.port = 0

    def _run(self, *argv: str) -> None:
        prefix: list[str] = []
        if os.geteuid() == 0:
            prefix = ["runuser", "-u", "postgres", "--"]
        result = subprocess.run(
            [*prefix, *argv], capture_output=True, text=True, check=False, timeout=120,
        )
        if result.returncode != 0:
            raise StorageError(
                f"{Path(argv[0]).name} failed with exit status {result.returncode}: "
                f"{(result.stderr or result.stdout)[-2000:]}"
            )

    def start(self) -> str:
        """Create and start the cluster; return its DSN (database ``postgres``)."""
        base = Path(tempfile.mkdtemp(prefix="exchange-pg-"))
        self._dir = base
        if os.geteuid() == 0:
            user = pwd.getpwnam("postgres")
            os.chown(base, user.pw_uid, user.pw_gid)
        base.chmod(0o755)
        data = base / "data"
        self._run(
            str(self._bindir / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres",
            "-E", "UTF8", "--locale=C", "--no-sync",
        )
        self.port = unused_port()
        options = (
            f"-p {self.port} -k {base} -c listen_addresses=127.0.0.1 "
            f"-c max_connections={self._max_connections} -c shared_buffers=128MB"
        )
        self._run(
            str(self._bindir / "pg_ctl"), "-D", str(data), "-l", str(base / "server.log"),
            "-w", "-t", "60", "-o", options, "start",
        )
        self.dsn = self.dsn_for("postgres")
        return self.dsn

    def dsn_for(self, database: str, *, tcp: bool = False) -> str:
        """Return the DSN of ``database`` in this cluster.

        The Unix socket is the default: on a small machine it halves the
        round-trip time, as it does for a server next to its database.
        """
        if tcp:
            return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"
        return f"postgresql://postgres@/{database}?host={self._dir}&port={self.port}"

    def stop(self) -> None:
        """Stop the server (immediately) and delete the cluster's files."""
        if self._dir is None:
            return
        with contextlib.suppress(StorageError):
            self._run(str(self._bindir / "pg_ctl"), "-D", str(self._dir / "data"),
                      "-m", "immediate", "-w", "stop")
        shutil.rmtree(self._dir, ignore_errors=True)
        self._dir = None


__all__ = ["PgCluster", "PostgresUnavailable", "find_bindir"]
