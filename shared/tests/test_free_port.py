"""free_port: a port for a server the tests (or the bench) start next, which no outgoing
connection can be given before the server listens."""

from __future__ import annotations

import socket

import pytest

from cxkit import dev_broker
from cxkit.dev_broker import _ephemeral_ports, free_port


def test_ports_are_outside_the_ephemeral_range_free_and_never_handed_out_twice() -> None:
    ephemeral = _ephemeral_ports()
    ports = [free_port() for _ in range(50)]
    assert len(set(ports)) == len(ports)
    assert not [p for p in ports if p in ephemeral], (ports, ephemeral)
    for port in ports[:5]:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", port))


def test_a_port_something_listens_on_is_passed_over(monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        taken = busy.getsockname()[1]
        monkeypatch.setattr(dev_broker, "_LISTEN_PORTS", range(taken, taken + 1))
        monkeypatch.setattr(dev_broker, "_ephemeral_ports", lambda: range(0))
        monkeypatch.setattr(dev_broker, "_handed_out", set())
        port = free_port()
        assert port != taken
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", port))
