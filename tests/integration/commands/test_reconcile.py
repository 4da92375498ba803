"""A sink away longer than the tombstones are kept still deletes, on the real broker.

The feeds keep a tombstone one second after the cleaner ran, so a sink stopped across an
erasure comes back to a feed where the erased keys are simply absent. It must notice that it
was away too long, reconcile its copy with the feed from the start, and acknowledge the
deletions so the pipeline completes the erasure, even when it is killed right after the
reconcile's transaction committed and before its acknowledgements went out (no tombstone will
bring those deletions again, so the sink must remember the acknowledgements it owes).
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

from processors.messages import RECORDS, feed
from streams.commands.sink import SqliteSink, run_sink
from streams.plumbing.reading import read_topic
from streams.plumbing.upstream import publish_lines
from streams.settings import Settings, packaged_policy_text
from streams.worker.processes import spawn_worker, stop_worker, wait_caught_up

pytestmark = pytest.mark.integration

CONSUMER = "crm-mirror"
ERASED_KEYS = {b"s-grace/r1", b"s-grace/r2"}


def ev(type_: str, event_id: str, subject: str, **fields: object) -> dict:
    when = fields.pop("when", "2026-03-01T10:00:00Z")
    return {"type": type_, "event_id": event_id, "subject_id": subject, "occurred_at": when, "source": "test", **fields}


def collected(event_id: str, subject: str, record: str, name: str) -> dict:
    return ev(
        "DataCollected", event_id, subject, record_id=record, category="contact", purpose="inquiry",
        legal_basis="legitimate_interest", fields={"name": name},
    )  # fmt: skip


def publish(settings: Settings, events: list[dict]) -> None:
    assert publish_lines([orjson.dumps(e) for e in events], settings).ok


@pytest.fixture
def brief(settings: Settings, tmp_path: Path) -> Settings:
    """Feeds that keep a tombstone one second after cleaning and roll every second, and a
    policy whose only consumer is the CRM copy."""
    policy = packaged_policy_text()
    path = tmp_path / "policy.toml"
    path.write_text(policy[: policy.index("[consumers.mailer]")])
    fast = dataclasses.replace(
        settings,
        topic_prefix=settings.topic_prefix + "b.",
        tombstone_retention_ms=1_000,
        compaction_lag_ms=1_000,
        policy_file=path,
    )
    from streams.plumbing.topics import ensure_topics

    ensure_topics(fast)
    time.sleep(1.0)  # creation is acknowledged a moment before the topics are served
    return fast


@pytest.fixture
def worker(brief: Settings, tmp_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    proc = spawn_worker(brief, tmp_path / "worker.log")
    yield proc
    stop_worker(proc)


def grace_rows(db: Path) -> int:
    with sqlite3.connect(db) as conn:
        (n,) = conn.execute("SELECT count(*) FROM records WHERE subject_id = 's-grace'").fetchone()
    conn.close()
    return int(n)


def completed(settings: Settings) -> list[dict]:
    return [d for e in read_topic(settings, "events") if (d := e.decoded()) and d["type"] == "ErasureCompleted"]


KILLED_AFTER_THE_RECONCILE_COMMITTED = """
import os, sys
from streams.settings import Settings
from streams.commands.sink import SqliteSink, run_sink

class Killed(SqliteSink):
    def commit(self, offsets):
        super().commit(offsets)
        if self.deleted:
            os._exit(9)  # the deletions are durable, their acknowledgements not sent

    def delete(self, kind, key):
        super().delete(kind, key)
        self.deleted = True

    deleted = False

run_sink(Settings.from_env(), Killed(sys.argv[1]), sys.argv[2], until_idle=True)
"""


@pytest.mark.parametrize("killed", [False, True], ids=["reconciled", "killed-after-commit"])
def test_a_sink_away_past_the_tombstones_reconciles_and_acknowledges(
    brief: Settings, worker: subprocess.Popen[bytes], tmp_path: Path, killed: bool
) -> None:
    publish(
        brief,
        [
            collected("g1", "s-grace", "r1", "Grace"),
            collected("g2", "s-grace", "r2", "Grace again"),
            collected("a1", "s-alan", "r1", "Alan"),
        ],
    )
    wait_caught_up(brief, proc=worker)
    db = tmp_path / "crm.db"
    with SqliteSink(db) as sink:
        run_sink(brief, sink, CONSUMER, until_idle=True)
    assert grace_rows(db) == 2

    # the sink is away: the erasure runs, and traffic rolls the feed until the tombstones are gone
    publish(
        brief,
        [
            ev("ErasureRequested", "g3", "s-grace", when="2026-03-03T09:00:00Z", request_id="q-grace"),
            ev("IdentityVerified", "g4", "s-grace", when="2026-03-03T09:30:00Z", request_id="q-grace", method="email_link"),
        ],
    )
    topic = feed(RECORDS, CONSUMER)
    keys: set[bytes] = set(ERASED_KEYS)
    round_ = 0
    deadline = time.monotonic() + 60
    while keys & ERASED_KEYS and time.monotonic() < deadline:
        publish(brief, [collected(f"t{round_}-{i}", f"s-traffic-{round_}-{i}", "r1", "Traffic") for i in range(8)])
        round_ += 1
        time.sleep(2.0)
        keys = {e.key for e in read_topic(brief, topic) if e.key is not None}
    assert not keys & ERASED_KEYS, "the cleaner did not drop the tombstones in time"
    wait_caught_up(brief, proc=worker)
    assert completed(brief) == []  # the erasure waits for the CRM copy

    if killed:
        env = {k: v for k, v in os.environ.items() if not k.startswith("LIFECYCLE_")} | brief.to_env()
        script = [sys.executable, "-c", KILLED_AFTER_THE_RECONCILE_COMMITTED, str(db), CONSUMER]
        died = subprocess.run(script, env=env, capture_output=True, text=True, timeout=120)
        assert died.returncode == 9, died.stderr[-2000:]
        assert grace_rows(db) == 0  # reconciled and committed
        assert [a for e in read_topic(brief, "acks") if (a := e.decoded()) and a["subject_id"] == "s-grace"] == []

    started = time.monotonic()
    with SqliteSink(db) as sink:
        report = run_sink(brief, sink, CONSUMER, until_idle=True)
    print(f"reconciled after {round_} traffic rounds in {time.monotonic() - started:.1f} s: {report.summary(CONSUMER)}")
    assert grace_rows(db) == 0
    if killed:  # not behind any more; what it owed is sent
        assert (report.reconciled, report.acks_resent) == (0, 2)
    else:
        assert (report.reconciled, report.acks_resent) == (2, 0)
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT count(*) FROM owed_acks").fetchone() == (0,)
    conn.close()
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT count(*) FROM records WHERE subject_id = 's-alan'").fetchone() == (1,)
    conn.close()

    acks = [d for e in read_topic(brief, "acks") if (d := e.decoded()) and d["subject_id"] == "s-grace"]
    assert sorted((a["consumer"], a["record_id"], a["request_id"]) for a in acks) == [
        (CONSUMER, "r1", ""),
        (CONSUMER, "r2", ""),
    ]

    deadline = time.monotonic() + 30
    done: list[dict] = []
    while not done and time.monotonic() < deadline:
        done = completed(brief)
        time.sleep(0.5)
    assert [(c["subject_id"], c["request_id"], c["consumers"]) for c in done] == [("s-grace", "q-grace", [CONSUMER])]

    # a sink back in step is not reconciled again
    with SqliteSink(db) as sink:
        again = run_sink(brief, sink, CONSUMER, until_idle=True)
    assert again.reconciled == 0
