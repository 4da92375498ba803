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
import re
import time

PAYLOAD_LOGGERS = ("kafka",)
"""Logger hierarchies that print message keys and values below INFO."""


def hold_payload_loggers() -> None:
    """Hold the payload loggers at WARNING (or above, if the root logger is above): at INFO
    kafka-python narrates every connection, which buries the worker's own lines."""
    for name in PAYLOAD_LOGGERS:
        logging.getLogger(name).setLevel(max(logging.WARNING, logging.getLogger().level))


class OncePerWindow(logging.Filter):
    """Lets a line of each kind through once per ``window`` seconds, then says how many it held.

    Why: while a broker is away, librdkafka reports every failed reconnection of every client
    (a producer and two consumers, a connection per broker each), some twenty lines a second;
    an operator needs to read that the broker is away once in a while, not have the log that
    says so scroll everything else away. Lines of a kind differ only in their numbers.
    """

    def __init__(self, window: float = 30.0) -> None:
        super().__init__()
        self.window = window
        self._seen: dict[str, tuple[float, int]] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        kind = _NUMBERS.sub("#", record.getMessage())
        now = time.monotonic()
        last, held = self._seen.get(kind, (-1e18, 0))
        if now - last < self.window:
            self._seen[kind] = (last, held + 1)
            return False
        if len(self._seen) > 1000:
            self._seen.clear()
        self._seen[kind] = (now, 0)
        if held:
            record.msg = f"{record.getMessage()} ({held} more like it in the last {self.window:.0f} s)"
            record.args = ()
        return True


_NUMBERS = re.compile(r"\d+")
KAFKA_CLIENT_LOGGER = "lifecycle.kafka"
"""Where librdkafka's own lines go (the worker's, the replay's and the admin clients')."""


def librdkafka_logger() -> logging.Logger:
    """The logger librdkafka clients are given (config ``logger``), its repeats held back."""
    logger = logging.getLogger(KAFKA_CLIENT_LOGGER)
    if not any(isinstance(f, OncePerWindow) for f in logger.filters):
        logger.addFilter(OncePerWindow())
    return logger


__all__ = ["KAFKA_CLIENT_LOGGER", "PAYLOAD_LOGGERS", "OncePerWindow", "hold_payload_loggers", "librdkafka_logger"]
