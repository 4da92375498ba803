"""The worker's Kafka: every call the batch loop makes to a broker, behind one object.

Why one object: the loop's promises are about the order of its sends, waits and commits
(``streams.worker.loop``), and a crash can cut that order anywhere. Handing the loop its Kafka
lets a test give it one that stops after any chosen step (``tests/support/kafka.py``), fold again
from the last commit and compare with the pure fold, every time; the real one here is the
librdkafka producer and consumer the loop runs on in production.

What the loop needs: a producer (``produce``, ``flush``, ``poll``), a consumer in its group
(``subscribe`` with the rebalance callbacks, ``consume``, ``commit``, ``close``), a partition's
end offset, a partition read from an offset to its end (the changelogs, on recovery), and the last
decision a log partition holds (the head of its hash chain).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from typing import Any, Protocol

from streams.plumbing.logsafe import librdkafka_logger
from streams.plumbing.reading import last_decision
from streams.plumbing.scan import consumer_config
from streams.plumbing.security import client_kwargs, librdkafka_security
from streams.plumbing.topics import STATE_MAX_BYTES
from streams.settings import Settings

log = logging.getLogger("lifecycle.worker")

OnDelivery = Callable[[Any, Any], None]
"""librdkafka's delivery report: (error or None, message)."""


class Clients(Protocol):
    """What the batch loop asks of Kafka (``KafkaClients`` is the real one)."""

    producer: Any  # produce(topic, value, key, partition, headers=), flush(timeout), poll(timeout)
    consumer: Any  # subscribe(topics, on_assign=, on_revoke=, on_lost=), consume(n, timeout), close()

    def end_offset(self, topic: str, partition: int, patience: float = 60.0) -> int: ...

    def read(self, topic: str, partition: int, start: int) -> Iterator[tuple[bytes | None, bytes | None]]: ...

    def last_decision(self, topic: str, partition: int) -> bytes | None: ...

    def commit(self, offsets: dict[tuple[str, int], int], wait: bool) -> None: ...

    def begin(self) -> None: ...

    def commit_transaction(self, offsets: dict[tuple[str, int], int]) -> None: ...

    def abort(self) -> None: ...


class OffsetUnavailable(RuntimeError):
    """The broker did not say where a partition ends, for as long as the worker would wait."""


class TransactionAborted(RuntimeError):
    """A batch's transaction could not be committed and was aborted: nothing of it happened."""


def transactional_id(settings: Settings) -> str:
    """One per worker home, stable across restarts: a restarted worker fences its own zombie
    (the broker aborts whatever the old instance left open and refuses its later writes); a
    zombie of another home is fenced by the group's generation, which the offsets carry."""
    import hashlib

    return f"{settings.app_id}-worker-{hashlib.sha256(str(settings.worker_dir).encode()).hexdigest()[:12]}"


