"""A real local webhook receiver for tests: an HTTP server (uvicorn) on 127.0.0.1 that
verifies every request's Standard Webhooks signature with `standardwebhooks.Webhook.verify`,
records what it received, and answers as a test scripts it (a status, a slow answer), or is
down (stopped, so connections are refused) and up again on the same port."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections import deque
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import uvicorn
from standardwebhooks import Webhook, WebhookVerificationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

Answer = int | tuple[str, float] | tuple[str, int, str]


@dataclass
class Received:
    """One request the receiver accepted (2xx) or answered otherwise."""

    webhook_id: str
    event: dict[str, Any]
    status: int
    headers: dict[str, str]
    body: bytes


@dataclass
class WebhookReceiver:
    """`async with WebhookReceiver(secret) as receiver:` serves `receiver.url`. `script` holds
    the answers of the next requests (an int status, ("slow", seconds) to answer 200 late, or
    ("retry-after", status, value) to answer that status with that `Retry-After` header);
    with it empty every verified request gets 200. `script_for` holds such answers per
    CloudEvent subject (a customer), used before `script`. `received` lists every request in arrival
    order; `accepted` only the ones answered 2xx, once per `webhook-id` (a receiver that
    deduplicates, as Standard Webhooks asks)."""

    secret: str = ""
    script: deque[Answer] = field(default_factory=deque)
    script_for: dict[str, deque[Answer]] = field(default_factory=dict)
    received: list[Received] = field(default_factory=list)
    bad_signatures: int = 0
    port: int = 0
    _server: uvicorn.Server | None = None
    _task: asyncio.Task[None] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    @property
    def accepted(self) -> list[Received]:
        seen: set[str] = set()
        kept = []
        for r in self.received:
            if 200 <= r.status < 300 and r.webhook_id not in seen:
                seen.add(r.webhook_id)
                kept.append(r)
        return kept

    async def _hook(self, request: Request) -> PlainTextResponse:
        body = await request.body()
        headers = dict(request.headers)
        try:
            event = Webhook(self.secret).verify(body, headers)
        except WebhookVerificationError:
            self.bad_signatures += 1
            return PlainTextResponse("bad signature", status_code=401)
        script = self.script_for.get(str(event.get("subject")))
        if not script:
            script = self.script
        answer = script.popleft() if script else 200
        extra: dict[str, str] = {}
        if isinstance(answer, tuple) and answer[0] == "slow":
            await asyncio.sleep(answer[1])
            answer = 200
        elif isinstance(answer, tuple):
            _, answer, extra["retry-after"] = answer  # type: ignore[misc]
        assert isinstance(answer, int)
        self.received.append(Received(headers["webhook-id"], event, answer, headers, body))
        return PlainTextResponse("ok" if answer < 300 else "no", status_code=answer, headers=extra)

    async def start(self) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", self.port))
        self.port = sock.getsockname()[1]
        app = Starlette(routes=[Route("/hook", self._hook, methods=["POST"])])
        config = uvicorn.Config(app, lifespan="off", log_level="warning", access_log=False)
        self._server = uvicorn.Server(config)
        sock.listen(128)  # connections wait in the backlog until the server accepts them
        self._task = asyncio.create_task(self._server.serve(sockets=[sock]))

    async def stop(self) -> None:
        """Down: the port refuses connections until `start` again."""
        if self._server is not None and self._task is not None:
            self._server.should_exit = True
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._server = self._task = None

    async def __aenter__(self) -> WebhookReceiver:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def wait_for(self, count: int, timeout: float = 10.0) -> list[Received]:  # noqa: ASYNC109
        """The accepted requests once there are `count` (AssertionError after `timeout`)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while len(self.accepted) < count:
            if loop.time() > deadline:
                raise AssertionError(f"{len(self.accepted)} of {count} webhooks accepted; received {len(self.received)}")
            await asyncio.sleep(0.02)
        return self.accepted


@dataclass
class ForwardProxy:
    """`async with ForwardProxy() as proxy:` a plain HTTP forward proxy on 127.0.0.1 at
    `proxy.url`, as an egress proxy is met: each request comes in absolute form
    (`POST http://host:port/path HTTP/1.1`), goes on to its host as one request on its own
    connection, and its answer goes back. `requests` lists the request lines it forwarded.
    `hosts` is the proxy's own name service (name -> address), for names only it can resolve."""

    requests: list[str] = field(default_factory=list)
    hosts: dict[str, str] = field(default_factory=dict)
    port: int = 0
    _server: asyncio.Server | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """One request per connection: the answer is sent as the upstream framed it, then closed."""
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            line, *lines = head.decode("latin-1").split("\r\n")
            method, target, version = line.split(" ")
            self.requests.append(line)
            parts = urlsplit(target)
            headers = [h for h in lines if h and not h.lower().startswith(("proxy-", "connection:"))]
            length = next((int(h.split(":", 1)[1]) for h in headers if h.lower().startswith("content-length:")), 0)
            body = await reader.readexactly(length)
            host = self.hosts.get(parts.hostname or "", parts.hostname)
            upstream_reader, upstream_writer = await asyncio.open_connection(host, parts.port or 80)
            path = parts.path + (f"?{parts.query}" if parts.query else "")
            upstream_writer.write(
                f"{method} {path or '/'} {version}\r\n".encode("latin-1")
                + "".join(f"{h}\r\n" for h in [*headers, "Connection: close"]).encode("latin-1")
                + b"\r\n"
                + body
            )
            await upstream_writer.drain()
            answer = await upstream_reader.read()  # to the end: the upstream closes after it
            upstream_writer.close()
            writer.write(answer)
            await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def __aenter__(self) -> ForwardProxy:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
