"""The downstream library: keep a copy of one consumer's feeds (``lifecycle.records.<name>``
and ``lifecycle.consent.<name>``) in a store you own, honour every tombstone, and acknowledge
each deletion on ``lifecycle.acks``.

Run it against a SQLite file::

    lifecycle sink sqlite ./crm-copy.db --name crm-mirror              # follow until SIGTERM / Ctrl-C
    lifecycle sink sqlite ./crm-copy.db --name crm-mirror --until-idle # catch up, then exit

or from Python, with any store that implements :class:`Sink`::

    from streams.settings import Settings
    from streams.commands.sink import SqliteSink, run_sink

    with SqliteSink("crm-copy.db") as sink:
        report = run_sink(Settings.from_env(), sink, "crm-mirror", until_idle=True)

Why a consumer's own feeds and not the complete ones: they carry only the purposes the
policy says it serves (the consent snapshots cut to them), so a copy never holds what its
owner has no purpose for, and an erasure waits for the consumers that were sent the data,
not for every consumer. On a secured broker the consumer logs in under its own name
(``LIFECYCLE_KAFKA_USER=<name>``), and the broker lets it read those two topics only.

Delivery guarantees, and where each comes from:

- **The sink's offsets are the truth.** ``Sink.commit`` stores the next offset of every
  partition in the same transaction as the rows, so a crash before it loses nothing (the batch
  is read again) and a crash after it applies nothing twice (reading resumes past it). On start
  the consumer seeks to the sink's offsets, or to the earliest offset for a partition it never
  saw.
- **An ack is sent only once its deletion is durable**: after ``Sink.commit``, never before.
- **Kafka's committed offsets are the ack watermark.** They are committed only after the
  batch's acks are flushed, so on start every tombstone between Kafka's committed offset and
  the sink's offset was deleted but perhaps never acknowledged (a crash between the two
  commits). Those tombstones are read again and acknowledged without touching the sink. The
  ack's ``event_id`` is derived from the tombstone's topic, partition and offset, so an ack
  re-sent after a crash is a duplicate the pipeline ignores. The same offsets make the
  consumer group's lag visible to any Kafka monitoring.

- **A sink away longer than the tombstones are kept still deletes.** A compacted feed keeps a
  tombstone only ``delete.retention.ms`` after the cleaner ran, so a sink that was down longer
  would never read it and keep the row for ever. On start, each partition is checked: its
  stored offset is below the offset of the first message younger than the topic's live
  ``delete.retention.ms`` (read from the broker, not from our settings, which another operator
  may not share), or below the partition's earliest offset, or the sink holds rows of a feed
  it has no offsets for (a restored copy). Then that feed is *reconciled*: read from its start
  to its current end, every local row whose key is no longer there (absent, or a tombstone)
  is deleted, the latest values are upserted, and the end offsets committed with them in one
  transaction. Each such deletion is acknowledged like a tombstone, by ``record_id`` (the
  ``request_id`` went with the tombstone; a consent row, by its subject alone, which completes
  the part of a consumer that was sent only the consent), under an ``event_id`` derived from the feed, the key
  and the feed's end, so a re-sent ack is a duplicate. No tombstone will bring those deletions
  again, so the acks they owe are kept in the store, in the same transaction as the deletions
  (``owe``), and forgotten once the broker has them (``settle``): a sink killed between the
  commit and the acks sends them at its next start.

Nothing here logs a message's key or value: both may be personal data.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import signal
import sqlite3
import sys
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType, TracebackType
from typing import TYPE_CHECKING, Any, NoReturn, Protocol, Self

from processors.messages import CONSENT, RECORDS, feed
from schemas.codec import CodecError, Where, decode, encode
from schemas.contract import split_record_key
from streams.settings import Settings, SettingsError

if TYPE_CHECKING:
    from kafka import KafkaConsumer, KafkaProducer, TopicPartition

log = logging.getLogger(__name__)

Offsets = dict[tuple[str, int], int]
"""``(topic, partition)`` → the next offset to read, as Kafka counts it."""

KINDS = {RECORDS: "Record", CONSENT: "ConsentSnapshot"}
"""Which kind of feed carries which record type; the kind is the sink's ``kind``."""

POLL_MS = 500
BATCH_MAX = 500


class SinkError(RuntimeError):
    """The sink cannot start (a topic is missing, say); the message says what to do."""


