"""The SSRF guard: a webhook may only target public addresses, unless a setting allows
private ones. A hostname is resolved and every address it resolves to must be public, both
when the subscription is saved and before each delivery (DNS may change in between). The
delivery then connects to the addresses that were checked (`guarded_transport`), never to a
second lookup's answer, so a name that turns private after the check (DNS rebinding) is not
followed. Through an egress proxy the proxy connects; where only it can resolve outside names
(WEBHOOK_PROXY_RESOLVES), names are judged by their form here and the proxy polices the
addresses."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import time
import typing
from urllib.parse import urlsplit

import httpcore
import httpx

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
RESOLVE_TIMEOUT_S = 3.0
RESOLVE_CACHE_S = 30.0  # a host is looked up at most this often (the worker checks before every delivery)
_resolved: dict[tuple[str, int], tuple[float, list[IPAddress] | str]] = {}


class TargetRefused(ValueError):
    """The URL is not one a webhook may be sent to (the message says why)."""


class TargetUnresolved(TargetRefused):
    """The URL's host does not resolve, or not in time. A subscription is refused for it; a
    delivery is retried (DNS may answer again), as after a connection error."""


# IPv6 prefixes that carry an IPv4 address in their last 32 bits, and what a gateway on the
# way reaches through them: NAT64's well-known prefix (RFC 6052) and the IPv4-compatible form
# (::a.b.c.d, deprecated by RFC 4291 yet still routed by some stacks).
_IPV4_IN_LAST_32_BITS = (ipaddress.IPv6Network("64:ff9b::/96"), ipaddress.IPv6Network("::/96"))
_NAT64_LOCAL_USE = ipaddress.IPv6Network("64:ff9b:1::/48")  # RFC 8215: translated by a local gateway, to anywhere


def embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 one stands for: IPv4-mapped (::ffff:a.b.c.d), 6to4
    (2002:AABB:CCDD::), NAT64 (64:ff9b::a.b.c.d) or IPv4-compatible (::a.b.c.d)."""
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if any(address in prefix for prefix in _IPV4_IN_LAST_32_BITS):
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def is_public(address: IPAddress) -> bool:
    """False for private (10/8, 172.16/12, 192.168/16, fc00::/7), loopback, link-local
    (169.254/16 with cloud metadata, fe80::/10), multicast, reserved and unspecified addresses,
    for IPv4 carried in IPv6 (::ffff:127.0.0.1, 2002:a9fe:a9fe::, 64:ff9b::10.0.0.1,
    ::127.0.0.1) when that IPv4 address is not public, and for NAT64's local-use prefix."""
    if isinstance(address, ipaddress.IPv6Address):
        if address in _NAT64_LOCAL_USE:
            return False
        carried = embedded_ipv4(address)
        if carried is not None:
            address = carried
    return address.is_global and not address.is_multicast


def literal_address(host: str) -> IPAddress | None:
    """The address a URL's host names by its form, None for a name: an IP literal, with a
    trailing dot (`10.0.0.5.`), or an IPv4 form that resolvers accept (`127.1`, `0177.0.0.1`,
    `0x7f.0.0.1`, `2130706433`), whose last label is a number."""
    host = host[:-1] if host.endswith(".") else host
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        pass
    last = host.rsplit(".", 1)[-1].lower()
    if not (last.isascii() and (last.isdigit() or (last.startswith("0x") and all(c in "0123456789abcdef" for c in last[2:])))):
        return None
    try:
        return ipaddress.IPv4Address(socket.inet_aton(host))
    except OSError:
        return None


def check_url_form(url: str) -> tuple[str, int]:
    """(host, port) of an http(s) URL without credentials; TargetRefused otherwise."""
    try:
        parts = urlsplit(url)
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise TargetRefused("the URL is not valid (host or port)") from None
    if parts.scheme not in ("http", "https"):
        raise TargetRefused("the URL must be http or https")
    if parts.username or parts.password:
        raise TargetRefused("the URL must not carry credentials")
    if not parts.hostname:
        raise TargetRefused("the URL has no host")
    try:
        httpx.URL(url)  # what the delivery will send to: a host httpx cannot encode is refused now
    except httpx.InvalidURL as exc:
        raise TargetRefused(f"the URL is not valid ({exc})") from None
    return parts.hostname, port


