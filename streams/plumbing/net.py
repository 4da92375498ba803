"""Two questions about this machine's network a command asks before it starts something."""

from __future__ import annotations


def free_port() -> int:
    """A TCP port on 127.0.0.1 nobody listens on now."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def reachable(bootstrap: str, timeout: float = 1.0) -> bool:
    """Does anything accept connections at the first bootstrap address?"""
    import socket

    host, _, port = bootstrap.split(",")[0].strip().rpartition(":")
    try:
        with socket.create_connection((host or "127.0.0.1", int(port)), timeout=timeout):
            return True
    except (OSError, ValueError):
        return False
