"""Whole-topic scans for the auditor's replay, on librdkafka (confluent-kafka).

Why not kafka-python here, as everywhere else: the replay reads the entire log of record and
every key, and kafka-python decodes record batches in Python. On a 400,000-message topic the
same machine consumed 53,000-80,000 messages/s with kafka-python and 130,000-163,000 with
confluent-kafka (README, Performance). The replay commits nothing and joins no group, so
nothing else about it depends on the client.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from streams.plumbing.admin import check_topic_access
from streams.plumbing.logsafe import librdkafka_logger
from streams.plumbing.security import client_kwargs, librdkafka_security
from streams.settings import Settings

Entry = tuple[int, int, bytes | None]  # offset, Kafka timestamp (ms), value

CLIENT_ID = "lifecycle-replay"
SCAN_GROUP = f"{CLIENT_ID}-unused"
"""librdkafka wants a group even for assigned partitions; none is joined or committed to, but
finding its coordinator needs DESCRIBE on it (``streams.broker.acls`` grants that)."""


class ReadError(RuntimeError):
    """The broker refused a read, or failed one: the message says which topic and why."""


def consumer_config(settings: Settings) -> dict[str, Any]:
    """librdkafka settings equivalent to the project's kafka-python clients."""
    conf: dict[str, Any] = {
        "bootstrap.servers": settings.bootstrap,
        "client.id": CLIENT_ID,
        "group.id": SCAN_GROUP,
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "enable.partition.eof": True,
        "isolation.level": "read_committed",  # the log of record is what was committed
        "fetch.max.bytes": 64 * 1024 * 1024,
        "max.partition.fetch.bytes": 16 * 1024 * 1024,
        "receive.message.max.bytes": 64 * 1024 * 1024 + 65_536,
        "fetch.wait.max.ms": 10,
        "log_level": 3,  # errors only: the client's own chatter is not the auditor's business
        "logger": librdkafka_logger(),
    }
    conf.update(librdkafka_security(settings))
    return conf


def read_all(
    settings: Settings,
    name: str,
    until_ms: int | None = None,
    progress: Callable[[int, int], None] | None = None,
    timeout_s: float = 120.0,
) -> dict[int, list[Entry]]:
    """Every entry of ``lifecycle.<name>``, per partition, up to the end offsets at the call.

    ``until_ms`` leaves out entries Kafka appended at or after that time.
    """
    out: dict[int, list[Entry]] = {}
    for p, offset, ts, _, value in _scan(settings, name, until_ms, progress, timeout_s, out):
        out[p].append((offset, ts, value))
    return out


def latest_values(settings: Settings, name: str, timeout_s: float = 120.0) -> dict[bytes, bytes | None]:
    """What a compacted topic converges to: the last value per key (None: a tombstone)."""
    latest: dict[bytes, bytes | None] = {}
    for _, _, _, key, value in _scan(settings, name, None, None, timeout_s, {}):
        if key is not None:
            latest[key] = value
    return latest


def _scan(
    settings: Settings,
    name: str,
    until_ms: int | None,
    progress: Callable[[int, int], None] | None,
    timeout_s: float,
    out: dict[int, list[Entry]],
) -> Iterator[tuple[int, int, int, bytes | None, bytes | None]]:
    """(partition, offset, timestamp, key, value) of every entry; fills ``out`` with the
    partitions found, so that a topic with empty partitions still lists them."""
    import time

    from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, TopicPartition

    topic = settings.topic(name)
    consumer = Consumer(consumer_config(settings))
    try:
        try:
            meta = consumer.list_topics(topic, timeout=15).topics.get(topic)
        except KafkaException as exc:
            raise ReadError(f"{topic}: {exc.args[0].str()}") from None
        parts = sorted(meta.partitions) if meta is not None and meta.error is None else []
        out.update({p: [] for p in parts})
        if not parts:
            check_topic_access(settings.bootstrap, topic, client_kwargs(settings))
            return
        ends: dict[int, int] = {}
        total = 0
        for p in parts:
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=30)
            ends[p] = high
            total += max(0, high - low)
        remaining = {p for p in parts if ends[p] > 0}
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in sorted(remaining)])
        done = 0
        deadline = time.monotonic() + timeout_s
        while remaining:
            if time.monotonic() > deadline:
                raise ReadError(f"{topic}: not read to its end within {timeout_s:.0f} s")
            # consume() returns when it has this many messages or the wait is over: a short wait
            # keeps a small topic from costing a whole timeout
            for m in consumer.consume(50_000, 0.02):
                p = m.partition()
                assert p is not None  # a message of an assigned partition
                err = m.error()
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        remaining.discard(p)
                        continue
                    if err.fatal() or not err.retriable():
                        raise ReadError(f"{topic}[{p}]: {err.str()}")
                    continue
                offset = m.offset()
                assert offset is not None
                if offset >= ends[p]:
                    remaining.discard(p)
                    continue
                done += 1
                if until_ms is not None and m.timestamp()[1] >= until_ms:
                    continue
                yield p, offset, m.timestamp()[1], m.key(), m.value()
                if offset == ends[p] - 1:
                    remaining.discard(p)
            if progress is not None:
                progress(min(done, total), total)
    finally:
        consumer.close()


def live_keys(settings: Settings) -> dict[str, bytes]:
    """key id -> WrappedKey bytes, for every data key ``lifecycle.keys`` still holds."""
    latest = latest_values(settings, "keys")
    return {k.decode("utf-8", "replace"): v for k, v in latest.items() if v is not None}
