"""The SSRF guard: a webhook may only target public addresses, unless a setting allows
private ones. A hostname is resolved and every address it resolves to must be public, both
when the subscription is saved and before each delivery (DNS may change in between)."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from urllib.parse import urlsplit

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class TargetRefused(ValueError):
    """The URL is not one a webhook may be sent to (the message says why)."""


def is_public(address: IPAddress) -> bool:
    """False for private (10/8, 172.16/12, 192.168/16, fc00::/7), loopback, link-local
    (169.254/16 with cloud metadata, fe80::/10), multicast, reserved and unspecified addresses,
    and for IPv4 hidden in IPv6 (::ffff:127.0.0.1)."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_global and not address.is_multicast


def check_url_form(url: str) -> tuple[str, int]:
    """(host, port) of an http(s) URL without credentials; TargetRefused otherwise."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise TargetRefused("the URL must be http or https")
    if parts.username or parts.password:
        raise TargetRefused("the URL must not carry credentials")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise TargetRefused("the URL's port is not valid") from None
    if not parts.hostname:
        raise TargetRefused("the URL has no host")
    return parts.hostname, port


async def resolve(host: str, port: int) -> list[IPAddress]:
    """Every address `host` stands for (itself if it is an address)."""
    try:
        return [ipaddress.ip_address(host)]
    except ValueError:
        pass
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as exc:
        raise TargetRefused(f"the host {host} does not resolve ({exc.strerror or exc})") from None
    # Zone ids (fe80::1%eth0) are dropped: the address decides.
    return [ipaddress.ip_address(str(info[4][0]).split("%", 1)[0]) for info in infos]


async def check_target(url: str, *, allow_private: bool) -> None:
    """Refuse (TargetRefused) a URL that is not http(s), or whose host is or resolves to a
    non-public address while `allow_private` is off."""
    host, port = check_url_form(url)
    if allow_private:
        return
    addresses = await resolve(host, port)
    refused = sorted({str(a) for a in addresses if not is_public(a)})
    if refused or not addresses:
        raise TargetRefused(
            f"the host {host} is or resolves to a private, loopback or link-local address ({', '.join(refused)}); "
            "webhooks only go to public addresses"
        )
