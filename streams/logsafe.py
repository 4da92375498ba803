"""Keep message keys and values out of the worker's log, whatever its level.

At debug level the Kafka clients print what they send and fetch: faust (``send: ... k=... v=...``),
aiokafka (``Sending (key=... value=...)`` and every fetch response with its raw records),
kafka-python (``Sending (key=... value=...)``, and every request and response as raw bytes).
On ``lifecycle.ingest`` and ``lifecycle.records`` those are personal data in plaintext, so a
worker run with ``--loglevel debug`` to chase a bug would copy them into a log file that no
erasure reaches. These loggers are held at INFO, where none of them prints a payload; the
worker's own debug output and the rest of faust's stay available.
"""

from __future__ import annotations

from typing import Any

PAYLOAD_LOGGERS = ("kafka", "aiokafka", "faust.topics", "faust.transport")
"""Logger hierarchies that print message keys and values below INFO."""


def logging_config() -> dict[str, Any]:
    """A logging config for faust's worker (``logging_config=``), merged into its default one:
    the payload loggers held at INFO, everything else as ``--loglevel`` says."""
    return {"merge": True, "loggers": {name: {"level": "INFO"} for name in PAYLOAD_LOGGERS}}


__all__ = ["PAYLOAD_LOGGERS", "logging_config"]
