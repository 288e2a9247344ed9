"""The processes under test: the dev broker, both services as shipped (one uvicorn worker
each, default settings but the database and broker addresses) and the bare baseline app."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from scripts.bench.config import ROOT

from cxkit.dev_broker import DevBroker, dev_broker_env, free_port

BIN = Path(sys.executable).parent


@dataclass
class UvicornProcess:
    """`uvicorn --factory <app>` on a free port, as the images start it (access log included)."""

    name: str
    factory: str
    env: dict[str, str]
    log_path: Path
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self) -> None:
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [str(BIN / "uvicorn"), "--factory", self.factory, "--host", "127.0.0.1", "--port", str(self.port)],
                env={**os.environ, **self.env},
                cwd=ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def wait(self, path: str, timeout: float = 90) -> None:
        """Until `path` answers 200 (the services' /ready: database, broker and consumers)."""
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            if self.proc is None or self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited; see {self.log_path}")
            try:
                r = httpx.get(self.url + path, timeout=2)
                if r.status_code == 200:
                    return
                last = r.text[:300]
            except httpx.HTTPError as exc:
                last = repr(exc)
            time.sleep(0.2)
        raise RuntimeError(f"{self.name}: {path} not 200 within {timeout}s ({last}); see {self.log_path}")

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def rss_mb(pid: int) -> float:
    """Resident memory of a process, from /proc (Linux)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_s(pid: int) -> float:
    """CPU time (user + system, seconds) a process has used so far, from /proc (Linux)."""
    # The fields after the command name's closing parenthesis start at the 3rd (state);
    # utime and stime are the 14th and 15th.
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def machine_busy_s() -> float:
    """CPU time (seconds, all cores) the machine has spent busy since boot: /proc/stat's user,
    nice, system, irq, softirq and steal."""
    values = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(v) for v in values[:8])
    return (user + nice + system + irq + softirq + steal) / CLOCK_TICKS


def service_env(prefix: str, database_url: str, bootstrap: str, work_dir: Path) -> dict[str, str]:
    """What a service needs to run here; every other setting keeps its default."""
    env = {
        f"{prefix}_DATABASE_URL": database_url,
        f"{prefix}_KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        **dev_broker_env(prefix),
    }
    if prefix == "CRM":
        env["CRM_DOCUMENTS_DIR"] = str(work_dir / "documents")
    return env


@dataclass
class Stack:
    """The broker, both services and the bare app, started and stopped together."""

    work_dir: Path
    crm_url: str
    cem_url: str
    bare_dsn: str
    broker: DevBroker = field(init=False)
    crm: UvicornProcess = field(init=False)
    cem: UvicornProcess = field(init=False)
    bare: UvicornProcess = field(init=False)

    def __post_init__(self) -> None:
        logs = self.work_dir / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        for old in logs.glob("*.log"):
            old.unlink()
        self.broker = DevBroker(log_path=logs / "broker.log")
        bootstrap = self.broker.bootstrap
        self.crm = UvicornProcess(
            "crm-service", "crm.main:create_app", service_env("CRM", self.crm_url, bootstrap, self.work_dir), logs / "crm.log"
        )
        self.cem = UvicornProcess(
            "cem-service", "cem.main:create_app", service_env("CEM", self.cem_url, bootstrap, self.work_dir), logs / "cem.log"
        )
        self.bare = UvicornProcess(
            "bare baseline", "scripts.bench.bare_app:create_app", {"BENCH_BARE_DSN": self.bare_dsn}, logs / "bare.log"
        )

    @property
    def services(self) -> list[UvicornProcess]:
        return [self.crm, self.cem]

    def start(self) -> None:
        self.broker.start()
        for proc in (self.crm, self.cem, self.bare):
            proc.start()
        self.crm.wait("/ready")
        self.cem.wait("/ready")
        self.bare.wait("/health")

    def stop(self) -> None:
        for proc in (self.bare, self.cem, self.crm):
            proc.stop()
        self.broker.stop()
