"""The whole data flow on a real broker: publish → guard → fold → what downstream reads.

Each test gets topics of its own (a fresh prefix) and a real worker process; results are read
back with a plain kafka-python consumer, the way a downstream system would see them.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from processors.policy import DAY_MS
from schemas.codec import encode
from streams.plumbing.reading import read_entries, read_topic
from streams.plumbing.upstream import publish_lines
from streams.settings import Settings
from streams.worker.processes import spawn_worker, stop_worker, wait_caught_up

pytestmark = pytest.mark.integration

CARD = "4111 1111 1111 1111"
HEALTH_VALUE = "chronic-asthma-xq7"


def ev(type_: str, event_id: str, subject: str, when: str, **fields: object) -> dict:
    return {"type": type_, "event_id": event_id, "subject_id": subject, "occurred_at": when, "source": "test", **fields}


def collected(event_id: str, subject: str, record: str, when: str = "2026-03-01T10:00:00Z", **kw: object) -> dict:
    base = {
        "record_id": record,
        "category": "contact",
        "purpose": "inquiry",
        "legal_basis": "legitimate_interest",
        "fields": {"email": f"{subject}@example.org", "name": f"Name of {subject}"},
    }
    base.update(kw)
    return ev("DataCollected", event_id, subject, when, **base)


HISTORY = [
    # s-a: collect, consent, unsubscribe; nothing is deleted
    collected("a1", "s-a", "r1"),
    ev("ConsentGiven", "a2", "s-a", "2026-03-01T10:01:00Z", purpose="newsletter"),
    ev("Unsubscribed", "a3", "s-a", "2026-03-02T10:00:00Z", channel="email"),
    # s-b: verified erasure (request, then verification) removes both records and the consent
    collected("b1", "s-b", "r1"),
    collected("b2", "s-b", "r2", category="employment", purpose="recruitment"),
    ev("ConsentGiven", "b3", "s-b", "2026-03-01T10:02:00Z", purpose="marketing_email"),
    ev("ErasureRequested", "b4", "s-b", "2026-03-03T09:00:00Z", request_id="q-b"),
    ev("IdentityVerified", "b5", "s-b", "2026-03-03T09:30:00Z", request_id="q-b", method="email_link"),
    # s-c: an erasure never verified erases nothing
    collected("c1", "s-c", "r1"),
    ev("ErasureRequested", "c2", "s-c", "2026-03-03T09:00:00Z", request_id="q-c"),
    # s-d: verification first, request second: still an erasure
    collected("d1", "s-d", "r1"),
    ev("ConsentGiven", "d2", "s-d", "2026-03-01T10:03:00Z", purpose="newsletter"),
    ev("IdentityVerified", "d3", "s-d", "2026-03-04T09:00:00Z", request_id="q-d", method="id_document"),
    ev("ErasureRequested", "d4", "s-d", "2026-03-04T09:05:00Z", request_id="q-d"),
    # s-a again with an event id already seen but other content: dead-lettered, changes nothing
    collected("a1", "s-a", "r1", fields={"email": "changed@example.org"}),
    # and the very same event again: a redelivery, dropped without a word
    collected("a1", "s-a", "r1"),
    # refused by the guard
    collected("e1", "s-e", "r1", fields={"name": "Pay Er", "note": f"card {CARD} please"}),
    collected("f1", "s-f", "r1", fields={"name": "Ill Er", "health": HEALTH_VALUE}),
]

EXPECTED_RECORDS = {
    "s-a/r1": ["upsert"],
    "s-b/r1": ["upsert", "tombstone"],
    "s-b/r2": ["upsert", "tombstone"],
    "s-c/r1": ["upsert"],
    "s-d/r1": ["upsert", "tombstone"],
}


def lines(events: list[dict]) -> list[bytes]:
    return [orjson.dumps(e) for e in events]


def history_by_key(settings: Settings, topic: str) -> dict[str, list[str]]:
    seen: dict[str, list[str]] = {}
    for e in sorted(read_topic(settings, topic), key=lambda e: (e.partition, e.offset)):
        seen.setdefault((e.key or b"").decode(), []).append("tombstone" if e.tombstone else "upsert")
    return seen


@pytest.fixture
def worker(settings: Settings, tmp_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    proc = spawn_worker(settings, tmp_path / "worker.log")
    yield proc
    stop_worker(proc)


def cli(settings: Settings, *args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LIFECYCLE_")}
    env.update(settings.to_env())
    return subprocess.run([sys.executable, "-m", "streams.cli", *args], env=env, input=stdin, capture_output=True, timeout=120)


def test_publish_reports_bad_lines_by_number_and_publishes_the_rest(settings: Settings, tmp_path: Path) -> None:
    good = collected("p1", "s-p", "r1")
    path = tmp_path / "in.jsonl"
    path.write_bytes(
        b"\n".join(
            [
                orjson.dumps(good),
                b'{"type": "DataCollected", "event_id": "p2"',  # truncated JSON
                orjson.dumps(ev("Unsubscribed", "p3", "s-p", "2026-03-01T10:00:00Z")),  # no channel
                orjson.dumps(ev("ConsentGiven", "p4", "ada@example.org", "2026-03-01T10:00:00Z", purpose="newsletter")),
                orjson.dumps(ev("ConsentGiven", "p5", "s-p", "2026-03-01T10:00:00Z", purpose="newsletter")),
            ]
        )
    )
    done = cli(settings, "publish", str(path))
    err = done.stderr.decode()
    assert done.returncode == 1
    assert "line 2:" in err and "line 3:" in err and "line 4:" in err
    assert "line 1:" not in err and "line 5:" not in err
    assert "ada@example.org" not in err  # the reason never quotes the personal value
    assert "published 2 events" in done.stdout.decode()
    assert len(read_topic(settings, "ingest")) == 2

    ok = cli(
        settings,
        "publish",
        "-",
        stdin=orjson.dumps(ev("ConsentGiven", "p6", "s-p", "2026-03-01T10:00:00Z", purpose="newsletter")),
    )
    assert ok.returncode == 0, ok.stderr.decode()


def test_history_gives_exactly_the_upserts_and_tombstones_the_rules_imply(
    settings: Settings, worker: subprocess.Popen[bytes]
) -> None:
    report = publish_lines(lines(HISTORY), settings)
    assert report.ok and report.published == len(HISTORY)
    wait_caught_up(settings, proc=worker)

    assert history_by_key(settings, "records") == EXPECTED_RECORDS
    consent = history_by_key(settings, "consent")
    assert consent["s-a"] == ["upsert", "upsert"]  # granted, then withdrawn by the unsubscribe
    assert consent["s-b"][-1] == "tombstone"
    assert consent["s-d"][-1] == "tombstone"
    assert "s-c" not in consent

    # the duplicate event id changed nothing: s-a's record still holds the first email
    (entry,) = [e for e in read_topic(settings, "records") if e.key == b"s-a/r1"]
    assert entry.decoded()["fields"]["email"] == "s-a@example.org"

    snapshot = latest_consent(settings, "s-a")
    assert snapshot["purposes"]["newsletter"]["status"] == "withdrawn"
    assert snapshot["purposes"]["newsletter"]["event_id"] == "a3"

    rejections = [e.decoded() for e in read_topic(settings, "rejected")]
    rejected = {r["event_id"]: r for r in rejections}
    assert len(rejections) == len(rejected) == 3  # the identical redelivery of a1 is no rejection
    assert rejected["e1"]["reason"] == "payment_card" and rejected["e1"]["field"] == "fields.note"
    assert rejected["f1"]["reason"] == "special_category" and rejected["f1"]["field"] == "fields.health"
    # upstream hears that its second "a1" was not taken, instead of losing it without a word
    assert rejected["a1"]["reason"] == "conflicting_duplicate" and rejected["a1"]["field"] == "event_id"


def latest_consent(settings: Settings, subject: str) -> dict:
    last = None
    for e in read_topic(settings, "consent"):
        if e.key == subject.encode():
            last = e
    assert last is not None
    return last.decoded()


def all_topic_bytes(settings: Settings) -> dict[str, bytes]:
    """Keys and values of every topic of this test (ours and the worker's internal ones)."""
    from kafka import KafkaAdminClient

    admin = KafkaAdminClient(bootstrap_servers=settings.bootstrap)
    try:
        names = [t for t in admin.list_topics() if t.startswith((settings.topic_prefix, settings.app_id))]
    finally:
        admin.close()
    return {name: b"".join((e.key or b"") + (e.value or b"") for e in read_entries(settings.bootstrap, name)) for name in names}


def test_refused_values_appear_in_no_topic_but_ingest(settings: Settings, worker: subprocess.Popen[bytes]) -> None:
    assert publish_lines(lines(HISTORY), settings).ok
    wait_caught_up(settings, proc=worker)
    topics = all_topic_bytes(settings)
    assert any(t.endswith("lifecycle.ingest") for t in topics)
    assert len(topics) >= 6  # the project's topics plus the worker's changelog
    for name, data in topics.items():
        has_card = CARD.encode() in data
        has_health = HEALTH_VALUE.encode() in data
        if name.endswith("lifecycle.ingest"):
            assert has_card and has_health  # the test would prove nothing if they never got there
        else:
            assert not has_card and not has_health, f"forbidden value found in {name}"


def test_worker_restarted_mid_stream_resumes_without_second_or_lost_tombstones(settings: Settings, tmp_path: Path) -> None:
    first, second = HISTORY[:6], HISTORY[6:]
    proc = spawn_worker(settings, tmp_path / "w1.log")
    try:
        assert publish_lines(lines(first), settings).ok
        wait_caught_up(settings, proc=proc)
    finally:
        stop_worker(proc)
    assert publish_lines(lines(second), settings).ok
    proc = spawn_worker(settings, tmp_path / "w2.log")
    try:
        wait_caught_up(settings, proc=proc)
    finally:
        stop_worker(proc)
    # the erasure of s-b was verified after the restart: its state (records r1, r2) survived
    assert history_by_key(settings, "records") == EXPECTED_RECORDS


def test_consent_command_prints_the_snapshot_and_fails_clearly_for_unknown_subjects(
    settings: Settings, worker: subprocess.Popen[bytes]
) -> None:
    assert publish_lines(lines(HISTORY[:4]), settings).ok
    wait_caught_up(settings, proc=worker)
    done = cli(settings, "consent", "s-a")
    assert done.returncode == 0, done.stderr.decode()
    shown = orjson.loads(done.stdout)
    assert shown["purposes"]["newsletter"]["status"] == "withdrawn"
    assert shown["purposes"]["newsletter"]["event_id"] == "a3"
    assert shown["purposes"]["newsletter"]["at"] == "2026-03-02T10:00:00Z"

    # s-b is held (a record) but never said a word on consent: that is an answer, not an error
    silent = cli(settings, "consent", "s-b")
    assert silent.returncode == 0, silent.stderr.decode()
    assert orjson.loads(silent.stdout)["purposes"] == {}

    unknown = cli(settings, "consent", "s-nobody")
    assert unknown.returncode == 1
    err = unknown.stderr.decode()
    assert "s-nobody" in err and "never seen" in err and "Traceback" not in err


def test_demo_shows_tombstones_and_rejections(settings: Settings) -> None:
    done = cli(settings, "demo")
    out = done.stdout.decode()
    assert done.returncode == 0, out + done.stderr.decode()
    assert "TOMBSTONE" in out
    assert "payment_card" in out
    assert "4111" not in out  # a refused value is never shown


def raw_send(settings: Settings, events: list[dict]) -> None:
    """Avro messages straight onto ingest, as any upstream producer may write them, bypassing
    ``lifecycle publish`` and its contract check: the guard must hold the line on its own."""
    from streams.plumbing.upstream import producer

    prod = producer(settings)
    try:
        for e in events:
            prod.send(settings.topic("ingest"), key=e["subject_id"].encode(), value=encode(e))
        prod.flush()
    finally:
        prod.close()


def test_the_brokers_clock_decides_what_comes_from_the_future(settings: Settings, worker: subprocess.Popen[bytes]) -> None:
    from streams.plumbing.topics import describe_configs

    assert describe_configs(settings, settings.topic("ingest"))["message.timestamp.type"] == "LogAppendTime"
    now = int(time.time() * 1000)
    future = {"type": "DataCollected", "event_id": "fut-1", "subject_id": "s-fut", "occurred_at": now + 365 * DAY_MS,
              "source": "test", "record_id": "r1", "category": "contact", "purpose": "inquiry",
              "legal_basis": "legitimate_interest", "fields": {"email": "fut@example.org"}}  # fmt: skip
    within_skew = {**future, "event_id": "fut-2", "record_id": "r2", "occurred_at": now + 60_000}
    raw_send(settings, [future, within_skew])
    wait_caught_up(settings, proc=worker)

    (refused,) = [e.decoded() for e in read_topic(settings, "rejected")]
    assert (refused["event_id"], refused["reason"], refused["field"]) == ("fut-1", "future_time", "occurred_at")
    records = {e.key: e.decoded() for e in read_topic(settings, "records")}
    assert list(records) == [b"s-fut/r2"]  # a year ahead is refused, a minute ahead is drift
    (logged,) = [ev for e in read_topic(settings, "events") if (ev := e.decoded())["event_id"] == "fut-2"]
    # the log of record carries the broker's time of arrival, so a replay judges by it too
    assert now - 60_000 <= logged["received_at"] <= int(time.time() * 1000)
    assert logged["digest"]


def test_an_id_with_a_slash_is_refused_by_publish_and_dead_lettered_by_the_guard(
    settings: Settings, worker: subprocess.Popen[bytes], tmp_path: Path
) -> None:
    # "col/x" + "r" and "col" + "x/r" would share the key col/x/r on lifecycle.records
    one, other = collected("sl1", "col/x", "r"), collected("sl2", "col", "x/r")
    path = tmp_path / "slash.jsonl"
    path.write_bytes(b"\n".join(lines([one, other])))
    done = cli(settings, "publish", str(path))
    err = done.stderr.decode()
    assert done.returncode == 1 and "line 1: field 'subject_id'" in err and "line 2: field 'record_id'" in err
    parsed = [{**e, "occurred_at": 1772359200000} for e in (one, other)]  # what a raw producer sends
    raw_send(settings, parsed)
    wait_caught_up(settings, proc=worker)
    refused = sorted((r["event_id"], r["reason"], r["field"]) for r in (e.decoded() for e in read_topic(settings, "rejected")))
    assert refused == [("sl1", "invalid_id", "subject_id"), ("sl2", "invalid_id", "record_id")]
    assert read_topic(settings, "records") == []