@dataclass(frozen=True)
class OwedAck:
    """An acknowledgement a sink owes for a deletion no tombstone will bring again."""

    event_id: str
    topic: str
    kind: str
    key: str


class Sink(Protocol):
    """A store that keeps a downstream copy. Every method runs on the consumer's thread.

    ``upsert`` and ``delete`` of one batch, then ``commit``, must form one transaction: the
    offsets become visible with the rows or not at all. ``kind`` is ``"records"`` (key
    ``subject_id/record_id``) or ``"consent"`` (key ``subject_id``); ``value`` is the decoded
    Avro record without its ``"type"``.
    """

    def upsert(self, kind: str, key: str, value: dict[str, Any]) -> None: ...

    def delete(self, kind: str, key: str) -> None: ...

    def commit(self, offsets: Offsets) -> None: ...

    def offsets(self) -> Offsets: ...

    def keys(self, kind: str) -> Iterable[str]:
        """Every key of ``kind`` the store holds. Needed to reconcile a store that was away
        longer than the tombstones are kept: whatever it holds that the feed no longer has was
        deleted while it was away. Called outside a batch; may be an iterator."""
        ...

    def owe(self, acks: list[OwedAck]) -> None:
        """Keep, in the batch's transaction, the acknowledgements owed for its deletions that no
        tombstone will bring again (a reconcile's): a crash between ``commit`` and sending them
        would otherwise leave rows deleted that no one ever acknowledges, and the erasure
        waiting for ever."""
        ...

    def owed(self) -> list[OwedAck]:
        """What ``owe`` kept and ``settle`` has not removed: sent again at start."""
        ...

    def settle(self, event_ids: list[str]) -> None:
        """The broker has these acknowledgements: forget them (a transaction of its own)."""
        ...


_SCHEMA = """
CREATE TABLE IF NOT EXISTS records (
    key TEXT PRIMARY KEY,
    subject_id TEXT NOT NULL,
    record_id TEXT NOT NULL,
    value JSON NOT NULL
);
CREATE INDEX IF NOT EXISTS records_by_subject ON records (subject_id);
CREATE TABLE IF NOT EXISTS consent (
    subject_id TEXT PRIMARY KEY,
    value JSON NOT NULL
);
CREATE TABLE IF NOT EXISTS owed_acks (
    event_id TEXT PRIMARY KEY,
    topic TEXT NOT NULL,
    kind TEXT NOT NULL,
    key TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS offsets (
    topic TEXT NOT NULL,
    "partition" INTEGER NOT NULL,
    next_offset INTEGER NOT NULL,
    PRIMARY KEY (topic, "partition")
);
"""


