"""A subject whose state outgrows Kafka's default message size still gets folded.

Why it matters: the worker keeps each subject's whole state as one message on its state
changelog. With Kafka's default 1 MB cap, the first subject with a long history stopped the
worker, and since its offset never moved on, it stopped again on every restart: every subject
on the partition behind it waited.
"""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from streams.plumbing.reading import latest_by_key, read_topic
from streams.plumbing.upstream import publish_lines
from streams.settings import Settings
from streams.worker.processes import spawn_worker, stop_worker, wait_caught_up

pytestmark = pytest.mark.integration


def collected(n: int, size: int) -> bytes:
    return orjson.dumps(
        {
            "type": "DataCollected",
            "event_id": f"big-{n}",
            "subject_id": "s-big",
            "occurred_at": "2026-03-01T10:00:00Z",
            "source": "test",
            "record_id": f"r-{n}",
            "category": "contact",
            "purpose": "inquiry",
            "legal_basis": "legitimate_interest",
            "fields": {f"note_{i}": "x" * size for i in range(5)},
        }
    )


def test_a_state_larger_than_a_default_kafka_message_is_kept(settings: Settings, tmp_path: Path) -> None:
    # 300,000 characters per event (5 fields at the contract's 60,000-ish cap), some 1.6 MB of
    # state once sealed; each event alone stays under the guard's size limit
    lines = [collected(n, 60_000) for n in range(4)] + [collected(4, 10)]
    report = publish_lines(lines, settings)
    assert report.ok and report.published == 5
    worker = spawn_worker(settings, tmp_path / "worker.log")
    try:
        wait_caught_up(settings, timeout=120, proc=worker)
        assert worker.poll() is None
    finally:
        stop_worker(worker)
    records = latest_by_key(read_topic(settings, "records", timeout_s=30))
    assert sorted(records) == [f"s-big/r-{n}".encode() for n in range(5)]
    assert all(e.value is not None for e in records.values())
