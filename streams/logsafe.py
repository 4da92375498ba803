"""Keep message keys and values out of the worker's log, whatever its level.

At debug level kafka-python prints what it sends and fetches (``Sending (key=... value=...)``,
and every request and response as raw bytes); the worker uses it for its admin calls and the
hash chain's tail. On ``lifecycle.ingest`` and ``lifecycle.records`` those are personal data in
plaintext, so a worker run with ``--loglevel debug`` to chase a bug would copy them into a log
file that no erasure reaches. These loggers are held at WARNING, where none of them prints a
payload; the worker's own debug output stays available. librdkafka (the worker's consumer and
producer) prints payloads only with its ``debug`` property, which the project never sets.
"""

from __future__ import annotations

import logging

PAYLOAD_LOGGERS = ("kafka",)
"""Logger hierarchies that print message keys and values below INFO."""


def hold_payload_loggers() -> None:
    """Hold the payload loggers at WARNING (or above, if the root logger is above): at INFO
    kafka-python narrates every connection, which buries the worker's own lines."""
    for name in PAYLOAD_LOGGERS:
        logging.getLogger(name).setLevel(max(logging.WARNING, logging.getLogger().level))


__all__ = ["PAYLOAD_LOGGERS", "hold_payload_loggers"]
