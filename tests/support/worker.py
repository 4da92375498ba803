"""A worker on the in-memory Kafka stand-in, fed messages by hand (no broker, no group)."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

import orjson

from processors.shredding import Keyring, new_data_key
from processors.state import State
from schemas.codec import encode
from schemas.contract import parse_line
from streams.plumbing.topics import partition_for
from streams.settings import Settings, load_policy
from streams.worker.loop import Worker
from support.kafka import Broker, MemoryKafka, Message


def memory_worker(tmp_path: Path) -> Worker:
    """A worker owning every partition of an in-memory broker, its state in memory."""
    settings = dataclasses.replace(Settings.from_env({}), home=tmp_path, store="memory://")
    w = Worker(settings, load_policy(), Keyring.of(new_data_key()), clients=MemoryKafka(Broker(settings.partitions)))
    w.owned = set(range(settings.partitions))
    w.chain_heads = dict.fromkeys(range(settings.partitions), b"")
    return w


def calls(worker: Worker) -> list[tuple[str, str, bytes | None, bytes | None]]:
    """The worker's sends and flushes, in order: (kind, topic, key, value)."""
    return worker.kafka.steps.calls  # type: ignore[attr-defined, no-any-return]


def line(**fields: object) -> dict[str, Any]:
    """An upstream event as ``lifecycle publish`` validates a JSON line."""
    return parse_line(orjson.dumps(fields))


def messages(worker: Worker, events: list[dict[str, Any]], first_offset: int = 0) -> list[Message]:
    """Events as the ingest messages the worker consumes, each on its subject's partition."""
    out = []
    for i, e in enumerate(events, start=first_offset):
        key = e["subject_id"].encode()
        out.append(
            Message(
                worker.t_ingest, partition_for(key, worker.settings.partitions), i, key, encode(e), ts=int(time.time() * 1000)
            )
        )
    return out


def state_of(worker: Worker, subject_id: str) -> State:
    key = subject_id.encode()
    raw = worker.subjects.get(worker.partition_of(key), key)
    assert raw, f"no state for {subject_id}"
    return orjson.loads(raw)  # type: ignore[no-any-return]
