"""Erasure that holds everywhere, on the real broker: the log of record, the compacted topics,
the worker's state, two downstream SQLite copies, and the auditor's replay.

One history runs through a real worker and two real sinks (the policy registers exactly
those two consumers). After the erasure, traffic goes on as it would in production, which is
what rolls the compacted topics' segments so the log cleaner can drop the old values; the
test then reads the raw bytes of every partition file of the broker and of the worker's state
directory, and every message still served, looking for the erased subject's personal values.
"""

from __future__ import annotations

import dataclasses
import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from streams.commands.sink import SqliteSink, run_sink
from streams.plumbing.reading import read_entries, read_topic
from streams.plumbing.upstream import publish_lines
from streams.settings import Settings, packaged_policy_text
from streams.worker.processes import spawn_worker, stop_worker, wait_caught_up

pytestmark = pytest.mark.integration

ERASED = {"email": "grace.erased@example.org", "name": "Grace Erasedperson", "phone": "+44 20 7946 0999"}
KEPT = {"email": "alan.kept@example.org", "name": "Alan Keptperson"}
CONSUMERS = ("crm-mirror", "mailer")


def ev(type_: str, event_id: str, subject: str, when: str, **fields: object) -> dict:
    return {"type": type_, "event_id": event_id, "subject_id": subject, "occurred_at": when, "source": "test", **fields}


def collected(event_id: str, subject: str, record: str, fields: dict, when: str = "2026-03-01T10:00:00Z", **kw: object) -> dict:
    base = {
        "record_id": record,
        "category": "contact",
        "purpose": "inquiry",
        "legal_basis": "legitimate_interest",
        "fields": fields,
    }
    base.update(kw)
    return ev("DataCollected", event_id, subject, when, **base)


HISTORY = [
    collected("g1", "s-grace", "r1", ERASED),
    ev("ConsentGiven", "g2", "s-grace", "2026-03-01T10:01:00Z", purpose="newsletter"),
    collected(
        "g3",
        "s-grace",
        "r2",
        {"email": ERASED["email"]},
        when="2026-03-01T10:02:00Z",
        purpose="newsletter",
        legal_basis="consent",
    ),
    collected("a1", "s-alan", "r1", KEPT),
    ev("ConsentGiven", "a2", "s-alan", "2026-03-01T10:01:00Z", purpose="newsletter"),
    ev("ErasureRequested", "g4", "s-grace", "2026-03-03T09:00:00Z", request_id="q-grace"),
    ev("IdentityVerified", "g5", "s-grace", "2026-03-03T09:30:00Z", request_id="q-grace", method="email_link"),
]


def lines(events: list[dict]) -> list[bytes]:
    return [orjson.dumps(e) for e in events]


@pytest.fixture
def quick(settings: Settings, tmp_path: Path) -> Settings:
    """Topics that forget fast (ingest after 5 s, overwritten values within 3 s of a roll) and
    a policy registering the two consumers of this test."""
    policy = packaged_policy_text()
    cut = policy.index("[consumers.warehouse]")
    path = tmp_path / "policy.toml"
    path.write_text(policy[:cut])
    fast = dataclasses.replace(
        settings,
        topic_prefix=settings.topic_prefix + "q.",
        ingest_retention_ms=5_000,
        compaction_lag_ms=3_000,
        policy_file=path,
    )
    from streams.plumbing.topics import ensure_topics

    ensure_topics(fast)
    time.sleep(1.0)  # creation is acknowledged a moment before the topics are served
    return fast


