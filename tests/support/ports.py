"""Free ports on loopback and settings for a local broker of a test's own."""

from __future__ import annotations

import dataclasses
import os
import random
import socket
from pathlib import Path

from streams.settings import Settings

LOWEST = 20_000
"""Test ports start here, above the well-known and registered ports services commonly take."""
_handed: set[int] = set()
"""Ports this process already handed out: a broker binds its ports only seconds later."""


def _slice() -> tuple[int, int]:
    """The ports this test process may take: below the kernel's ephemeral range, which is where
    every outgoing connection's own port comes from (a broker restarted on a port some client
    took meanwhile would not start), and a slice per test process under ``-n``, so that two
    processes never pick the same free port before either binds it."""
    try:
        ephemeral = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        ephemeral = 32_768  # Linux's default; elsewhere the range only needs to be free
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
    index = int(worker[2:]) if worker[2:].isdigit() else 0
    processes = max(int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1") or 1), index + 1)
    width = max((ephemeral - LOWEST) // processes, 64)
    return LOWEST + index * width, LOWEST + (index + 1) * width


def _bindable(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_ports(count: int) -> int:
    """A port p with the ``count - 1`` after it free as well: a local broker of n nodes takes
    2n neighbouring ports (clients, then controllers). Taken from this process's slice
    (``_slice``), from a random place in it, never twice."""
    low, high = _slice()
    start = random.randrange(low, high - count)
    for offset in range(high - low):
        port = low + (start - low + offset) % (high - low - count)
        span = range(port, port + count)
        if any(p in _handed for p in span) or not all(_bindable(p) for p in span):
            continue
        _handed.update(span)
        return port
    raise RuntimeError(f"no {count} free neighbouring ports on 127.0.0.1 between {low} and {high}")


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
