"""The local three-node cluster of the fault tests: who leads which partition, who is in sync,
and a node killed for real (SIGKILL of its JVM, no shutdown of any kind)."""

from __future__ import annotations

import os
import signal
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

from streams.broker import local as broker
from streams.plumbing.admin import cluster_admin
from streams.plumbing.topics import changelog_topic
from streams.settings import Settings

INTERNAL = ("__consumer_offsets", "__transaction_state")


def _ours(settings: Settings, topic: str) -> bool:
    return topic.startswith(settings.topic_prefix) or topic == changelog_topic(settings) or topic in INTERNAL


def partitions(settings: Settings) -> dict[tuple[str, int], Any]:
    """(topic, partition) -> librdkafka's partition metadata (leader, replicas, isrs) for this
    test's topics, its changelog and the broker's internal topics, as the cluster says now."""
    metadata = cluster_admin(settings).list_topics(timeout=30)
    return {
        (name, p): part
        for name, topic in metadata.topics.items()
        if _ours(settings, name)
        for p, part in topic.partitions.items()
    }


def out_of_sync(settings: Settings) -> list[str]:
    """The partitions with a copy missing from their in-sync set, or no leader."""
    return sorted(
        f"{t}[{p}]" for (t, p), part in partitions(settings).items() if part.leader < 0 or set(part.isrs) != set(part.replicas)
    )


def wait_in_sync(settings: Settings, timeout: float = 120.0) -> None:
    """Every copy of every partition caught up: what a rolling restart waits for before taking
    the next broker down, and what a test waits for before it starts."""
    deadline = time.monotonic() + timeout
    behind = out_of_sync(settings)
    while behind:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{len(behind)} partitions not in sync within {timeout:.0f} s, first {behind[:5]}")
        time.sleep(0.5)
        behind = out_of_sync(settings)


def leaders(settings: Settings, name: str = "ingest") -> dict[int, int]:
    """Partition -> the node leading it, for one of this test's topics."""
    topic = settings.topic(name)
    return {p: part.leader for (t, p), part in partitions(settings).items() if t == topic}


def busiest(settings: Settings) -> int:
    """The node leading the partitions of ``lifecycle.ingest`` that hold the most messages:
    the one whose death moves the most of the pipeline's input (and of what each worker writes
    for it: the log, the states and the keys share those partitions' numbers)."""
    from confluent_kafka import Consumer, TopicPartition

    reader = Consumer({"bootstrap.servers": settings.bootstrap, "group.id": "cluster-probe", "enable.auto.commit": False})
    load: Counter[int] = Counter()
    try:
        for p, leader in leaders(settings).items():
            low, high = reader.get_watermark_offsets(TopicPartition(settings.topic("ingest"), p), timeout=10)
            load[leader] += high - low
    finally:
        reader.close()
    return load.most_common(1)[0][0]


def kill(settings: Settings, node_id: int) -> int:
    """SIGKILL one node's JVM and wait until it is gone; returns its pid."""
    node = next(n for n in broker.status(settings).nodes if n.id == node_id)
    assert node.pid is not None, f"node {node_id} is not running"
    os.kill(node.pid, signal.SIGKILL)
    broker.stop(settings, timeout=10, node=node_id)  # reaps it, and forgets its pid file
    return node.pid


@contextmanager
def frozen(settings: Settings, node_ids: Iterable[int]) -> Iterator[None]:
    """Nodes stopped in their tracks (SIGSTOP: a long GC pause, a network partition) for the
    length of a ``with`` block, then resumed where they were."""
    wanted = set(node_ids)
    pids = [n.pid for n in broker.status(settings).nodes if n.id in wanted and n.pid is not None]
    for pid in pids:
        os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        for pid in pids:
            os.kill(pid, signal.SIGCONT)


def up(settings: Settings) -> list[int]:
    return [n.id for n in broker.status(settings).nodes if n.running]
