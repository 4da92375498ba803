"""Reading DESIGN's topics as a downstream consumer sees them: every record, end to end.

Used by the CLI (``consent``, ``demo``) and the tests. It assigns partitions itself (no
consumer group, nothing committed), so reading never disturbs a real consumer.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from processors.fold import CHAINED_TYPES
from processors.state import Event
from schemas.codec import CodecError, Where, decode
from streams.plumbing.admin import check_topic_access
from streams.plumbing.security import client_kwargs
from streams.settings import Settings


@dataclass(frozen=True)
class Entry:
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp: int
    topic: str = ""

    @property
    def tombstone(self) -> bool:
        return self.value is None

    def decoded(self) -> Event | None:
        if self.value is None:
            return None
        return decode(self.value, Where(self.topic, self.partition, self.offset))


def read_topic(settings: Settings, name: str, timeout_s: float = 10.0) -> list[Entry]:
    """Everything in ``lifecycle.<name>`` up to its end offsets at the time of the call."""
    return read_entries(settings.bootstrap, settings.topic(name), timeout_s, client=client_kwargs(settings))


def read_entries(bootstrap: str, topic: str, timeout_s: float = 10.0, client: dict[str, Any] | None = None) -> list[Entry]:
    """Everything in one topic (any topic, by its full name) up to its current end offsets.

    ``client``: security options (``streams.plumbing.security.client_kwargs``); none for PLAINTEXT.
    A topic hidden from this principal raises TopicAuthorizationFailedError instead of reading
    as empty; one it may see but not read raises as soon as there is something to fetch.
    """
    client = client or {}
    import time

    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap.split(","),
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        client_id="lifecycle-reader",
        isolation_level="read_committed",  # what an aborted transaction wrote never happened
        **client,
    )
    try:
        parts = consumer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in sorted(parts)]
        if not tps:
            check_topic_access(bootstrap, topic, client)
            return []
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        end = consumer.end_offsets(tps)
        out: list[Entry] = []
        remaining = {tp for tp in tps if end[tp] > consumer.position(tp)}
        deadline = time.monotonic() + timeout_s
        while remaining and time.monotonic() < deadline:
            for tp, msgs in consumer.poll(timeout_ms=500).items():
                for m in msgs:
                    if m.offset < end[tp]:
                        out.append(Entry(m.partition, m.offset, m.key, m.value, m.timestamp, m.topic))
            remaining = {tp for tp in remaining if consumer.position(tp) < end[tp]}
        return out
    finally:
        consumer.close()


def latest_by_key(entries: list[Entry]) -> dict[bytes, Entry]:
    """What a compacted topic converges to: the last entry per key (tombstones included)."""
    last: dict[bytes, Entry] = {}
    for e in entries:
        if e.key is not None:
            last[e.key] = e
    return last


def decoded_events(entries: list[Entry]) -> Iterator[Event]:
    for e in entries:
        try:
            value = e.decoded()
        except CodecError:
            continue
        if value is not None:
            yield value


def last_decision(
    bootstrap: str, topic: str, partition: int, window: int = 512, client: dict[str, Any] | None = None
) -> bytes | None:
    """The bytes of the last chained entry (a decision or a ``PolicyAdopted``) in one partition of
    ``lifecycle.events`` (None: none yet).

    Read backwards in growing windows from the end, so a worker taking over a partition finds
    the head of its hash chain in what the log really holds, whatever a crashed predecessor
    managed to write before it died.
    """
    import time

    from kafka import KafkaConsumer, TopicPartition

    tp = TopicPartition(topic, partition)
    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap.split(","),
        enable_auto_commit=False,
        client_id="lifecycle-chain",
        isolation_level="read_committed",  # an aborted decision is no link of the chain
        **(client or {}),
    )
    try:
        consumer.assign([tp])
        end = consumer.end_offsets([tp])[tp]
        start_of_log = consumer.beginning_offsets([tp])[tp]
        upper = end
        while upper > start_of_log:
            lower = max(start_of_log, upper - window)
            consumer.seek(tp, lower)
            found: bytes | None = None
            deadline = time.monotonic() + 30
            while consumer.position(tp) < upper and time.monotonic() < deadline:
                for m in consumer.poll(timeout_ms=500).get(tp, []):
                    if m.offset >= upper or m.value is None:
                        continue
                    try:
                        event = decode(m.value, Where(topic, partition, m.offset))
                    except CodecError:
                        continue
                    if event is not None and event["type"] in CHAINED_TYPES:
                        found = m.value
            if found is not None:
                return found
            upper = lower
            window *= 4
        return None
    finally:
        consumer.close()
