"""Free ports on loopback and settings for a local broker of a test's own."""

from __future__ import annotations

import dataclasses
import os
import socket
from pathlib import Path

from streams.settings import Settings


def free_ports(count: int) -> int:
    """A port p with the ``count - 1`` after it free as well: a local broker of n nodes takes
    2n neighbouring ports (clients, then controllers)."""
    for _ in range(100):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port + count - 1 > 65535:
            continue
        sockets = [socket.socket() for _ in range(count)]
        try:
            for i, sock in enumerate(sockets):
                sock.bind(("127.0.0.1", port + i))
        except OSError:
            continue
        finally:
            for sock in sockets:
                sock.close()
        return port
    raise RuntimeError(f"no {count} free neighbouring ports on 127.0.0.1")


def free_port_pair() -> int:
    """A port p with p + 1 and p + 2 free as well: the local broker puts its controller on the
    next port, and a secured one its client-certificate listener on the one after."""
    return free_ports(3)


def local_broker_settings(home: Path, nodes: int = 1, **changes: object) -> Settings:
    """Settings for a local broker of the tests' own: free ports for ``nodes`` nodes, data in
    ``home``, the user's jar cache (a fresh cache would fetch the jars again)."""
    port = free_ports(max(3, 2 * nodes))  # one node: a secured one takes port + 2 as well
    shared = ("LIFECYCLE_CACHE", "XDG_CACHE_HOME", "LIFECYCLE_KAFKA_VERSION")
    base = Settings.from_env({k: v for k, v in os.environ.items() if k in shared})
    bootstrap = ",".join(f"127.0.0.1:{port + i}" for i in range(nodes))
    return dataclasses.replace(base, home=home, broker_port=port, bootstrap=bootstrap, **changes)  # type: ignore[arg-type]
