"""A record re-published unchanged (a nightly CRM sync) is told apart by the worker, which alone
holds the keys: it stamps the collection ``unchanged`` and seals it under the record's own data
keys, so the record keeps its retention clock and no key is minted for a copy of it."""

from __future__ import annotations

from pathlib import Path

import pytest
from support.worker import calls, line, memory_worker, messages, state_of

from processors.envelope import key_of
from schemas.codec import decode
from schemas.contract import validate
from streams.worker.loop import Worker


@pytest.fixture
def worker(tmp_path: Path) -> Worker:
    return memory_worker(tmp_path)


def crm(event_id: str, at: str, **fields: str) -> dict:
    return line(type="DataCollected", event_id=event_id, subject_id="s-1", occurred_at=at, source="crm",
                record_id="r-1", category="contact", purpose="crm", legal_basis="legitimate_interest",
                fields=fields or {"name": "Ada", "email": "ada@example.org"})  # fmt: skip


def logged(worker: Worker) -> dict[str, dict]:
    return {e["event_id"]: e for e in (decode(c[3]) for c in calls(worker) if c[1] == worker.t_events) if e is not None}


def keys_sent(worker: Worker) -> set[str]:
    return {c[2].decode() for c in calls(worker) if c[1] == worker.t_keys and c[2] and c[3] is not None}


def test_a_nightly_sync_of_an_unchanged_record_keeps_its_clock_and_mints_no_key(worker: Worker) -> None:
    worker.process(messages(worker, [crm("e-1", "2026-01-10T02:00:00Z")]))
    deadline = state_of(worker, "s-1")["records"]["r-1"]["retention_deadline"]
    worker.process(messages(worker, [crm(f"e-{n}", f"2026-01-{10 + n}T02:00:00Z") for n in range(2, 6)], first_offset=1))
    assert state_of(worker, "s-1")["records"]["r-1"]["retention_deadline"] == deadline
    log = logged(worker)
    assert [log[f"e-{n}"]["unchanged"] for n in range(1, 6)] == [False, True, True, True, True]
    assert {key_of(v) for n in range(2, 6) for v in log[f"e-{n}"]["fields"].values()} == {"s-1/e-1"}
    assert keys_sent(worker) == {"s-1/e-1"}  # one key, the record's: nothing left to destroy later
    # and nothing went downstream: the record did not change
    assert sum(1 for c in calls(worker) if c[1] == worker.t_records) == 1


def test_a_changed_record_is_a_new_collection_whatever_upstream_stamps(worker: Worker) -> None:
    worker.process(messages(worker, [crm("e-1", "2026-01-10T02:00:00Z")]))
    deadline = state_of(worker, "s-1")["records"]["r-1"]["retention_deadline"]
    claimed = validate({**crm("e-2", "2026-03-10T02:00:00Z", name="Ada", email="ada@new.example.org"), "unchanged": True})
    worker.process(messages(worker, [claimed], first_offset=1))
    assert logged(worker)["e-2"]["unchanged"] is False  # the worker's to say
    assert state_of(worker, "s-1")["records"]["r-1"]["retention_deadline"] > deadline
    assert keys_sent(worker) == {"s-1/e-1", "s-1/e-2"}


def test_a_redelivered_sync_is_a_duplicate_and_a_reused_id_with_other_content_is_not(worker: Worker) -> None:
    worker.process(messages(worker, [crm("e-1", "2026-01-10T02:00:00Z"), crm("e-2", "2026-01-11T02:00:00Z")]))
    worker.process(messages(worker, [crm("e-2", "2026-01-11T02:00:00Z")], first_offset=2))
    rejected = [decode(c[3]) for c in calls(worker) if c[1] == worker.t_rejected]
    assert rejected == []
    worker.process(messages(worker, [crm("e-2", "2026-01-11T02:00:00Z", name="Eve")], first_offset=3))
    rejected = [decode(c[3]) for c in calls(worker) if c[1] == worker.t_rejected]
    assert [r["reason"] for r in rejected if r] == ["conflicting_duplicate"]
