"""A real PostgreSQL 15 (Debian's) on loopback for tests: a cluster made by initdb in a temporary
folder, run by pg_ctl as the postgres user, removed again at the end. Like replicas-compose.yml's
settings-db: the superuser `postgres`, a database `sam2plus`, and the backend's role `sam2plus` made
by the shipped scripts/settings-db-role.sh (its table and nothing else): `url` logs in as that role."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path

from tests.support.servers import REPO, free_port

BIN = Path("/usr/lib/postgresql/15/bin")
ROLE_SCRIPT = REPO / "scripts" / "settings-db-role.sh"
SUPERUSER = "postgres"
ADMIN_PASSWORD = "admin-s3cret-for-tests"
USER = "sam2plus"  # the backend's role, and its database
PASSWORD = "s3cret-for-tests"


@dataclasses.dataclass
class Postgres:
    """A PostgreSQL cluster in `root`: start, stop (fast or immediate) and restart it."""

    root: Path
    port: int

    @property
    def url(self) -> str:
        """The backend's SETTINGS_URL: the role that owns its table and nothing else."""
        return f"postgresql://{USER}:{PASSWORD}@127.0.0.1:{self.port}/{USER}"

    @property
    def admin_url(self) -> str:
        """The superuser's, for what a test does to the database behind the backend's back."""
        return f"postgresql://{SUPERUSER}:{ADMIN_PASSWORD}@127.0.0.1:{self.port}/{USER}"

    def make_role(self) -> None:
        """The database `sam2plus` and the backend's role, by the shipped scripts/settings-db-role.sh
        (as the postgres image runs it when it first makes its database)."""
        (self.root / "role_password").write_text(PASSWORD + "\n")
        psql = [str(BIN / "psql"), "-v", "ON_ERROR_STOP=1", "-q", "-U", SUPERUSER, "-d", "postgres"]
        env = {"PATH": f"{BIN}:{os.environ['PATH']}", "PGHOST": str(self.root), "PGPORT": str(self.port)}
        for command in ([*psql, "-c", f"CREATE DATABASE {USER}"], ["bash", str(ROLE_SCRIPT)]):
            done = subprocess.run(
                command,
                env={
                    **env,
                    "POSTGRES_USER": SUPERUSER,
                    "POSTGRES_DB": USER,
                    "SETTINGS_DB_PASSWORD_FILE": str(self.root / "role_password"),
                },
                capture_output=True,
                text=True,
                timeout=60,
            )
            if done.returncode != 0:
                raise RuntimeError(f"{command[-1]}: {done.stdout}{done.stderr}")

    def _pg_ctl(self, *args: str) -> None:
        log = self.root / "postgres.log"
        options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off"
        command = [str(BIN / "pg_ctl"), "-D", str(self.root / "data"), "-l", str(log), "-o", options, *args]
        done = _as_postgres(command, timeout=60)
        if done.returncode != 0:
            raise RuntimeError(f"pg_ctl {' '.join(args)}: {done.stdout}{done.stderr}\n{log.read_text()[-2000:]}")

    def start(self) -> None:
        self._pg_ctl("-w", "start")

    def stop(self, mode: str = "fast") -> None:
        self._pg_ctl("-w", "-m", mode, "stop")


def _as_postgres(command: list[str], timeout: float) -> subprocess.CompletedProcess:
    """Run `command` as the postgres user (PostgreSQL refuses to run as root)."""
    if os.getuid() == 0:
        command = ["runuser", "-u", "postgres", "--", *command]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout)


@contextlib.contextmanager
def postgres_server():
    """A fresh cluster with the superuser `postgres` and the backend's role `sam2plus` (password
    authentication on 127.0.0.1), started on a free port; yields a `Postgres`. Stopped and removed
    however the block ends."""
    if not (BIN / "initdb").is_file():
        raise RuntimeError("no PostgreSQL 15: run `bash scripts/install-system.sh` (Debian's postgresql)")
    root = Path(tempfile.mkdtemp(prefix="sam2plus-postgres-"))
    try:
        owner = pwd.getpwnam("postgres") if os.getuid() == 0 else None
        (root / "password").write_text(ADMIN_PASSWORD)
        if owner:
            for path in (root, root / "password"):
                os.chown(path, owner.pw_uid, owner.pw_gid)
        done = _as_postgres(
            [
                str(BIN / "initdb"),
                "-D",
                str(root / "data"),
                "-U",
                SUPERUSER,
                f"--pwfile={root / 'password'}",
                "--auth-host=scram-sha-256",
                "--auth-local=trust",
            ],
            timeout=120,
        )
        if done.returncode != 0:
            raise RuntimeError(f"initdb failed: {done.stdout}{done.stderr}")
        server = Postgres(root, free_port())
        server.start()
        try:
            server.make_role()
            yield server
        finally:
            with contextlib.suppress(RuntimeError):
                server.stop("immediate")
    finally:
        shutil.rmtree(root, ignore_errors=True)
