"""The downstream sink on a real broker: rows, tombstones, acks, and crashes at the worst moment.

Values and tombstones are written straight to a consumer's own feeds of the test
(``lifecycle.records.<consumer>``, ``lifecycle.consent.<consumer>``; no worker), the sink runs
into a SQLite file, and what it acknowledged is read back from ``lifecycle.acks`` the way the
pipeline reads it.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from kafka import KafkaProducer

import streams
from processors.messages import feed
from schemas.codec import encode
from streams.commands.sink import SqliteSink, main_sink, run_sink
from streams.plumbing.reading import decoded_events, read_topic
from streams.settings import Settings

ROOT = Path(streams.__file__).resolve().parents[1]  # the checkout, for child processes
T0 = 1_770_000_000_000
SECRET = "Ada Lovelace, 12 Analytical Way"  # stands for personal data: must never reach a log


def record(subject: str, rid: str, version: int = 1) -> dict[str, Any]:
    return {
        "type": "Record",
        "subject_id": subject,
        "record_id": rid,
        "category": "contact",
        "purpose": "inquiry",
        "legal_basis": "legitimate_interest",
        "fields": {"name": SECRET, "version": str(version)},
        "collected_at": T0,
        "retention_deadline": T0 + 365 * 86_400_000,
        "restricted": False,
        "updated_at": T0 + version,
        "caused_by": f"ev-{subject}-{rid}-{version}",
        "source": "web_form",
        "origin": "",
        "policy": "policy-1",
    }


def consent(subject: str) -> dict[str, Any]:
    return {
        "type": "ConsentSnapshot",
        "subject_id": subject,
        "purposes": {
            "newsletter": {
                "status": "granted",
                "legal_basis": "consent",
                "at": T0,
                "event_id": "c1",
                "source": "web_form",
                "meaning": "a1b2c3",
            }
        },
        "stopped": {},
        "updated_at": T0,
        "caused_by": "c1",
    }


Message = tuple[str, str, "dict[str, Any] | bytes | None", "str | None"]  # kind, key, value, request_id


def produce(settings: Settings, messages: list[Message], to: tuple[str, ...] = ("crm-mirror",)) -> None:
    """Each message to the feed of its kind of every consumer in ``to`` ("": the complete feed)."""
    producer = KafkaProducer(bootstrap_servers=settings.bootstrap.split(","))
    try:
        futures = []
        for kind, key, value, request_id in messages:
            raw = value if isinstance(value, bytes) else encode(value)
            headers = [("request_id", request_id.encode())] if request_id is not None else []
            for consumer in to:
                topic = settings.topic(feed(kind, consumer) if consumer else kind)
                futures.append(producer.send(topic, key=key.encode(), value=raw, headers=headers))
        producer.flush()
        for fut in futures:
            fut.get(timeout=10)
    finally:
        producer.close()


def rows(db: Path) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, Any]]]:
    with sqlite3.connect(db) as conn:
        records = {k: json.loads(v) for k, v in conn.execute("SELECT key, value FROM records")}
        consents = {k: json.loads(v) for k, v in conn.execute("SELECT subject_id, value FROM consent")}
    conn.close()
    return records, consents


def acks(settings: Settings) -> list[dict[str, Any]]:
    found = list(decoded_events(read_topic(settings, "acks")))
    assert all(e["type"] == "ErasureAcknowledged" for e in found)
    return found


def stripped(value: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in value.items() if k != "type"}


HISTORY: list[Message] = [
    ("records", "s1/r1", record("s1", "r1"), None),
    ("records", "s1/r2", record("s1", "r2"), None),
    ("records", "s2/r1", record("s2", "r1"), None),
    ("records", "s3/r1", record("s3", "r1"), None),
    ("records", "s3/r1", record("s3", "r1", version=2), None),
    ("consent", "s1", consent("s1"), None),
    ("consent", "s2", consent("s2"), None),
    ("records", "s1/r1", None, "req-1"),
    ("records", "s2/r1", None, None),
    ("consent", "s2", None, "req-2"),
]
TOMBSTONES = {  # (kind, key) → what its ack must say: subject_id, record_id, request_id
    ("records", "s1/r1"): ("s1", "r1", "req-1"),
    ("records", "s2/r1"): ("s2", "r1", ""),
    ("consent", "s2"): ("s2", "", "req-2"),
}
LIVE_RECORDS = {"s1/r2": record("s1", "r2"), "s3/r1": record("s3", "r1", version=2)}
LIVE_CONSENT = {"s1": consent("s1")}


def assert_live(db: Path) -> None:
    records, consents = rows(db)
    assert records == {k: stripped(v) for k, v in LIVE_RECORDS.items()}
    assert consents == {k: stripped(v) for k, v in LIVE_CONSENT.items()}


def assert_acked_once(settings: Settings, names: list[str]) -> None:
    found = acks(settings)
    assert len(found) == len(TOMBSTONES) * len(names)  # messages, not just distinct ids
    assert len({e["event_id"] for e in found}) == len(found)
    got = Counter((e["consumer"], e["subject_id"], e["record_id"], e["request_id"]) for e in found)
    assert got == Counter((n, *want) for n in names for want in TOMBSTONES.values())
    for e in found:
        assert e["source"] == e["consumer"]
        assert e["event_id"].startswith(f"ack:{e['consumer']}:{settings.topic_prefix}lifecycle.")
        assert e["event_id"].split(":")[2].endswith(f".{e['consumer']}")  # read on its own feed
        assert abs(e["occurred_at"] - time.time() * 1000) < 120_000


# ---------------------------------------------------------------------------------------------
# SqliteSink alone


# ---------------------------------------------------------------------------------------------
# On the broker


@pytest.mark.integration
def test_sink_applies_upserts_and_tombstones_and_acks_each(
    settings: Settings, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    garbage = b"\xc3\x01" + b"\x00" * 8 + SECRET.encode()
    produce(settings, [*HISTORY, ("records", "s9/r9", garbage, None)])
    db = tmp_path / "crm.db"

    with caplog.at_level(logging.WARNING, logger="streams.commands.sink"), SqliteSink(db) as sink:
        report = run_sink(settings, sink, "crm-mirror", until_idle=True)

    assert (report.upserts, report.deletes, report.acks_sent, report.skipped) == (7, 3, 3, 1)
    assert_live(db)
    assert_acked_once(settings, ["crm-mirror"])
    skipped = [r.getMessage() for r in caplog.records if r.name == "streams.commands.sink"]
    assert len(skipped) == 1 and "lifecycle.records.crm-mirror[" in skipped[0] and "unknown schema fingerprint" in skipped[0]
    assert SECRET not in caplog.text and "s9" not in caplog.text

    # A restart resumes where the sink stopped: nothing applied twice, nothing re-acknowledged.
    with SqliteSink(db) as sink:
        again = run_sink(settings, sink, "crm-mirror", until_idle=True)
    assert (again.upserts, again.deletes, again.acks_sent) == (0, 0, 0)

    # ... and picks up what arrived meanwhile.
    produce(settings, [("records", "s1/r2", None, "req-3")])
    with SqliteSink(db) as sink:
        later = run_sink(settings, sink, "crm-mirror", until_idle=True)
    assert (later.upserts, later.deletes, later.acks_sent) == (0, 1, 1)
    assert rows(db)[0].keys() == {"s3/r1"}
    assert [(e["subject_id"], e["record_id"], e["request_id"]) for e in acks(settings)][-1] == ("s1", "r2", "req-3")


CRASHING_SINK = """
import os, sys
from streams.settings import Settings
from streams.commands.sink import SqliteSink, run_sink

