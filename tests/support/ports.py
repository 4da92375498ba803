"""Free ports on loopback and settings for a local broker of a test's own."""

from __future__ import annotations

import dataclasses
import os
import socket
from pathlib import Path

from streams.settings import Settings


def free_port_pair() -> int:
    """A port p with p + 1 and p + 2 free as well: the local broker puts its controller on the
    next port, and a secured one its client-certificate listener on the one after."""
    for _ in range(100):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port >= 65534:
            continue
        try:
            with socket.socket() as a, socket.socket() as b, socket.socket() as c:
                a.bind(("127.0.0.1", port))
                b.bind(("127.0.0.1", port + 1))
                c.bind(("127.0.0.1", port + 2))  # a secured broker's client-certificate listener
        except OSError:
            continue
        return port
    raise RuntimeError("no free pair of adjacent ports on 127.0.0.1")


def local_broker_settings(home: Path, **changes: object) -> Settings:
    """Settings for a local broker of the tests' own: a free port pair, data in ``home``, the
    user's jar cache (a fresh cache would fetch the jars again)."""
    port = free_port_pair()
    shared = ("LIFECYCLE_CACHE", "XDG_CACHE_HOME", "LIFECYCLE_KAFKA_VERSION")
    base = Settings.from_env({k: v for k, v in os.environ.items() if k in shared})
    return dataclasses.replace(base, home=home, broker_port=port, bootstrap=f"127.0.0.1:{port}", **changes)  # type: ignore[arg-type]