class KafkaClients:
    """The worker's producer and consumer on librdkafka, and its reads of the changelogs.

    With ``LIFECYCLE_GUARANTEE=exactly_once`` the producer is transactional: the loop opens a
    transaction per batch (``begin``) and commits its outputs, log entries, data keys, states and
    the input offsets together (``commit_transaction``); readers are ``read_committed``, so a
    batch cut by a crash was never there."""

    def __init__(self, settings: Settings, on_delivery: OnDelivery) -> None:
        from confluent_kafka import Consumer, Producer

        self.settings = settings
        self.eos = settings.guarantee == "exactly_once"
        security = librdkafka_security(settings)
        self.producer = Producer(
            {
                "bootstrap.servers": settings.bootstrap,
                "client.id": "lifecycle-worker",
                "acks": "all",
                "enable.idempotence": True,  # a retried batch never reorders a partition
                # flush() sends at once whatever linger is; the linger only gathers a batch's
                # outputs into a few requests per partition. With 2 ms, a batch went out in
                # ~25 requests of ~7 messages each, and the broker spent 130 µs of CPU per event
                # on them; with 100 ms, 25-35 µs (lifecycle bench, README)
                "linger.ms": 100,
                "partitioner": "murmur2_random",  # the Java client's, as upstream's kafka-python uses
                "message.max.bytes": STATE_MAX_BYTES + 64 * 1024,
                "queue.buffering.max.messages": 1_000_000,
                "delivery.report.only.error": True,
                "on_delivery": on_delivery,
                "log_level": 4,
                "logger": librdkafka_logger(),
                **security,
                **({"transactional.id": transactional_id(settings), "transaction.timeout.ms": 60_000} if self.eos else {}),
            }
        )
        if self.eos:
            self.producer.init_transactions(60)
        self.consumer = Consumer(
            {
                "bootstrap.servers": settings.bootstrap,
                "group.id": settings.app_id,
                # the URL of this worker's views, so that another worker can find the owner
                # of a subject in the group's description
                "client.id": f"lifecycle-worker {settings.worker_url}",
                "enable.auto.commit": False,
                "auto.offset.reset": "earliest",
                # co-partitioning: partition p of ingest and of acks go to the same member
                "partition.assignment.strategy": "range",
                "session.timeout.ms": 10_000,
                "heartbeat.interval.ms": 1_000,
                "isolation.level": "read_committed",
                "fetch.wait.max.ms": 20,
                "max.partition.fetch.bytes": 4 * 1024 * 1024,
                "queued.max.messages.kbytes": 16 * 1024,  # prefetched per partition (default 64 MB)
                "log_level": 4,
                "logger": librdkafka_logger(),
                **security,
            }
        )

    def end_offset(self, topic: str, partition: int, patience: float = 60.0) -> int:
        """The partition's end offset, asked again while the broker is not answering for it
        (a broker that just restarted does not know its partitions for a moment).

        Asked again of a reader of its own, whose metadata is fresh: the changelogs and the log
        are no topics the consumer subscribes to, so librdkafka never refreshes where their
        partitions lead by itself, and after a broker of a cluster died the consumer kept
        asking the dead leader (timed out) or knew no leader at all (unknown partition) for
        minutes, on a cluster whose other brokers had taken over at once. Never the
        consumer's own ``list_topics``: restores run inside its rebalance callback, and a
        call of the consumer that takes callbacks, made from one of its callbacks, ends the
        state confluent-kafka keeps for that client and thread, so the next callback of the
        same ``consume`` aborted the process (``CallState_get: Assertion `cs != NULL'``)."""
        from confluent_kafka import Consumer, KafkaException, TopicPartition

        deadline = time.monotonic() + patience
        asker = self.consumer
        try:
            while True:
                try:
                    return int(asker.get_watermark_offsets(TopicPartition(topic, partition), timeout=10, cached=False)[1])
                except KafkaException as exc:
                    if time.monotonic() > deadline:
                        raise OffsetUnavailable(f"{topic}[{partition}]: {exc}") from None
                    log.warning("no end offset for %s[%d] yet (%s); asking again", topic, partition, exc)
                    if asker is not self.consumer:
                        asker.close()
                    asker = Consumer({**consumer_config(self.settings), "client.id": "lifecycle-offsets"})
                    time.sleep(0.5)
        finally:
            if asker is not self.consumer:
                asker.close()

    def read(self, topic: str, partition: int, start: int) -> Iterator[tuple[bytes | None, bytes | None]]:
        """(key, value) of every entry of one partition from ``start`` to its end offset now."""
        from confluent_kafka import Consumer, KafkaError, TopicPartition

        end = self.end_offset(topic, partition)
        if start >= end:
            return
        reader = Consumer(
            {**consumer_config(self.settings), "client.id": "lifecycle-restore", "queued.max.messages.kbytes": 16 * 1024}
        )
        try:
            reader.assign([TopicPartition(topic, partition, start)])
            while True:
                batch = reader.consume(10_000, 1.0)
                for m in batch:
                    err = m.error()
                    if err is not None:
                        if err.code() == KafkaError._PARTITION_EOF:
                            return
                        continue
                    yield m.key(), m.value()
                    if (m.offset() or 0) >= end - 1:
                        return
                if not batch:
                    position = reader.position([TopicPartition(topic, partition)])[0].offset
                    if position >= end:
                        return
        finally:
            reader.close()

    def last_decision(self, topic: str, partition: int) -> bytes | None:
        """The bytes of the last decision in one partition of the log (None: none yet)."""
        return last_decision(self.settings.bootstrap, topic, partition, 512, client_kwargs(self.settings))

    def commit(self, offsets: dict[tuple[str, int], int], wait: bool) -> None:
        """Commit ``offsets`` ((topic, partition) -> next offset), exactly these; warns when a
        rebalance took the partitions meanwhile (their new owner folds again)."""
        from confluent_kafka import KafkaError, KafkaException, TopicPartition

        try:
            tps = [TopicPartition(t, p, o) for (t, p), o in offsets.items()]
            if wait:
                self.consumer.commit(offsets=tps, asynchronous=False)
            else:
                self.consumer.commit(offsets=tps, asynchronous=True)
        except KafkaException as exc:
            if exc.args[0].code() == KafkaError._NO_OFFSET:
                return  # nothing consumed since the last commit
            log.warning("commit refused (%s): the batch will be folded again", exc.args[0].str())

    def begin(self) -> None:
        self.producer.begin_transaction()

    def commit_transaction(self, offsets: dict[tuple[str, int], int]) -> None:
        """Commit the open transaction with the input ``offsets`` in it; on a failure that asks
        for it, abort (nothing of the batch happened) and raise ``TransactionAborted``."""
        from confluent_kafka import KafkaException, TopicPartition

        try:
            if offsets:
                tps = [TopicPartition(t, p, o) for (t, p), o in offsets.items()]
                self.producer.send_offsets_to_transaction(tps, self.consumer.consumer_group_metadata(), 60)
            self.producer.commit_transaction(60)
        except KafkaException as exc:
            error = exc.args[0]
            if error.txn_requires_abort():
                self.producer.abort_transaction(60)
                raise TransactionAborted(f"the batch's transaction was aborted: {error.str()}") from None
            raise

    def abort(self) -> None:
        self.producer.abort_transaction(30)


__all__ = ["Clients", "KafkaClients", "OffsetUnavailable", "OnDelivery", "TransactionAborted", "transactional_id"]