async def resolve(host: str, port: int) -> list[IPAddress]:
    """Every address `host` stands for (itself if it is an address)."""
    try:
        return [ipaddress.ip_address(host)]
    except ValueError:
        pass
    now = time.monotonic()
    hit = _resolved.get((host, port))
    if hit is None or hit[0] < now:
        try:
            infos = await asyncio.wait_for(
                asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM), RESOLVE_TIMEOUT_S
            )
            # Zone ids (fe80::1%eth0) are dropped: the address decides.
            answer: list[IPAddress] | str = [ipaddress.ip_address(str(i[4][0]).split("%", 1)[0]) for i in infos]
        except TimeoutError:
            answer = "no answer in time"
        except (OSError, UnicodeError, ValueError) as exc:  # UnicodeError: a label IDNA refuses
            answer = str(getattr(exc, "strerror", None) or exc)[:200]
        if len(_resolved) > 10_000:
            _resolved.clear()
        hit = _resolved[(host, port)] = (now + RESOLVE_CACHE_S, answer)
    if isinstance(hit[1], str):
        raise TargetUnresolved(f"the host {host} does not resolve ({hit[1]})")
    return hit[1]


# Names that stand for the local network by their form alone (RFC 6761 localhost, RFC 6762
# .local, RFC 8375 home.arpa, ICANN's private-use .internal), judged without resolving them.
LOCAL_NAME_SUFFIXES = (".localhost", ".local", ".internal", ".home.arpa", ".localdomain")


def is_local_name(host: str) -> bool:
    """Whether a host name is local by its form: localhost, a single label (`metadata`,
    `postgres`), or under a local-only suffix."""
    name = host.rstrip(".").lower()
    return name == "localhost" or "." not in name or name.endswith(LOCAL_NAME_SUFFIXES)


async def check_target(url: str, *, allow_private: bool, resolve_names: bool = True) -> None:
    """Refuse (TargetRefused) a URL that is not http(s), or whose host is or resolves to a
    non-public address while `allow_private` is off. With `resolve_names` off (an egress proxy
    resolves them: WEBHOOK_PROXY_RESOLVES) a host name is not looked up here: a literal address
    is judged as always, and a name that is local by its form is refused."""
    host, port = check_url_form(url)
    if allow_private:
        return
    if not resolve_names:
        literal = literal_address(host)
        if literal is not None:
            refuse_private(host, [literal])
            return
        if is_local_name(host):
            raise TargetRefused(
                f"the host {host} is a local name (localhost, a single label, or .local, .internal, .home.arpa); "
                "webhooks only go to public addresses"
            )
        return
    refuse_private(host, await resolve(host, port))


def refuse_private(host: str, addresses: list[IPAddress]) -> None:
    """TargetRefused unless `host` stands for public addresses only."""
    refused = sorted({str(a) for a in addresses if not is_public(a)})
    if refused or not addresses:
        raise TargetRefused(
            f"the host {host} is or resolves to a private, loopback or link-local address ({', '.join(refused)}); "
            "webhooks only go to public addresses"
        )


class PinnedBackend(httpcore.AsyncNetworkBackend):
    """httpcore's network backend with the guard at the connection: the host is resolved
    through `resolve` (the same cached answer `check_target` judged), every address must be
    public, and the connection goes to those addresses themselves. TLS still verifies the
    certificate and sends SNI for the host name (httpcore takes them from the URL)."""

    def __init__(self) -> None:
        self._backend = httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109 (httpcore's interface)
        local_address: str | None = None,
        socket_options: typing.Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        addresses = await resolve(host, port)
        refuse_private(host, addresses)
        last: Exception | None = None
        for address in addresses:
            try:
                return await self._backend.connect_tcp(
                    str(address), port, timeout=timeout, local_address=local_address, socket_options=socket_options
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                last = exc
        assert last is not None
        raise last

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,  # noqa: ASYNC109 (httpcore's interface)
        socket_options: typing.Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise TargetRefused("webhooks are not sent over Unix sockets")

    async def sleep(self, seconds: float) -> None:
        await self._backend.sleep(seconds)


def guarded_transport(*, allow_private: bool, proxy: str | None = None) -> httpx.AsyncHTTPTransport:
    """The transport webhook deliveries go out on: with private targets refused, its
    connections go only to checked public addresses (`PinnedBackend`). Through a `proxy`, every
    connection goes to the proxy (which may well have a private address), and the proxy connects
    to the target: the target is checked beforehand (`check_target`), not pinned."""
    if proxy:
        return httpx.AsyncHTTPTransport(proxy=proxy)
    transport = httpx.AsyncHTTPTransport()
    if not allow_private:
        # httpx has no parameter for httpcore's network backend: the pool it builds is replaced
        # by the same pool with the pinned backend (the same defaults as AsyncHTTPTransport()).
        limits = httpx.Limits(max_connections=100, max_keepalive_connections=20, keepalive_expiry=5.0)
        transport._pool = httpcore.AsyncConnectionPool(
            ssl_context=httpx.create_ssl_context(),
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            network_backend=PinnedBackend(),
        )
    return transport