class SqliteSink:
    """A :class:`Sink` in one SQLite file.

    WAL so that readers (the application using the copy) never block the consumer, and
    ``synchronous=FULL`` so that a committed deletion survives a power cut as well as a crash.
    The connection runs in autocommit mode and the transaction is opened by the first write of
    a batch, so nothing before ``commit`` is ever visible or durable. It is used by one thread
    at a time (the consumer's), which need not be the thread that opened it.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        try:
            mode = self._db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if mode != "wal":
                raise SinkError(f"{self.path}: SQLite refused WAL mode (got {mode!r})")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.executescript(_SCHEMA)
        except BaseException:
            self._db.close()
            raise

    def _begin(self) -> None:
        if not self._db.in_transaction:
            self._db.execute("BEGIN IMMEDIATE")

    def upsert(self, kind: str, key: str, value: dict[str, Any]) -> None:
        self._begin()
        doc = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        if kind == "records":
            self._db.execute(
                "INSERT INTO records (key, subject_id, record_id, value) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (key) DO UPDATE SET subject_id = excluded.subject_id, "
                "record_id = excluded.record_id, value = excluded.value",
                (key, value["subject_id"], value["record_id"], doc),
            )
        elif kind == "consent":
            self._db.execute(
                "INSERT INTO consent (subject_id, value) VALUES (?, ?) "
                "ON CONFLICT (subject_id) DO UPDATE SET value = excluded.value",
                (key, doc),
            )
        else:
            raise ValueError(f"unknown kind {kind!r}: expected 'records' or 'consent'")

    def delete(self, kind: str, key: str) -> None:
        self._begin()
        if kind == "records":
            self._db.execute("DELETE FROM records WHERE key = ?", (key,))
        elif kind == "consent":
            self._db.execute("DELETE FROM consent WHERE subject_id = ?", (key,))
        else:
            raise ValueError(f"unknown kind {kind!r}: expected 'records' or 'consent'")

    def commit(self, offsets: Offsets) -> None:
        self._begin()
        self._db.executemany(
            'INSERT INTO offsets (topic, "partition", next_offset) VALUES (?, ?, ?) '
            'ON CONFLICT (topic, "partition") DO UPDATE SET next_offset = excluded.next_offset',
            [(topic, partition, offset) for (topic, partition), offset in offsets.items()],
        )
        self._db.execute("COMMIT")

    def offsets(self) -> Offsets:
        rows = self._db.execute('SELECT topic, "partition", next_offset FROM offsets')
        return {(topic, partition): offset for topic, partition, offset in rows}

    def keys(self, kind: str) -> list[str]:
        if kind == "records":
            return [k for (k,) in self._db.execute("SELECT key FROM records")]
        if kind == "consent":
            return [k for (k,) in self._db.execute("SELECT subject_id FROM consent")]
        raise ValueError(f"unknown kind {kind!r}: expected 'records' or 'consent'")

    def owe(self, acks: list[OwedAck]) -> None:
        self._begin()
        self._db.executemany(
            "INSERT INTO owed_acks (event_id, topic, kind, key) VALUES (?, ?, ?, ?) ON CONFLICT (event_id) DO NOTHING",
            [(a.event_id, a.topic, a.kind, a.key) for a in acks],
        )

    def owed(self) -> list[OwedAck]:
        rows = self._db.execute("SELECT event_id, topic, kind, key FROM owed_acks ORDER BY event_id")
        return [OwedAck(*row) for row in rows]

    def settle(self, event_ids: list[str]) -> None:
        self._begin()
        self._db.executemany("DELETE FROM owed_acks WHERE event_id = ?", [(i,) for i in event_ids])
        self._db.execute("COMMIT")

    def rollback(self) -> None:
        """Drop a batch that was not committed; what a crash does, done on purpose."""
        if self._db.in_transaction:
            self._db.execute("ROLLBACK")

    def close(self) -> None:
        self.rollback()
        self._db.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()


@dataclass
class SinkReport:
    """What one run did. ``acks_sent`` counts every ack sent, ``acks_resent`` those among them
    for deletions an earlier run applied but may not have acknowledged."""

    upserts: int = 0
    deletes: int = 0
    acks_sent: int = 0
    acks_resent: int = 0
    skipped: int = 0
    reconciled: int = 0
    """Deletions found by reconciling a feed the sink was away from for longer than its
    tombstones are kept (counted in ``deletes`` and ``acks_sent`` too)."""

    def summary(self, name: str) -> str:
        line = f"sink {name}: {self.upserts} upserts, {self.deletes} deletes, {self.acks_sent} acks sent"
        if self.reconciled:
            line += f" ({self.reconciled} deletes found by reconciling)"
        if self.acks_resent:
            line += f" ({self.acks_resent} re-sent)"
        if self.skipped:
            line += f", {self.skipped} messages skipped (see the log)"
        return line


@dataclass(frozen=True)
class _Ack:
    topic: str
    partition: int
    offset: int
    kind: str
    key: str
    request_id: str
    event_id: str = ""  # set for a deletion no tombstone was read for (a reconcile's)


def _ack_event(ack: _Ack, name: str, now_ms: int) -> dict[str, Any]:
    if ack.kind == "records":
        subject_id, record_id = split_record_key(ack.key)
    else:
        subject_id, record_id = ack.key, ""
    return {
        "type": "ErasureAcknowledged",
        "event_id": ack.event_id or f"ack:{name}:{ack.topic}:{ack.partition}:{ack.offset}",  # no "/" in an id
        "subject_id": subject_id,
        "occurred_at": now_ms,
        "source": name,
        "consumer": name,
        "request_id": ack.request_id,
        "record_id": record_id,
    }


def _request_id(headers: list[tuple[str, bytes | None]] | None) -> str:
    for header, raw in headers or ():
        if header == "request_id" and raw is not None:
            try:
                return raw.decode("utf-8")
            except UnicodeDecodeError:
                return ""
    return ""


def _partitions(consumer: KafkaConsumer, topics: list[str], settings: Settings, name: str) -> list[TopicPartition]:
    """A secured broker hides a topic this principal may not read, so a refusal looks like a
    missing topic: asked, so the user learns which, and who may read it."""
    from kafka import TopicPartition
    from kafka.errors import TopicAuthorizationFailedError

    from streams.plumbing.admin import check_topic_access
    from streams.plumbing.security import client_kwargs

    tps: list[TopicPartition] = []
    for topic in topics:
        parts = consumer.partitions_for_topic(topic)
        if not parts:
            try:
                check_topic_access(settings.bootstrap, topic, client_kwargs(settings))
            except TopicAuthorizationFailedError:
                raise SinkError(
                    f"{settings.kafka_user} may not read {topic}: a consumer reads its own feeds, "
                    f"logged in under its own name (LIFECYCLE_KAFKA_USER={name})"
                ) from None
            raise SinkError(f"topic {topic} does not exist; start the pipeline (lifecycle worker) first")
        tps.extend(TopicPartition(topic, p) for p in sorted(parts))
    return tps


def run_sink(
    settings: Settings,
    sink: Sink,
    name: str,
    *,
    until_idle: bool = False,
    stop: threading.Event | None = None,
) -> SinkReport:
    """Apply consumer ``name``'s feeds (``lifecycle.records.<name>``, ``lifecycle.consent.<name>``)
    to ``sink`` and acknowledge every tombstone as that consumer, until ``stop`` is set (or, with
    ``until_idle``, until caught up).

    Partitions are assigned by hand, not through a group subscription: the sink, not Kafka,
    owns the position, and one store is written by one process, so a rebalance could only ever
    hand a partition to a process whose store does not hold it. The group id
    ``{app_id}-sink-{name}`` is still used to commit offsets, which is where the ack watermark
    and lag monitoring live. Run one process per name; a second name is a second copy.
    """
    # Imported here so that importing this module (for SqliteSink, say) needs no Kafka client.
    from kafka import KafkaConsumer, KafkaProducer

    from streams.plumbing.security import client_kwargs

    registered_consumer(settings, name)
    stop = stop or threading.Event()
    consumer = KafkaConsumer(
        bootstrap_servers=settings.bootstrap.split(","),
        group_id=f"{settings.app_id}-sink-{name}",
        client_id=f"lifecycle-sink-{name}",
        enable_auto_commit=False,
        auto_offset_reset="earliest",  # a stored offset the log no longer has: start over
        isolation_level="read_committed",  # a write the pipeline aborted was never true
        max_poll_records=BATCH_MAX,
        **client_kwargs(settings),
    )
    producer: KafkaProducer | None = None
    try:
        kind_of = {settings.topic(feed(kind, name)): kind for kind in KINDS}
        tps = _partitions(consumer, list(kind_of), settings, name)
        producer = KafkaProducer(
            bootstrap_servers=settings.bootstrap.split(","),
            client_id=f"lifecycle-sink-{name}",
            acks="all",
            linger_ms=5,
            **client_kwargs(settings),
        )
        run = _Run(sink, name, settings.topic("acks"), kind_of, {}, consumer, producer)
        run.pay(sink.owed(), again=True)
        for topic in kind_of:
            feed_tps = [tp for tp in tps if tp.topic == topic]
            if _behind_tombstones(consumer, feed_tps, sink, kind_of[topic], _tombstone_retention_ms(settings, topic)):
                run.reconcile(feed_tps)
        consumer.assign(tps)
        run.applied_to = _seek(consumer, tps, sink.offsets())
        while not stop.is_set():
            batch = consumer.poll(timeout_ms=POLL_MS)
            if batch:
                run.apply(batch)
            elif until_idle and _caught_up(consumer, tps):
                break
        return run.report
    finally:
        if producer is not None:
            producer.close()
        consumer.close(autocommit=False)


def registered_consumer(settings: Settings, name: str) -> None:
    """Refuse a consumer name the policy does not register: the fold counts acknowledgements
    only from registered consumers, so an erasure would wait for ever on a sink whose every
    acknowledgement counts for nothing, while the sink reported them sent."""
    from streams.settings import load_policy

    names = load_policy(settings.policy_file).consumer_names
    if name not in names:
        raise SinkError(
            f"consumer {name!r} is not registered in the policy (registered: {', '.join(names)}): "
            "pick one of them with --name, or register it under [consumers] in the policy file (LIFECYCLE_POLICY)"
        )


def _seek(consumer: KafkaConsumer, tps: list[TopicPartition], stored: Offsets) -> dict[TopicPartition, int]:
    """Position each partition; returns where the sink's applied data ends, per partition.

    A partition the sink never saw starts at the earliest offset. One it saw starts at the
    sink's offset, unless Kafka's committed offset (moved only after acks are flushed) lags
    behind it: then reading starts there, to re-send the acks a crash may have swallowed.
    """
    applied_to: dict[TopicPartition, int] = {}
    for tp in tps:
        if (tp.topic, tp.partition) not in stored:
            consumer.seek_to_beginning(tp)
            continue
        applied_to[tp] = stored[(tp.topic, tp.partition)]
        acked = consumer.committed(tp)
        if acked is None:  # never committed, or expired: the acks may all be missing
            consumer.seek_to_beginning(tp)
        else:
            consumer.seek(tp, min(acked, applied_to[tp]))
    return applied_to


def _tombstone_retention_ms(settings: Settings, topic: str) -> int:
    """The topic's live ``delete.retention.ms``: the broker's, not our setting's, since the
    topic may have been created or altered by someone who chose otherwise."""
    from confluent_kafka import KafkaException

    from streams.plumbing.topics import describe_configs

    try:
        live = describe_configs(settings, topic).get("delete.retention.ms")
    except (KafkaException, TimeoutError) as exc:
        reason = (str(exc).splitlines() or [type(exc).__name__])[0]
        raise SinkError(
            f"cannot read delete.retention.ms of {topic} ({reason}): the consumer "
            f"({settings.kafka_user or 'PLAINTEXT'}) needs DESCRIBE_CONFIGS on its feeds (lifecycle broker start grants it)"
        ) from None
    try:
        return int(live or "")
    except ValueError:
        raise SinkError(f"{topic}: delete.retention.ms is {live!r}, not a number of milliseconds") from None


def _behind_tombstones(consumer: KafkaConsumer, tps: list[TopicPartition], sink: Sink, kind: str, retention_ms: int) -> bool:
    """Whether the sink may have missed a tombstone of this feed that the broker has dropped.

    Per partition: the stored offset is below the earliest offset (the log moved past it), or
    below the first message younger than ``retention_ms`` (a tombstone older than that may be
    gone: compaction keeps one ``delete.retention.ms`` after the cleaner ran, never less than
    that after it was written). A partition the sink never saw counts as read from offset 0
    if the sink holds rows of this kind anyway (a copy restored from a backup, whose rows no
    offset vouches for), and not at all if it holds none: a fresh copy reads everything there
    still is. A false alarm costs one read of the feed; a missed one a row kept for ever.
    """
    stored = sink.offsets()
    earliest = consumer.beginning_offsets(tps)
    end = consumer.end_offsets(tps)
    cutoff = time.time_ns() // 1_000_000 - retention_ms
    young = consumer.offsets_for_times(dict.fromkeys(tps, max(cutoff, 0)))
    has_rows: bool | None = None
    for tp in tps:
        at = stored.get((tp.topic, tp.partition))
        if at is None:
            if has_rows is None:
                has_rows = next(iter(sink.keys(kind)), None) is not None
            if not has_rows:
                continue
            at = 0
        found = young.get(tp)
        first_young = found.offset if found is not None else end[tp]
        if at < earliest[tp] or at < first_young:
            return True
    return False


def _caught_up(consumer: KafkaConsumer, tps: list[TopicPartition]) -> bool:
    end = consumer.end_offsets(tps)
    return all(consumer.position(tp) >= end[tp] for tp in tps)


@dataclass
class _Run:
    sink: Sink
    name: str
    acks_topic: str
    kind_of: dict[str, str]
    applied_to: dict[TopicPartition, int]
    consumer: KafkaConsumer
    producer: KafkaProducer
    report: SinkReport = field(default_factory=SinkReport)

    def apply(self, batch: dict[TopicPartition, list[Any]]) -> None:
        """One batch, in the order that makes a crash at any line safe: the sink's
        transaction, then the acks, then Kafka's offsets."""
        from kafka.structs import OffsetAndMetadata, TopicPartition

        sink_offsets: Offsets = {}
        kafka_offsets: dict[TopicPartition, OffsetAndMetadata] = {}
        acks: list[_Ack] = []
        done = SinkReport()
        for tp, messages in batch.items():
            kind = self.kind_of[tp.topic]
            floor = self.applied_to.get(tp, -1)
            for m in messages:
                if m.offset < floor:  # already in the sink; only its ack may be missing
                    if m.value is None and (key := _key(m)) is not None:
                        acks.append(_Ack(tp.topic, tp.partition, m.offset, kind, key, _request_id(m.headers)))
                        done.acks_resent += 1
                    continue
                key = _key(m)
                if key is None:
                    done.skipped += 1
                elif m.value is None:
                    self.sink.delete(kind, key)
                    done.deletes += 1
                    acks.append(_Ack(tp.topic, tp.partition, m.offset, kind, key, _request_id(m.headers)))
                elif (value := _value(m, kind)) is None:
                    done.skipped += 1
                else:
                    self.sink.upsert(kind, key, value)
                    done.upserts += 1
            after = messages[-1].offset + 1
            kafka_offsets[tp] = OffsetAndMetadata(after, "", -1)
            if after > floor:
                sink_offsets[(tp.topic, tp.partition)] = after
        if sink_offsets:
            self.sink.commit(sink_offsets)
            for (topic, partition), after in sink_offsets.items():
                self.applied_to[TopicPartition(topic, partition)] = after
        self.report.upserts += done.upserts
        self.report.deletes += done.deletes
        self.report.skipped += done.skipped
        if acks:
            self._send(acks)
            self.report.acks_sent += len(acks)
            self.report.acks_resent += done.acks_resent
        self.consumer.commit(kafka_offsets)

    def reconcile(self, tps: list[TopicPartition]) -> None:
        """Bring the sink level with one feed (``tps``: all its partitions) without its
        tombstones: read it from the start to its current end, delete every local row whose key
        is no longer there, upsert the latest values, commit all of it with the end offsets in
        one transaction, then acknowledge each deletion and move Kafka's offsets (the ack
        watermark) to the end. Only counts are logged: the keys are personal data."""
        from kafka.structs import OffsetAndMetadata

        topic = tps[0].topic
        kind = self.kind_of[topic]
        latest, upto = _read_to_end(self.consumer, tps)
        gone = sorted(k for k in self.sink.keys(kind) if latest.get(k) is None)
        done = SinkReport()
        for key in gone:
            self.sink.delete(kind, key)
            done.deletes += 1
        for key, m in latest.items():
            if m is None:
                continue
            if (value := _value(m, kind)) is None:
                done.skipped += 1
            else:
                self.sink.upsert(kind, key, value)
                done.upserts += 1
        # the feed's end names this reconcile: the same ack sent twice (a retry) has one id
        mark = "-".join(str(upto[tp]) for tp in sorted(tps, key=lambda t: t.partition))
        owed = [OwedAck(f"ack:{self.name}:reconcile:{topic}:{mark}:{_digest(key)}", topic, kind, key) for key in gone]
        self.sink.owe(owed)
        self.sink.commit({(tp.topic, tp.partition): after for tp, after in upto.items()})
        self.pay(owed)
        self.consumer.commit({tp: OffsetAndMetadata(after, "", -1) for tp, after in upto.items()})
        self.report.upserts += done.upserts
        self.report.deletes += done.deletes
        self.report.reconciled += done.deletes
        self.report.acks_sent += len(owed)
        self.report.skipped += done.skipped
        log.info(
            "sink %s: %s was behind its tombstones; reconciled from its start: %d rows deleted, %d upserted",
            self.name, topic, done.deletes, done.upserts,
        )  # fmt: skip

    def pay(self, owed: list[OwedAck], again: bool = False) -> None:
        """Send owed acknowledgements, then forget them; ``again``: ones a crash left unsent,
        or sent but not forgotten (the same event id: the fold counts it once)."""
        if not owed:
            return
        self._send([_Ack(a.topic, -1, -1, a.kind, a.key, "", a.event_id) for a in owed])
        self.sink.settle([a.event_id for a in owed])
        if again:
            self.report.acks_sent += len(owed)
            self.report.acks_resent += len(owed)
            log.info("sink %s: %d acknowledgements a crash left unsent, sent", self.name, len(owed))

    def _send(self, acks: list[_Ack]) -> None:
        now_ms = time.time_ns() // 1_000_000
        futures = []
        for ack in acks:
            event = _ack_event(ack, self.name, now_ms)
            value = encode(event)
            futures.append(self.producer.send(self.acks_topic, key=event["subject_id"].encode(), value=value))
        self.producer.flush()
        for fut in futures:
            fut.get(timeout=30)  # a lost ack must stop us before Kafka's offsets move past it


