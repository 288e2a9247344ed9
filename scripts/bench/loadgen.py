"""Load generators: wrk (with `wrk_plan.lua`) when installed, else a Python asyncio loop
doing the same requests. Both give a `LoadResult`."""

from __future__ import annotations

import asyncio
import math
import random
import shutil
import statistics
import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import orjson

LUA = Path(__file__).with_name("wrk_plan.lua")


@dataclass(frozen=True)
class Plan:
    """What to send: GETs over `lines` (paths), in turn or at random, or POSTs of `body`
    (with `__ID__` replaced by a random line, a customer id) to `path`."""

    name: str
    mode: str  # random | cycle | post
    lines: list[str]
    path: str = ""
    body: str = ""


@dataclass(frozen=True)
class LoadResult:
    requests: int
    seconds: float
    errors: int  # connection errors, timeouts and answers >= 400
    p50_ms: float
    p90_ms: float
    p95_ms: float
    p99_ms: float

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0


class LoadGenerator:
    """Runs a `Plan` against a base URL for a while, with `connections` connections."""

    def __init__(self, work_dir: Path, auth: str, prefer: str = "auto") -> None:
        self.work_dir = work_dir
        self.auth = auth
        wrk = shutil.which("wrk")
        if prefer == "wrk" and wrk is None:
            raise RuntimeError("BENCH_LOADGEN=wrk but wrk is not installed (apt-get install -y wrk)")
        self.wrk = wrk if prefer in ("auto", "wrk") else None

    @property
    def description(self) -> str:
        if self.wrk:
            out = subprocess.run([self.wrk, "-v"], capture_output=True, text=True, check=False)
            first = (out.stdout or out.stderr).strip().splitlines()
            return f"wrk ({first[0] if first else self.wrk})"
        why = "BENCH_LOADGEN=python" if shutil.which("wrk") else "wrk is not installed: apt-get install -y wrk"
        return f"python asyncio, keep-alive HTTP/1.1 ({why}; wrk is faster and steadier)"

    async def run(self, plan: Plan, base_url: str, seconds: float, connections: int, threads: int) -> LoadResult:
        if self.wrk:
            return await self._run_wrk(plan, base_url, seconds, connections, threads)
        return await self._run_python(plan, base_url, seconds, connections)

    async def _run_wrk(self, plan: Plan, base_url: str, seconds: float, connections: int, threads: int) -> LoadResult:
        assert self.wrk is not None
        data = self.work_dir / f"wrk-{plan.name}.txt"
        data.write_text("\n".join(plan.lines) + "\n")
        args = [
            self.wrk,
            f"-t{min(threads, connections)}",
            f"-c{connections}",
            f"-d{max(1, round(seconds))}s",
            "--timeout",
            "10s",
            "--latency",
            "-s",
            str(LUA),
            base_url,
            "--",
            plan.mode,
            str(data),
            self.auth,
            plan.path,
            plan.body,
            uuid.uuid4().hex,
        ]
        proc = await asyncio.create_subprocess_exec(*args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        out, err = await proc.communicate()
        text = out.decode(errors="replace")
        line = next((ln for ln in text.splitlines() if ln.startswith("BENCH_JSON ")), None)
        if proc.returncode != 0 or line is None:
            raise RuntimeError(f"wrk failed ({proc.returncode}): {text[-2000:]} {err.decode(errors='replace')[-2000:]}")
        doc = orjson.loads(line.removeprefix("BENCH_JSON "))
        errors = sum(doc[k] for k in ("errors_connect", "errors_read", "errors_write", "errors_status", "errors_timeout"))
        return LoadResult(
            requests=doc["requests"],
            seconds=doc["duration_us"] / 1e6,
            errors=errors,
            p50_ms=doc["p50_us"] / 1000,
            p90_ms=doc["p90_us"] / 1000,
            p95_ms=doc["p95_us"] / 1000,
            p99_ms=doc["p99_us"] / 1000,
        )

    async def _run_python(self, plan: Plan, base_url: str, seconds: float, connections: int) -> LoadResult:
        """`connections` keep-alive HTTP/1.1 connections, each sending its next request as soon as
        the answer to the last one is read (what wrk does). Plain asyncio streams: an HTTP client
        library's pool costs more per request than the services under test."""
        url = urlsplit(base_url)
        host, port = url.hostname or "127.0.0.1", url.port or 80
        nonce = uuid.uuid4().hex
        latencies: list[float] = []
        errors = 0

        def request(rng: random.Random, index: int, n: int) -> bytes:
            head = f"Host: {host}:{port}\r\nAuthorization: {self.auth}\r\n"
            if plan.mode == "post":
                body = plan.body.replace("__ID__", rng.choice(plan.lines)).encode()
                return (
                    f"POST {plan.path} HTTP/1.1\r\n{head}Content-Type: application/json\r\n"
                    f"Idempotency-Key: {nonce}-{index}-{n}\r\nContent-Length: {len(body)}\r\n\r\n"
                ).encode() + body
            path = plan.lines[(index + n) % len(plan.lines)] if plan.mode == "cycle" else rng.choice(plan.lines)
            return f"GET {path} HTTP/1.1\r\n{head}\r\n".encode()

        async def connection(index: int, deadline: float) -> None:
            nonlocal errors
            rng = random.Random(index)
            reader, writer = await asyncio.open_connection(host, port)
            n = 0
            try:
                while time.monotonic() < deadline:
                    n += 1
                    started = time.perf_counter()
                    writer.write(request(rng, index, n))
                    status, _ = await _read_response(reader)
                    latencies.append(time.perf_counter() - started)
                    if status >= 400:
                        errors += 1
            except (OSError, asyncio.IncompleteReadError, ValueError):
                errors += 1
            finally:
                writer.close()

        started = time.monotonic()
        await asyncio.gather(*(connection(i, started + seconds) for i in range(connections)))
        elapsed = time.monotonic() - started
        return LoadResult(
            requests=len(latencies),
            seconds=elapsed,
            errors=errors,
            p50_ms=percentile(latencies, 50) * 1000,
            p90_ms=percentile(latencies, 90) * 1000,
            p95_ms=percentile(latencies, 95) * 1000,
            p99_ms=percentile(latencies, 99) * 1000,
        )


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    """Read one HTTP/1.1 response (Content-Length or chunked body); returns its status and body."""
    status_line = await reader.readline()
    if not status_line:
        raise ConnectionResetError("the server closed the connection")
    status = int(status_line.split(b" ", 2)[1])
    length, chunked = 0, False
    while (line := await reader.readline()) not in (b"\r\n", b""):
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            length = int(value)
        elif name == b"transfer-encoding" and b"chunked" in value.lower():
            chunked = True
    if not chunked:
        return status, await reader.readexactly(length)
    chunks = []
    while size := int((await reader.readline()).split(b";")[0], 16):
        chunks.append((await reader.readexactly(size + 2))[:-2])
    await reader.readline()
    return status, b"".join(chunks)


# uvicorn closes a keep-alive connection after 5 s without a request (`--timeout-keep-alive`).
# A client that sends on such a connection just as the server closes it gets no answer: the
# paced write -> view run counted one PATCH in 6,000 as failed that way (ConnectionResetError,
# the server having logged no error). Connections idle longer than this are not reused.
KEEP_ALIVE_REUSE_S = 4.0


class KeepAliveClient:
    """Requests to one server over keep-alive HTTP/1.1 connections (plain asyncio streams, as
    `_run_python`), one request per connection at a time, a new connection whenever none is
    free. For scenarios that pace their own requests: httpx's pool looks over every connection
    it holds for each request (a socket query apiece), which at 64 connections held the bench
    process at one full core for about 100 requests a second, so the client, not the
    service, set the pace and the latency."""

    def __init__(
        self, base_url: str, headers: dict[str, str], timeout: float = 30, max_idle_s: float = KEEP_ALIVE_REUSE_S
    ) -> None:
        url = urlsplit(base_url)
        self.host, self.port = url.hostname or "127.0.0.1", url.port or 80
        self.head = "".join(f"{k}: {v}\r\n" for k, v in {"Host": f"{self.host}:{self.port}", **headers}.items())
        self.timeout = timeout
        self.max_idle_s = max_idle_s
        # Free connections, the most recently used last, each with the time it became free.
        self._idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter, float]] = []

    async def request(self, method: str, path: str, body: bytes | None = None) -> tuple[int, bytes]:
        """Status and body; raises OSError, asyncio.IncompleteReadError, ValueError or
        TimeoutError when the exchange fails (the connection is dropped then)."""
        fresh_since = time.monotonic() - self.max_idle_s
        while self._idle:
            reader, writer, freed = self._idle.pop()
            if freed > fresh_since and not reader.at_eof():
                break
            # Closed by the server while idle, or so near its keep-alive timeout that the
            # server could close it while this request is on its way (then no answer comes).
            writer.close()
        else:
            reader, writer = await asyncio.open_connection(self.host, self.port)
        payload = b"" if body is None else body
        extra = f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n" if body is not None else ""
        try:
            writer.write(f"{method} {path} HTTP/1.1\r\n{self.head}{extra}\r\n".encode() + payload)
            answer = await asyncio.wait_for(_read_response(reader), self.timeout)
        except BaseException:
            writer.close()
            raise
        self._idle.append((reader, writer, time.monotonic()))
        return answer

    async def close(self) -> None:
        idle, self._idle = self._idle, []
        for _, writer, _ in idle:
            writer.close()


def percentile(values: list[float], pct: float) -> float:
    """Nearest-rank percentile; 0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(1, min(len(ordered), math.ceil(pct / 100 * len(ordered))))
    return ordered[rank - 1]


def median(values: list[float]) -> float:
    return statistics.median(values) if values else 0.0
