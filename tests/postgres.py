"""A throwaway PostgreSQL server for the tests: Debian's `postgresql` binaries (`make test` installs the
package when they are missing), a data directory of its own, a free port, stopped by its own pid.

PostgreSQL refuses to run as root, so under root (CI) the server runs as the package's `postgres`
user, in a directory that user owns. Tuned for tests: no fsync, no synchronous commit.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import create_engine, make_url

DATABASE = "mpp_test"
OWNER = "postgres"  # the Debian package's system user, who runs the server under root


def binaries() -> Path | None:
    """The directory holding `initdb` and `postgres`: Debian's newest, else whatever is on PATH."""
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda path: int(path.parts[-3]))
    if found:
        return found[-1].parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass(frozen=True)
class _RunAs:
    user: int | None
    group: int | None

    @classmethod
    def for_server(cls) -> _RunAs:
        if os.geteuid() != 0:
            return cls(None, None)
        owner = pwd.getpwnam(OWNER)
        return cls(owner.pw_uid, owner.pw_gid)

    def own(self, path: Path) -> None:
        if self.user is not None and self.group is not None:
            os.chown(path, self.user, self.group)


@contextmanager
def postgres_server() -> Iterator[str]:
    """A running server with an empty database ``mpp_test``; yields its SQLAlchemy URL."""
    bin_dir = binaries()
    if bin_dir is None:
        raise RuntimeError("PostgreSQL is not installed: `make test` installs Debian's postgresql package")
    run_as = _RunAs.for_server()
    base = Path(tempfile.mkdtemp(prefix="mpp-postgres-"))  # not under pytest's 0700 tmp: the owner must reach it
    run_as.own(base)
    data, port = base / "data", _free_port()
    subprocess.run(
        [str(bin_dir / "initdb"), "-D", str(data), "-U", "mpp", "--auth=trust", "-E", "UTF8", "--locale=C", "-N"],
        check=True,
        capture_output=True,
        user=run_as.user,  # None: the current user
        group=run_as.group,
    )
    server = subprocess.Popen(
        [
            str(bin_dir / "postgres"),
            "-D",
            str(data),
            "-p",
            str(port),
            "-k",
            str(base),
            "-c",
            "listen_addresses=127.0.0.1",
            "-c",
            "fsync=off",
            "-c",
            "synchronous_commit=off",
            "-c",
            "full_page_writes=off",
            "-c",
            "max_connections=200",
        ],
        stdout=subprocess.DEVNULL,
        stderr=(base / "server.log").open("wb"),
        user=run_as.user,  # None: the current user
        group=run_as.group,
    )
    try:
        _wait_until_ready(bin_dir, port, server, base)
        subprocess.run(
            [str(bin_dir / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "mpp", DATABASE],
            check=True,
            capture_output=True,
        )
        yield f"postgresql+psycopg://mpp@127.0.0.1:{port}/{DATABASE}"
    finally:
        server.send_signal(signal.SIGINT)  # "fast" shutdown: no waiting for clients to leave
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        shutil.rmtree(base, ignore_errors=True)


def _wait_until_ready(bin_dir: Path, port: int, server: subprocess.Popen[bytes], base: Path) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"PostgreSQL exited: {(base / 'server.log').read_text(errors='replace')[-2000:]}")
        ready = subprocess.run(
            [str(bin_dir / "pg_isready"), "-h", "127.0.0.1", "-p", str(port), "-U", "mpp"], capture_output=True
        )
        if ready.returncode == 0:
            return
        time.sleep(0.2)
    raise RuntimeError("PostgreSQL did not accept connections within 60 s")


def new_database(server_url: str, name: str) -> str:
    """A new, empty database ``name`` on the server ``server_url`` reaches: its URL (a stack of its own
    beside the session's records)."""
    url = make_url(server_url)
    admin = create_engine(url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            connection.exec_driver_sql(f'CREATE DATABASE "{name}"')
    finally:
        admin.dispose()
    return url.set(database=name).render_as_string(hide_password=False)
