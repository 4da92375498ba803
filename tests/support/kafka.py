"""Kafka in memory for the worker's batch loop: a stand-in that can crash at any step.

The loop's promise is about the order of its Kafka calls: outputs and keys first, log entries
once their keys are acknowledged, states once everything they claim is, the commit last; a
process killed anywhere folds again from the last commit and ends where the pure fold ends.
``MemoryKafka`` gives the loop (``streams.worker.loop.Worker``, through ``clients=``) a broker
whose every produce, flush and commit is a numbered step, and raises ``Crash`` at the step a
test chooses. What was produced but not yet flushed at that moment reaches the broker or not
as librdkafka's idempotent producer allows: per partition, some prefix of it, in order
(``crashed``). The real broker is the integration tests' business; this is the exhaustive part.
"""

from __future__ import annotations

import random
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from processors.fold import CHAINED_TYPES
from schemas.codec import decode, encode
from streams.plumbing.topics import partition_for

LOG_APPEND_TIME = 2  # confluent_kafka.TIMESTAMP_LOG_APPEND_TIME


class Crash(BaseException):
    """The worker's process dies here: raised from inside the Kafka call it was making."""


class TP(NamedTuple):
    topic: str
    partition: int


class _Offset(NamedTuple):
    """A ``confluent_kafka.TopicPartition`` with its offset, as ``commit(offsets=...)`` takes."""

    topic: str
    partition: int
    offset: int


@dataclass
class Message:
    """What ``Consumer.consume`` hands the loop, as librdkafka's messages answer."""

    t: str
    p: int
    o: int
    k: bytes | None
    v: bytes | None
    h: list[tuple[str, bytes]] | None = None
    ts: int = 0

    def topic(self) -> str:
        return self.t

    def partition(self) -> int:
        return self.p

    def offset(self) -> int:
        return self.o

    def key(self) -> bytes | None:
        return self.k

    def value(self) -> bytes | None:
        return self.v

    def headers(self) -> list[tuple[str, bytes]] | None:
        return self.h

    def timestamp(self) -> tuple[int, int]:
        return LOG_APPEND_TIME, self.ts

    def error(self) -> None:
        return None


@dataclass
class Broker:
    """The acknowledged messages of every topic partition, and the group's committed offsets."""

    partitions: int
    logs: dict[TP, list[Message]] = field(default_factory=lambda: defaultdict(list))
    committed: dict[TP, int] = field(default_factory=dict)

    def append(self, topic: str, partition: int, key: bytes | None, value: bytes | None, headers: Any = None) -> None:
        log = self.logs[TP(topic, partition)]
        log.append(Message(topic, partition, len(log), key, value, list(headers) if headers else None, int(time.time() * 1000)))

    def publish(self, topic: str, events: Iterable[dict[str, Any]]) -> None:
        """What upstream's producer leaves on ``topic``: each event keyed by its subject, on the
        subject's partition."""
        for e in events:
            key = e["subject_id"].encode()
            self.append(topic, partition_for(key, self.partitions), key, encode(e))

    def last_values(self, topic: str) -> dict[bytes, bytes | None]:
        """What a compacted topic converges to: the last value of every key."""
        out: dict[bytes, bytes | None] = {}
        for (t, _), log in sorted(self.logs.items()):
            if t == topic:
                for m in log:
                    if m.k is not None:
                        out[m.k] = m.v
        return out

    def entries(self, topic: str) -> dict[int, list[tuple[int, int, bytes | None]]]:
        """(offset, timestamp, value) per partition: what the replay reads."""
        return {p: [(m.o, m.ts, m.v) for m in self.logs.get(TP(topic, p), [])] for p in range(self.partitions)}


class Steps:
    """Numbers the worker's Kafka calls and crashes it at ``crash_at`` (None: never)."""

    def __init__(self, crash_at: int | None = None) -> None:
        self.crash_at = crash_at
        self.count = 0
        self.kinds: list[str] = []
        self.calls: list[tuple[str, str, bytes | None, bytes | None]] = []  # (kind, topic, key, value)

    def __call__(self, kind: str, topic: str = "", key: bytes | None = None, value: bytes | None = None) -> None:
        self.count += 1
        self.kinds.append(kind)
        self.calls.append((kind, topic, key, value))
        if self.count == self.crash_at:
            raise Crash(f"{kind} (step {self.count})")


