"""The bench's paced client (`loadgen.KeepAliveClient`) against a server that closes idle
connections, as uvicorn does after its keep-alive timeout."""

from __future__ import annotations

import asyncio

from scripts.bench.loadgen import KeepAliveClient

ANSWER = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


class IdleClosingServer:
    """Answers every request with 200, except one arriving on a connection that has been idle
    for `keep_alive_s` or longer: that connection is closed unanswered, as when the server's
    keep-alive timer fires while the request is on its way."""

    def __init__(self, keep_alive_s: float) -> None:
        self.keep_alive_s = keep_alive_s
        self.connections = 0
        self.unanswered = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        loop = asyncio.get_running_loop()
        idle_since = loop.time()
        try:
            while request := await reader.readuntil(b"\r\n\r\n"):
                lengths = [int(h.split(b":")[1]) for h in request.split(b"\r\n") if h.lower().startswith(b"content-length:")]
                await reader.readexactly(sum(lengths))
                if loop.time() - idle_since >= self.keep_alive_s:
                    self.unanswered += 1
                    return
                writer.write(ANSWER)
                await writer.drain()
                idle_since = loop.time()
        except asyncio.IncompleteReadError:
            return
        finally:
            writer.close()


async def _serve(server: IdleClosingServer) -> tuple[asyncio.Server, str]:
    listener = await asyncio.start_server(server.handle, "127.0.0.1", 0)
    port = listener.sockets[0].getsockname()[1]
    return listener, f"http://127.0.0.1:{port}"


async def test_a_connection_idle_near_the_servers_keep_alive_timeout_is_not_reused() -> None:
    server = IdleClosingServer(keep_alive_s=0.4)
    listener, url = await _serve(server)
    client = KeepAliveClient(url, {}, timeout=5, max_idle_s=0.25)
    try:
        assert await client.request("PATCH", "/x", b"{}") == (200, b"ok")
        await asyncio.sleep(0.05)
        assert await client.request("PATCH", "/x", b"{}") == (200, b"ok")
        assert server.connections == 1  # reused while fresh

        await asyncio.sleep(0.5)  # past the client's limit and the server's timeout
        assert await client.request("PATCH", "/x", b"{}") == (200, b"ok")
        assert server.connections == 2
        assert server.unanswered == 0
    finally:
        await client.close()
        listener.close()
        await listener.wait_closed()


async def test_without_the_limit_the_same_wait_loses_the_request() -> None:
    """The failure the limit prevents: the connection is reused and no answer comes."""
    server = IdleClosingServer(keep_alive_s=0.4)
    listener, url = await _serve(server)
    client = KeepAliveClient(url, {}, timeout=5, max_idle_s=60)
    try:
        assert await client.request("GET", "/x") == (200, b"ok")
        await asyncio.sleep(0.5)
        try:
            await client.request("GET", "/x")
        except ConnectionResetError:
            pass
        else:
            raise AssertionError("the stale connection was answered")
        assert server.unanswered == 1
    finally:
        await client.close()
        listener.close()
        await listener.wait_closed()
