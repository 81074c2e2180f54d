"""A throw-away PostgreSQL cluster for the tests: Debian's binaries, a temp dir, loopback only.

``initdb`` makes a cluster in a fresh temp dir, ``pg_ctl start`` runs it on a free port of
127.0.0.1 (Unix socket in the same dir), trust authentication for the ``postgres`` superuser,
durability off (fsync, synchronous commit, full-page writes: the data dies with the test run).
PostgreSQL refuses to run as root: under root the dir is given to the ``postgres`` user and every
server command runs as that user (``runuser -u postgres --``, or ``su postgres``).
"""

from __future__ import annotations

import glob
import os
import pwd
import re
import shlex
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from tooling import free_port, missing

SERVER_USER = "postgres"
SUPERUSER = "postgres"
_TOOLS = ("initdb", "pg_ctl", "postgres")


class ClusterUnavailable(Exception):
    """The PostgreSQL server binaries (or a user to run them as) are missing."""


def unavailable(reason: str) -> None:
    """Skip the test, or fail it under CI (``CI=true``): there a missing server is a broken setup."""
    missing(reason)


def find_bin_dir() -> Path:
    """The newest ``/usr/lib/postgresql/N/bin`` with initdb, pg_ctl and postgres, else pg_ctl's own dir.

    Raises:
        ClusterUnavailable: no usable server binaries.
    """

    def version(path: str) -> tuple[int, ...]:
        return tuple(int(n) for n in re.findall(r"\d+", path))

    candidates = [Path(p) for p in sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=version, reverse=True)]
    pg_ctl = shutil.which("pg_ctl")
    if pg_ctl:
        candidates.append(Path(pg_ctl).resolve().parent)
    for directory in candidates:
        if all(os.access(directory / tool, os.X_OK) for tool in _TOOLS):
            return directory
    raise ClusterUnavailable(
        "PostgreSQL server binaries (initdb, pg_ctl, postgres) not found in /usr/lib/postgresql/*/bin "
        "or on PATH: apt-get install postgresql"
    )


def run_as_prefix() -> tuple[list[str], tuple[int, int] | None]:
    """How to run a server command: (command prefix, uid/gid to own the cluster dir or None).

    Raises:
        ClusterUnavailable: running as root without a ``postgres`` user or runuser/su.
    """
    if os.geteuid() != 0:
        return [], None
    try:
        user = pwd.getpwnam(SERVER_USER)
    except KeyError as exc:
        raise ClusterUnavailable(f"running as root and there is no {SERVER_USER!r} user to run PostgreSQL") from exc
    owner = (user.pw_uid, user.pw_gid)
    runuser = shutil.which("runuser")
    if runuser:
        return [runuser, "-u", SERVER_USER, "--"], owner
    su = shutil.which("su")
    if su:
        return [su, SERVER_USER, "-s", "/bin/sh", "-c"], owner
    raise ClusterUnavailable("running as root without runuser or su to become the postgres user")


@dataclass
class Cluster:
    """A running test cluster."""

    bin_dir: Path
    root: Path
    port: int
    prefix: list[str]

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def log(self) -> Path:
        return self.root / "server.log"

    def dsn(self, database: str = "postgres") -> str:
        return f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/{database}"

    def run(self, *args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
        """Run a server command as the server's user; raise with its output when it fails."""
        command = [str(a) for a in args]
        if self.prefix and self.prefix[-1] == "-c":  # su: one shell command line
            command = [*self.prefix, shlex.join(command)]
        else:
            command = [*self.prefix, *command]
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"{shlex.join(args)} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
        return done

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no server log)"

    def stop(self) -> None:
        """Stop the server at once (the data is thrown away) and remove its dir."""
        try:
            self.run(str(self.bin_dir / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop", timeout=30)
        finally:
            shutil.rmtree(self.root, ignore_errors=True)


def start_cluster(attempts: int = 3) -> Cluster:
    """initdb + pg_ctl start on a free loopback port.

    Raises:
        ClusterUnavailable: no binaries, or no way to run them.
        RuntimeError: initdb or the server failed (with the server log).
    """
    bin_dir = find_bin_dir()
    prefix, owner = run_as_prefix()
    # Under root the server's user must reach the dir: /tmp, not a root-only TMPDIR.
    parent = "/tmp" if owner is not None and os.path.isdir("/tmp") else tempfile.gettempdir()
    root = Path(tempfile.mkdtemp(prefix="pbx-bridge-pg-", dir=parent))
    if owner is not None:
        os.chown(root, *owner)
    cluster = Cluster(bin_dir, root, 0, prefix)
    try:
        cluster.run(
            str(bin_dir / "initdb"),
            "-D",
            str(cluster.data),
            "-U",
            SUPERUSER,
            "--auth=trust",
            "--encoding=UTF8",
            "--locale=C",
            "--no-sync",
        )
        for attempt in range(attempts):
            cluster.port = free_port()
            options = (
                f"-c listen_addresses=127.0.0.1 -p {cluster.port} -k {root} "
                "-c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=100"
            )
            try:
                cluster.run(
                    str(bin_dir / "pg_ctl"),
                    "-D",
                    str(cluster.data),
                    "-l",
                    str(cluster.log),
                    "-w",
                    "-t",
                    "30",
                    "-o",
                    options,
                    "start",
                )
                return cluster
            except RuntimeError as exc:
                if attempt == attempts - 1:  # a port taken between free_port() and start: try another
                    raise RuntimeError(f"{exc}\nserver log:\n{cluster.log_tail()}") from exc
    except BaseException:
        shutil.rmtree(root, ignore_errors=True)
        raise
    raise AssertionError("unreachable")
