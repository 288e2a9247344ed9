"""The SSRF guard: a webhook may only target public addresses, unless a setting allows
private ones. A hostname is resolved and every address it resolves to must be public, both
when the subscription is saved and before each delivery (DNS may change in between)."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import time
from urllib.parse import urlsplit

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
RESOLVE_TIMEOUT_S = 3.0
RESOLVE_CACHE_S = 30.0  # a host is looked up at most this often (the worker checks before every delivery)
_resolved: dict[tuple[str, int], tuple[float, list[IPAddress] | str]] = {}


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
        raise TargetRefused(f"the host {host} does not resolve ({hit[1]})")
    return hit[1]


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