class Producer:
    def __init__(self, broker: Broker, steps: Steps) -> None:
        self.broker, self.steps = broker, steps
        self.pending: list[tuple[str, int, bytes | None, bytes | None, Any]] = []

    def produce(self, topic: str, value: bytes | None, key: bytes | None, partition: int = -1, headers: Any = None) -> None:
        self.steps("produce", topic, key, value)
        if partition < 0:
            partition = partition_for(key or b"", self.broker.partitions)
        self.pending.append((topic, partition, key, value, headers))

    def flush(self, timeout: float = -1) -> int:
        self.steps("flush")
        for topic, partition, key, value, headers in self.pending:
            self.broker.append(topic, partition, key, value, headers)
        self.pending.clear()
        return 0

    def poll(self, timeout: float = 0) -> int:
        return 0

    def crashed(self, rng: random.Random) -> None:
        """The process is gone: per partition, a prefix of what was in flight reached the broker."""
        by_partition: dict[TP, list[tuple[str, int, bytes | None, bytes | None, Any]]] = defaultdict(list)
        for item in self.pending:
            by_partition[TP(item[0], item[1])].append(item)
        for tp in sorted(by_partition):
            queued = by_partition[tp]
            for topic, partition, key, value, headers in queued[: rng.randint(0, len(queued))]:
                self.broker.append(topic, partition, key, value, headers)
        self.pending.clear()


class Consumer:
    """One member holding every partition of what it subscribes to, from the committed offsets."""

    def __init__(self, broker: Broker, steps: Steps) -> None:
        self.broker, self.steps = broker, steps
        self.topics: list[str] = []
        self.callbacks: dict[str, Callable[..., None]] = {}
        self.positions: dict[TP, int] | None = None
        self.queued: list[dict[TP, int] | None] = []

    def subscribe(
        self, topics: list[str], on_assign: Callable[..., None], on_revoke: Callable[..., None], on_lost: Callable[..., None]
    ) -> None:
        self.topics = topics
        self.callbacks = {"assign": on_assign, "revoke": on_revoke, "lost": on_lost}

    def _assignment(self) -> list[TP]:
        return [TP(t, p) for t in self.topics for p in range(self.broker.partitions)]

    def consume(self, n: int, timeout: float) -> list[Message]:
        out = self._consume(n)
        self._send_queued()  # the background thread sends the queued commits meanwhile
        return out

    def _consume(self, n: int) -> list[Message]:
        if self.positions is None:
            self.positions = {tp: self.broker.committed.get(tp, 0) for tp in self._assignment()}
            self.callbacks["assign"](self, self._assignment())
        out: list[Message] = []
        for tp in self._assignment():
            log = self.broker.logs.get(tp, [])
            while self.positions[tp] < len(log) and len(out) < n:
                out.append(log[self.positions[tp]])
                self.positions[tp] += 1
        return out

    def commit(self, offsets: list[Any] | None = None, asynchronous: bool = True) -> None:
        """As librdkafka: offsets given are fixed now; without them, "the current offsets" are
        those handed out when the request is sent, which for an asynchronous commit is later,
        after the next ``consume`` (so a loop that relied on it would commit what it had not
        folded yet, and a crash then would lose it)."""
        self.steps("commit")
        fixed = None if offsets is None else {TP(tp.topic, tp.partition): tp.offset for tp in offsets}
        if asynchronous:
            self.queued.append(fixed)
        else:
            self._send(fixed)

    def _send(self, fixed: dict[TP, int] | None) -> None:
        assert self.positions is not None
        self.broker.committed.update(dict(self.positions) if fixed is None else fixed)

    def _send_queued(self) -> None:
        while self.queued:
            self._send(self.queued.pop(0))

    def close(self) -> None:
        if self.positions is not None:
            self.callbacks["revoke"](self, self._assignment())  # librdkafka revokes on close too
            self._send_queued()


class MemoryKafka:
    """The worker's ``Clients`` on a ``Broker`` in memory (``streams.worker.clients``)."""

    def __init__(self, broker: Broker, steps: Steps | None = None) -> None:
        self.broker = broker
        self.steps = steps or Steps()
        self.producer = Producer(broker, self.steps)
        self.consumer = Consumer(broker, self.steps)

    def end_offset(self, topic: str, partition: int, patience: float = 60.0) -> int:
        return len(self.broker.logs.get(TP(topic, partition), []))

    def read(self, topic: str, partition: int, start: int) -> Iterator[tuple[bytes | None, bytes | None]]:
        for m in self.broker.logs.get(TP(topic, partition), [])[start:]:
            yield m.k, m.v

    def last_decision(self, topic: str, partition: int) -> bytes | None:
        for m in reversed(self.broker.logs.get(TP(topic, partition), [])):
            event = decode(m.v)
            if event is not None and event["type"] in CHAINED_TYPES:
                return m.v
        return None

    def commit(self, offsets: dict[tuple[str, int], int], wait: bool) -> None:
        self.consumer.commit([_Offset(t, p, o) for (t, p), o in offsets.items()], asynchronous=not wait)


__all__ = ["TP", "Broker", "Crash", "MemoryKafka", "Message", "Steps"]