where = sys.argv[3]

class CrashingSink(SqliteSink):
    deleted = False

    def delete(self, kind, key):
        super().delete(kind, key)
        self.deleted = True
        if where == "before-commit":
            os._exit(9)

    def commit(self, offsets):
        super().commit(offsets)
        if where == "after-commit" and self.deleted:
            os._exit(9)

run_sink(Settings.from_env(), CrashingSink(sys.argv[1]), sys.argv[2], until_idle=True)
sys.exit(0)
"""


@pytest.mark.integration
@pytest.mark.parametrize("where", ["before-commit", "after-commit"])
def test_a_crash_never_loses_a_deletion_nor_acks_it_twice(settings: Settings, tmp_path: Path, where: str) -> None:
    upserts = [m for m in HISTORY if m[2] is not None]
    produce(settings, upserts)
    db = tmp_path / "crm.db"
    with SqliteSink(db) as sink:
        run_sink(settings, sink, "crm-mirror", until_idle=True)
    produce(settings, [m for m in HISTORY if m[2] is None])

    script = tmp_path / "crashing_sink.py"
    script.write_text(CRASHING_SINK)
    env = {**os.environ, **settings.to_env(), "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, str(script), str(db), "crm-mirror", where],
        check=False,
        env=env,
        cwd=ROOT,
        capture_output=True,
        timeout=60,
    )
    assert done.returncode == 9, done.stderr.decode(errors="replace")[-2000:]
    records, consents = rows(db)
    if where == "before-commit":  # the tombstoned rows are all still there, and no ack was sent
        assert {"s1/r1", "s2/r1"} <= records.keys() and "s2" in consents
    else:  # the batch is durable, its acks were never sent
        assert records.keys() == LIVE_RECORDS.keys()
    assert acks(settings) == []

    with SqliteSink(db) as sink:
        report = run_sink(settings, sink, "crm-mirror", until_idle=True)
    assert_live(db)
    assert_acked_once(settings, ["crm-mirror"])
    if where == "before-commit":
        assert (report.deletes, report.acks_resent) == (3, 0)
    else:
        assert (report.deletes, report.acks_sent, report.acks_resent) == (0, 3, 3)


@pytest.mark.integration
def test_two_consumers_each_acknowledge_every_tombstone_once(settings: Settings, tmp_path: Path) -> None:
    produce(settings, HISTORY, to=("crm-mirror", "mailer"))
    for name in ("crm-mirror", "mailer"):
        with SqliteSink(tmp_path / f"{name}.db") as sink:
            report = run_sink(settings, sink, name, until_idle=True)
        assert (report.deletes, report.acks_sent) == (3, 3)
        assert_live(tmp_path / f"{name}.db")
    assert_acked_once(settings, ["crm-mirror", "mailer"])


@pytest.mark.integration
def test_a_sink_reads_its_own_feeds_only(settings: Settings, tmp_path: Path) -> None:
    """What the complete feeds and another consumer's feeds carry is not this consumer's to copy,
    nor its to acknowledge: an erasure waits for the consumers that were sent the data."""
    produce(settings, HISTORY, to=("", "mailer"))
    with SqliteSink(tmp_path / "crm.db") as sink:
        report = run_sink(settings, sink, "crm-mirror", until_idle=True)
    assert (report.upserts, report.deletes, report.acks_sent) == (0, 0, 0)
    assert rows(tmp_path / "crm.db") == ({}, {})
    assert acks(settings) == []

    with SqliteSink(tmp_path / "mailer.db") as sink:
        report = run_sink(settings, sink, "mailer", until_idle=True)
    assert (report.upserts, report.deletes, report.acks_sent) == (7, 3, 3)
    assert_live(tmp_path / "mailer.db")
    assert_acked_once(settings, ["mailer"])


@pytest.mark.integration
def test_stop_event_ends_a_following_sink(settings: Settings, tmp_path: Path) -> None:
    db = tmp_path / "crm.db"
    stop = threading.Event()
    reports = []
    with SqliteSink(db) as sink:
        thread = threading.Thread(target=lambda: reports.append(run_sink(settings, sink, "crm-mirror", stop=stop)))
        thread.start()
        try:
            produce(settings, HISTORY)
            deadline = time.monotonic() + 20
            while len(acks(settings)) < len(TOMBSTONES) and time.monotonic() < deadline:
                time.sleep(0.2)
        finally:
            stop.set()
            thread.join(timeout=10)
    assert not thread.is_alive()
    assert reports[0].deletes == 3
    assert_live(db)
    assert_acked_once(settings, ["crm-mirror"])


@pytest.mark.integration
def test_main_sink_command(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    produce(settings, HISTORY)
    for var, value in settings.to_env().items():
        monkeypatch.setenv(var, value)
    db = tmp_path / "crm.db"

    assert main_sink(["sqlite", str(db), "--name", "crm-mirror", "--until-idle"]) == 0
    out, err = capsys.readouterr()
    assert out == "sink crm-mirror: 7 upserts, 3 deletes, 3 acks sent\n" and err == ""
    assert_live(db)

    assert main_sink(["postgres", str(db), "--name", "crm-mirror"]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1 and "invalid choice: 'postgres'" in err

    assert main_sink(["sqlite", str(tmp_path / "no-such-dir" / "x.db"), "--name", "crm-mirror", "--until-idle"]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1 and err.startswith("error: ")

    # a name the policy does not register: its acknowledgements would count for nothing
    assert main_sink(["sqlite", str(tmp_path / "other.db"), "--name", "crm", "--until-idle"]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err == (
        "error: consumer 'crm' is not registered in the policy (registered: ats, crm-mirror, mailer, warehouse): "
        "pick one of them with --name, or register it under [consumers] in the policy file (LIFECYCLE_POLICY)\n"
    )
    assert acks(settings) and all(a["consumer"] == "crm-mirror" for a in acks(settings))  # it sent none

    monkeypatch.setenv("LIFECYCLE_TOPIC_PREFIX", "missing.")
    assert main_sink(["sqlite", str(db), "--name", "crm-mirror", "--until-idle"]) == 2
    out, err = capsys.readouterr()
    assert (
        out == ""
        and err
        == "error: topic missing.lifecycle.records.crm-mirror does not exist; start the pipeline (lifecycle worker) first\n"
    )


@pytest.mark.integration
def test_sigterm_stops_the_command_after_its_batch(settings: Settings, tmp_path: Path) -> None:
    produce(settings, HISTORY)
    db = tmp_path / "crm.db"
    env = {**os.environ, **settings.to_env(), "PYTHONPATH": str(ROOT)}
    code = "import sys; from streams.commands.sink import main_sink; sys.exit(main_sink(sys.argv[1:]))"
    proc = subprocess.Popen(
        [sys.executable, "-c", code, "sqlite", str(db), "--name", "crm-mirror"],
        env=env,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while len(acks(settings)) < len(TOMBSTONES) and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.2)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err[-2000:]
    assert out == "sink crm-mirror: 7 upserts, 3 deletes, 3 acks sent\n"
    assert_live(db)
    assert_acked_once(settings, ["crm-mirror"])