@pytest.fixture
def worker(quick: Settings, tmp_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    proc = spawn_worker(quick, tmp_path / "worker.log")
    yield proc
    stop_worker(proc)


def sink_all(settings: Settings, tmp_path: Path) -> dict[str, Path]:
    paths = {}
    for name in CONSUMERS:
        path = tmp_path / f"{name}.db"
        with SqliteSink(path) as sink:
            run_sink(settings, sink, name, until_idle=True)
        paths[name] = path
    return paths


def traffic(settings: Settings, round_: int) -> None:
    """Other subjects going about their business: new appends roll the compacted segments, of
    every consumer's feeds too (a feed nobody writes to keeps its last segment, and the cleaner
    never rewrites the segment a topic is appending to)."""
    batch = []
    for i in range(24):
        sid = f"s-traffic-{round_}-{i}"
        batch.append(collected(f"t{round_}-{i}", sid, "r1", {"name": f"Traffic {i}"}))
        batch.append(ev("ConsentGiven", f"t{round_}-{i}c", sid, "2026-03-01T10:00:00Z", purpose="newsletter"))
        batch.append(
            collected(
                f"t{round_}-{i}n", sid, "r2", {"email": f"traffic-{i}@example.org"},
                when="2026-03-01T10:02:00Z", purpose="newsletter", legal_basis="consent",
            )
        )  # fmt: skip
    assert publish_lines(lines(batch), settings).ok


def needles() -> list[bytes]:
    return [v.encode("utf-8") for v in ERASED.values()]


def scan_files(root: Path, prefixes: tuple[str, ...]) -> dict[str, list[str]]:
    """file -> which erased values its raw bytes still hold (topic dirs by prefix, or every file)."""
    hits: dict[str, list[str]] = {}
    # os.walk, not rglob: the broker deletes other tests' topics' directories (renamed
    # "*-delete") while this walks, and a file gone from the disk holds nothing any more
    for top, _, names in os.walk(root):
        for name in sorted(names):
            path = Path(top) / name
            rel = path.relative_to(root)
            if prefixes and not rel.parts[0].startswith(prefixes):
                continue
            try:
                data = path.read_bytes()
            except FileNotFoundError:
                continue
            found = [n.decode() for n in needles() if n in data]
            if found:
                hits[str(rel)] = found
    return hits


def scan_served(settings: Settings) -> dict[str, int]:
    """topic -> messages still served that hold an erased value (key, value or headers)."""
    from kafka import KafkaAdminClient

    admin = KafkaAdminClient(bootstrap_servers=settings.bootstrap)
    try:
        topics = [t for t in admin.list_topics() if t.startswith((settings.topic_prefix, settings.app_id))]
    finally:
        admin.close()
    hits: dict[str, int] = {}
    for topic in topics:
        for e in read_entries(settings.bootstrap, topic, timeout_s=20):
            blob = (e.key or b"") + (e.value or b"")
            if any(n in blob for n in needles()):
                hits[topic] = hits.get(topic, 0) + 1
    return hits


def test_erasure_leaves_no_personal_value_anywhere_and_is_proven_by_replay(
    quick: Settings, worker: subprocess.Popen[bytes], tmp_path: Path, kafka_data_dir: Path | None
) -> None:
    assert publish_lines(lines(HISTORY), quick).ok
    wait_caught_up(quick, proc=worker)

    # the log of record holds ciphertext only, from the moment the guard appended it
    raw_events = b"".join(e.value or b"" for e in read_topic(quick, "events"))
    assert not any(n in raw_events for n in needles())

    # two downstream copies honour the tombstones and acknowledge them
    dbs = sink_all(quick, tmp_path)
    for name, path in dbs.items():
        with sqlite3.connect(path) as db:
            assert db.execute("SELECT count(*) FROM records WHERE subject_id = 's-grace'").fetchone() == (0,), name
            assert db.execute("SELECT count(*) FROM consent WHERE subject_id = 's-grace'").fetchone() == (0,), name
            # each copy holds what its feeds carry: Alan's inquiry for the CRM, his newsletter consent for the mailer
            kept = db.execute("SELECT count(*) FROM records WHERE subject_id = 's-alan'").fetchone()
            assert kept == ((1,) if name == "crm-mirror" else (0,)), name
            if name == "mailer":
                assert db.execute("SELECT count(*) FROM consent WHERE subject_id = 's-alan'").fetchone() == (1,), name
    acks = [e.decoded() for e in read_topic(quick, "acks")]
    assert {a["consumer"] for a in acks if a and a["subject_id"] == "s-grace"} == set(CONSUMERS)

    # ... which completes the erasure
    deadline = time.monotonic() + 60
    completed: list[dict] = []
    while not completed and time.monotonic() < deadline:
        completed = [d for e in read_topic(quick, "events") if (d := e.decoded()) and d["type"] == "ErasureCompleted"]
        time.sleep(0.5)
    assert [(c["subject_id"], c["request_id"], sorted(c["consumers"])) for c in completed] == [
        ("s-grace", "q-grace", sorted(CONSUMERS))
    ]

    # traffic goes on; the cleaner and the retention check do their work
    prefixes = (quick.topic_prefix, quick.app_id)
    disk: dict[str, list[str]] = {"not scanned": []}
    served: dict[str, int] = {"not scanned": 0}
    round_ = 0
    deadline = time.monotonic() + 150
    while time.monotonic() < deadline:
        traffic(quick, round_)
        round_ += 1
        time.sleep(4.0)
        served = scan_served(quick)
        disk = scan_files(kafka_data_dir, prefixes) if kafka_data_dir is not None else {}
        if not served and not disk:
            break
    wait_caught_up(quick, proc=worker)
    state_dir = quick.worker_dir
    local = scan_files(state_dir, ())
    print(
        f"raw-bytes scan after erasure: {round_} traffic rounds; served hits {served}; broker files {disk}; worker state {local}"
    )
    assert served == {}
    assert disk == {}
    assert local == {}
    assert kafka_data_dir is None or any(kafka_data_dir.iterdir())

    # the auditor's replay re-derives every decision and proves the erasure from the log alone
    env = {k: v for k, v in os.environ.items() if not k.startswith("LIFECYCLE_")}
    env.update(quick.to_env())
    done = subprocess.run([sys.executable, "-m", "streams.cli", "replay"], env=env, capture_output=True, timeout=300)
    report = orjson.loads(done.stdout)
    assert done.returncode == 0, report["mismatches"]
    assert report["mismatch_count"] == 0 and report["erasures"] == 1 and report["erasures_proven"] == 1
    assert report["decisions_rederived"] == report["decisions_recorded"] - report["duplicate_decisions"]

    trail = subprocess.run(
        [sys.executable, "-m", "streams.cli", "replay", "--subject", "s-grace"], env=env, capture_output=True, timeout=300
    )
    assert trail.returncode == 0, trail.stderr.decode()
    doc = orjson.loads(trail.stdout)
    collected_fields = [t["fields"] for t in doc["trail"] if t["type"] == "DataCollected"]
    assert collected_fields and all(set(f.values()) == {"[erased]"} for f in collected_fields)
    assert not any(n in trail.stdout for n in needles())
