"""A private PostgreSQL cluster for fault tests: ``initdb`` in a temp folder, its own port.

Stopping it, or killing its sessions, leaves the shared test server (``TEST_DATABASE_URL``)
and the tests using it alone. ``initdb`` and ``postgres`` refuse to run as root, so when the
tests run as root (as CI does) the cluster runs as the ``postgres`` user.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg

from tests.utils.ci import require
from tests.utils.servers import free_port


def _bindir() -> Path | None:
    """Where ``initdb`` and ``pg_ctl`` are: on PATH, else the newest Debian install."""
    initdb = shutil.which("initdb")
    if initdb:
        return Path(os.path.realpath(initdb)).parent
    found = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"),
        key=lambda p: int(Path(p).parts[-3]) if Path(p).parts[-3].isdigit() else 0,
    )
    return Path(found[-1]).parent if found else None


def _require(condition: bool, message: str) -> None:
    """Fail under CI (the fault tests must run there), skip on a laptop without PostgreSQL."""
    require(condition, message, needed_by="the fault tests")


class Cluster:
    """One PostgreSQL server of our own; ``stop`` and ``start`` it at will."""

    def __init__(self, folder: Path, bindir: Path, port: int) -> None:
        self.folder = folder
        self.data = folder / "data"
        self.bindir = bindir
        self.port = port
        self._user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []

    def url(self, database: str = "postgres") -> str:
        """A libpq URL for ``database`` on this cluster (trust auth, user ``postgres``)."""
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def _run(self, tool: str, *args: str, timeout: float = 60) -> None:
        cmd = [*self._user, str(self.bindir / tool), *args]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
        if done.returncode != 0:
            raise AssertionError(f"{tool} failed ({done.returncode}):\n{done.stdout}{done.stderr}")

    def init(self) -> None:
        """Create the cluster: trust auth, no fsync (process faults, not power cuts)."""
        self._run(
            "initdb",
            "-D",
            str(self.data),
            "-U",
            "postgres",
            "--auth=trust",
            "--no-sync",
            "--no-instructions",
            "-E",
            "UTF8",
        )
        # fsync off: a stopped or killed server loses nothing the OS has (what these tests
        # inject); it only saves each test the cost of flushing to disk on a busy machine.
        settings = {
            "listen_addresses": "'127.0.0.1'",
            "port": str(self.port),
            "unix_socket_directories": f"'{self.folder}'",
            "fsync": "off",
            "full_page_writes": "off",
            "max_connections": "60",
            "shared_buffers": "32MB",
        }
        with (self.data / "postgresql.conf").open("a") as conf:
            conf.writelines(f"{k} = {v}\n" for k, v in settings.items())

    def start(self) -> None:
        """Start the server and wait until it accepts connections."""
        log = str(self.folder / "server.log")
        self._run("pg_ctl", "-D", str(self.data), "-l", log, "-w", "-t", "60", "start")
        deadline = time.monotonic() + 30
        while True:
            try:
                with psycopg.connect(self.url(), connect_timeout=2) as conn:
                    conn.execute("SELECT 1")
                return
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    def stop(self, mode: str = "fast") -> None:
        """Stop the server: ``fast`` ends sessions cleanly, ``immediate`` is a crash."""
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "-t", "60", "stop")

    def running(self) -> bool:
        """Whether the server answers."""
        try:
            with psycopg.connect(self.url(), connect_timeout=2) as conn:
                conn.execute("SELECT 1")
            return True
        except psycopg.OperationalError:
            return False

    def create_database(self, name: str) -> str:
        """A new, empty database; its URL."""
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def log(self) -> str:
        """The server's log (for assertion messages)."""
        path = self.folder / "server.log"
        return path.read_text(errors="replace") if path.exists() else ""


@contextmanager
def private_cluster() -> Iterator[Cluster]:
    """A started cluster in a temp folder owned by ``postgres``; stopped and removed after."""
    bindir = _bindir()
    _require(bindir is not None, "PostgreSQL server binaries (initdb, pg_ctl) are not installed")
    assert bindir is not None
    if os.geteuid() == 0:
        _require(shutil.which("runuser") is not None, "runuser is needed to run initdb as root")
        try:
            owner = pwd.getpwnam("postgres")
        except KeyError:
            _require(False, "no 'postgres' user to run initdb as")
            raise
    folder = Path(tempfile.mkdtemp(prefix="sg-faults-pg-"))
    if os.geteuid() == 0:
        os.chown(folder, owner.pw_uid, owner.pw_gid)
    cluster = Cluster(folder, bindir, free_port())
    try:
        cluster.init()
        cluster.start()
        yield cluster
    finally:
        try:
            if (cluster.data / "postmaster.pid").exists():
                cluster.stop("immediate")
        finally:
            shutil.rmtree(folder, ignore_errors=True)
