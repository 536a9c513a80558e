"""A throwaway PostgreSQL cluster for tests and benchmarks (initdb + pg_ctl as user postgres).

We run as root in CI and on the dev machines; PostgreSQL refuses to run as root, so the cluster
lives in a temp dir owned by `postgres` with its socket there too and trust auth on loopback.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path


@dataclass
class PostgresCluster:
    data_dir: Path
    port: int
    bin_dir: Path

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str | None = None) -> str:
        """A fresh, empty database; returns its SQLAlchemy URL."""
        name = name or f"t_{uuid.uuid4().hex[:12]}"
        self._as_postgres(
            [str(self.bin_dir / "createdb"), "-h", "127.0.0.1", "-p", str(self.port), name]
        )
        return self.url(name)

    def stop(self) -> None:
        self._as_postgres(
            [str(self.bin_dir / "pg_ctl"), "-D", str(self.data_dir), "-m", "immediate", "stop"],
            check=False,
        )
        shutil.rmtree(self.data_dir.parent, ignore_errors=True)

    def _as_postgres(self, argv: list[str], check: bool = True) -> None:
        subprocess.run(
            _as_user(argv), check=check, capture_output=True, timeout=60, cwd=self.data_dir.parent
        )


def find_bin_dir() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    return Path(found[-1]).parent if found else None


def unavailable_reason() -> str | None:
    """None if a cluster can be started here, else why not (for pytest.skip)."""
    if find_bin_dir() is None:
        return "PostgreSQL server binaries missing (/usr/lib/postgresql/*/bin/initdb); run scripts/setup.sh"
    if os.geteuid() == 0 and shutil.which("runuser") is None:
        return "running as root without runuser: cannot start PostgreSQL as user postgres"
    try:
        import pwd

        pwd.getpwnam("postgres")
    except KeyError:
        return "no 'postgres' system user to run the server as"
    return None


def start_cluster() -> PostgresCluster:
    bin_dir = find_bin_dir()
    assert bin_dir is not None, unavailable_reason()
    root = Path(tempfile.mkdtemp(prefix="parawatt-pg-"))
    data_dir = root / "data"
    data_dir.mkdir()
    if os.geteuid() == 0:
        shutil.chown(root, "postgres", "postgres")
        shutil.chown(data_dir, "postgres", "postgres")
    port = _free_port()
    run = lambda argv: subprocess.run(  # noqa: E731
        _as_user(argv), check=True, capture_output=True, text=True, timeout=120, cwd=root
    )
    try:
        run(
            [
                str(bin_dir / "initdb"),
                "-D",
                str(data_dir),
                "-U",
                "postgres",
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--no-sync",
            ]
        )
        opts = (
            f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off "
            "-c synchronous_commit=off -c full_page_writes=off -c max_connections=50"
        )
        run(
            [
                str(bin_dir / "pg_ctl"),
                "-D",
                str(data_dir),
                "-o",
                opts,
                "-l",
                str(root / "server.log"),
                "-w",
                "-t",
                "60",
                "start",
            ]
        )
    except subprocess.CalledProcessError as exc:
        log = (root / "server.log").read_text() if (root / "server.log").exists() else ""
        shutil.rmtree(root, ignore_errors=True)
        raise RuntimeError(f"starting PostgreSQL failed: {exc.stderr}\n{log}") from exc
    return PostgresCluster(data_dir=data_dir, port=port, bin_dir=bin_dir)


def _as_user(argv: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *argv] if os.geteuid() == 0 else argv


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
