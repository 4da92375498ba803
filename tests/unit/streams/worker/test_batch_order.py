"""The order in which the worker sends a batch's messages, which is what a crash can cut.

No broker here on purpose: what is checked is the sequence of produce and flush calls the
worker makes, recorded by a stand-in for its producer, and no broker could show it. That the
messages arrive and fold right is for the integration tests (``test_worker_rules.py``,
``test_failover.py``), and what a kill after each step leaves is ``test_crash_points.py``'s; this
is the promise, read off the sequence itself, that no prefix of it holds a log entry whose data
key is not on the broker, or a subject's state ahead of the outputs it claims. The views read
the tables between batches; what they answer while a batch waits is here too.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from support.worker import calls, line, memory_worker, messages

from processors.envelope import key_of
from schemas.codec import decode
from streams.plumbing.topics import changelog_topic
from streams.worker.loop import Worker


@pytest.fixture
def worker(tmp_path: Path) -> Worker:
    return memory_worker(tmp_path)


def test_a_log_entry_leaves_only_after_the_data_key_it_is_sealed_under(worker: Worker) -> None:
    events = [
        line(type="DataCollected", event_id=f"e-{i}", subject_id=f"s-{i % 3}", occurred_at="2026-03-01T10:00:00Z",
             source="web", record_id=f"r-{i}", category="contact", purpose="inquiry",
             legal_basis="legitimate_interest", fields={"name": f"Name {i}", "email": f"n{i}@example.com"})
        for i in range(6)
    ]  # fmt: skip
    worker.process(messages(worker, events))
    sent = calls(worker)
    flushes = [i for i, c in enumerate(sent) if c[0] == "flush"]
    key_sent = {c[2].decode(): i for i, c in enumerate(sent) if c[1] == worker.t_keys and c[3] is not None}  # type: ignore[union-attr]
    entries = [(i, decode(c[3])) for i, c in enumerate(sent) if c[1] == worker.t_events]
    assert len(entries) == 6 and len(key_sent) == 6
    for i, entry in entries:
        assert entry is not None
        needed = {key_of(v) for v in entry["fields"].values()}
        for key_id in needed:
            assert key_id in key_sent, f"{entry['event_id']} is sealed under a key never sent"
            # a flush between the key and the entry: the key was acknowledged first
            assert any(key_sent[key_id] < f < i for f in flushes), f"{entry['event_id']} sent before its key was acknowledged"


def test_a_state_leaves_only_after_everything_it_claims(worker: Worker) -> None:
    events = [
        line(type="ConsentGiven", event_id="c-1", subject_id="s-1", occurred_at="2026-03-01T10:00:00Z",
             source="web", purpose="newsletter"),
        line(type="DataCollected", event_id="e-1", subject_id="s-1", occurred_at="2026-03-01T10:01:00Z",
             source="web", record_id="r-1", category="contact", purpose="newsletter",
             legal_basis="consent", fields={"email": "s1@example.com"}),
    ]  # fmt: skip
    worker.process(messages(worker, events))
    sent = calls(worker)
    state_at = min(i for i, c in enumerate(sent) if c[1] == changelog_topic(worker.settings))
    last_output = max(
        i for i, c in enumerate(sent) if c[1] in (worker.t_events, worker.t_records, worker.t_consent, worker.t_keys)
    )
    assert any(last_output < f < state_at for f in (i for i, c in enumerate(sent) if c[0] == "flush"))
    assert sent[-1][0] == "flush"  # and the batch returns with its states acknowledged


def test_a_view_asked_while_a_batch_waits_for_the_broker_says_so_instead_of_hanging(
    worker: Worker, monkeypatch: pytest.MonkeyPatch
) -> None:
    """During a broker outage a batch holds the tables until the broker is back; a view asked
    meanwhile answers 503 with the reason within seconds, rather than the caller's timeout
    reporting that no worker answers."""
    import threading

    import orjson

    import streams.worker.loop as worker_module

    worker.process(messages(worker, [line(type="ConsentGiven", event_id="c-1", subject_id="s-1",
                                          occurred_at="2026-03-01T10:00:00Z", source="web", purpose="newsletter")]))  # fmt: skip
    assert worker.view("s-1", "consent")[0] == 200  # type: ignore[index]
    monkeypatch.setattr(worker_module, "VIEW_PATIENCE", 0.2, raising=False)
    held, release = threading.Event(), threading.Event()

    def batch_waiting_for_the_broker() -> None:
        with worker.lock:
            held.set()
            release.wait(10)

    thread = threading.Thread(target=batch_waiting_for_the_broker)
    thread.start()
    held.wait(5)
    started = time.monotonic()
    try:
        status, body = worker.view("s-1", "consent")  # type: ignore[misc]
    finally:
        release.set()
        thread.join()
    assert status == 503 and orjson.loads(body)["reason"] == "busy"
    assert time.monotonic() - started < 2


def test_consent_views_tell_a_silent_subject_from_an_erased_or_unknown_one(worker: Worker) -> None:
    import orjson

    at = "2026-03-01T10:00:00Z"
    worker.process(messages(worker, [
        line(type="DataCollected", event_id="e-1", subject_id="s-quiet", occurred_at=at, source="web", record_id="r-1",
             category="contact", purpose="inquiry", legal_basis="legitimate_interest", fields={"name": "Q"}),
        line(type="ConsentGiven", event_id="e-2", subject_id="s-gone", occurred_at=at, source="web", purpose="newsletter"),
        line(type="ErasureRequested", event_id="e-3", subject_id="s-gone", occurred_at=at, source="web", request_id="q-1"),
        line(type="IdentityVerified", event_id="e-4", subject_id="s-gone", occurred_at=at, source="web", request_id="q-1",
             method="email_link"),
    ]))  # fmt: skip
    status, body = worker.view("s-quiet", "consent")  # type: ignore[misc]
    assert status == 200 and orjson.loads(body)["purposes"] == {}  # held, never a word on consent
    status, body = worker.view("s-gone", "consent")  # type: ignore[misc]
    assert status == 404 and orjson.loads(body)["reason"] == "erased"
    status, body = worker.view("s-nobody", "consent")  # type: ignore[misc]
    assert status == 404 and orjson.loads(body)["reason"] == "never_seen"