READ_TO_END_S = 120.0
"""How long a reconcile may take to read a feed to its end before giving up (never halfway)."""


def _read_to_end(consumer: KafkaConsumer, tps: list[TopicPartition]) -> tuple[dict[str, Any], dict[TopicPartition, int]]:
    """Every key of the feed ``tps`` up to its end as of the call, with its last message
    (``None`` for a tombstone), and that end: where the sink goes on reading, since what a poll
    returned past it was not applied. A partial read would delete rows whose keys it did not
    reach, so running out of time is an error, not a shorter answer."""
    consumer.assign(tps)
    consumer.seek_to_beginning(*tps)
    end = consumer.end_offsets(tps)
    latest: dict[str, Any] = {}
    deadline = time.monotonic() + READ_TO_END_S
    while any(consumer.position(tp) < end[tp] for tp in tps):
        if time.monotonic() > deadline:
            raise SinkError(f"could not read {tps[0].topic} to its end within {READ_TO_END_S:.0f} s to reconcile; try again")
        for tp, messages in consumer.poll(timeout_ms=POLL_MS).items():
            for m in messages:
                if m.offset < end[tp] and (key := _key(m)) is not None:
                    latest[key] = m if m.value is not None else None
    return latest, end


def _digest(key: str) -> str:
    """A key in an ack's ``event_id`` without spelling it out (nor its ``/``)."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()[:24]


def _key(m: Any) -> str | None:
    if m.key is None:
        log.warning("skipped %s[%d]@%d: no key", m.topic, m.partition, m.offset)
        return None
    try:
        return bytes(m.key).decode("utf-8")
    except UnicodeDecodeError:
        log.warning("skipped %s[%d]@%d: key is not UTF-8", m.topic, m.partition, m.offset)
        return None


def _value(m: Any, kind: str) -> dict[str, Any] | None:
    try:
        event = decode(m.value, Where(m.topic, m.partition, m.offset))
    except CodecError as exc:
        log.warning("skipped %s[%d]@%d: %s", m.topic, m.partition, m.offset, exc.reason)
        return None
    assert event is not None  # m.value is not None here
    found = event.pop("type")
    if found != KINDS[kind]:
        log.warning("skipped %s[%d]@%d: a %s where a %s belongs", m.topic, m.partition, m.offset, found, KINDS[kind])
        return None
    return event


class _OneLineParser(argparse.ArgumentParser):
    """A usage error is one line on stderr, like every other error of the command."""

    def error(self, message: str) -> NoReturn:
        raise _UsageError(message)


class _UsageError(Exception):
    pass


def _parser() -> argparse.ArgumentParser:
    p = _OneLineParser(
        prog="lifecycle sink",
        description="Keep a copy of one consumer's feeds (lifecycle.records.NAME, lifecycle.consent.NAME), "
        "honour tombstones, acknowledge them.",
    )
    p.add_argument("backend", choices=["sqlite"], help="where the copy lives")
    p.add_argument("path", help="the SQLite file (created if missing)")
    p.add_argument("--name", required=True, help="this consumer's name as registered in the policy: its feeds are read")
    p.add_argument("--until-idle", action="store_true", help="exit once caught up instead of following")
    return p


def main_sink(argv: list[str]) -> int:
    """``lifecycle sink sqlite PATH --name NAME [--until-idle]``: ``argv`` is what follows ``sink``."""
    try:
        args = _parser().parse_args(argv)
    except _UsageError as exc:
        print(f"lifecycle sink: error: {exc}", file=sys.stderr)
        return 2
    except SystemExit as exc:  # --help: argparse printed it and wants out
        return exc.code if isinstance(exc.code, int) else 0
    try:
        settings = Settings.from_env()
    except SettingsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    from kafka.errors import KafkaError

    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()  # finish the batch in hand, then leave with everything committed

    previous = {}
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGINT):
            previous[sig] = signal.signal(sig, on_signal)
    try:
        with SqliteSink(args.path) as sink:
            report = run_sink(settings, sink, args.name, until_idle=args.until_idle, stop=stop)
    except SinkError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except sqlite3.Error as exc:
        print(f"error: {args.path}: {exc}", file=sys.stderr)
        return 2
    except KafkaError as exc:
        print(f"error: Kafka at {settings.bootstrap}: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    print(report.summary(args.name))
    return 0


__all__ = ["KINDS", "Offsets", "OwedAck", "Sink", "SinkError", "SinkReport", "SqliteSink", "main_sink", "run_sink"]
