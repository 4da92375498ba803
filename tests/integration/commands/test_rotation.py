"""Master-key rotation on the real broker: every data key re-wrapped, the log untouched, old
data still readable with the new key alone, erased data still unreadable, and a worker that
runs meanwhile is a reason to refuse."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest

from processors.shredding import new_master_key_text
from streams.plumbing.reading import latest_by_key, read_topic
from streams.plumbing.upstream import publish_lines
from streams.settings import Settings
from streams.worker.processes import spawn_worker, stop_worker, wait_caught_up

pytestmark = pytest.mark.integration


def ev(type_: str, event_id: str, subject: str, when: str, **fields: object) -> dict:
    return {"type": type_, "event_id": event_id, "subject_id": subject, "occurred_at": when, "source": "test", **fields}


HISTORY = [
    ev(
        "DataCollected",
        "k1",
        "s-kept",
        "2026-03-01T10:00:00Z",
        record_id="r1",
        category="contact",
        purpose="inquiry",
        legal_basis="legitimate_interest",
        fields={"email": "kept.person@example.org"},
    ),
    ev(
        "DataCollected",
        "x1",
        "s-gone",
        "2026-03-01T10:00:00Z",
        record_id="r1",
        category="contact",
        purpose="inquiry",
        legal_basis="legitimate_interest",
        fields={"email": "gone.person@example.org"},
    ),
    ev("ErasureRequested", "x2", "s-gone", "2026-03-02T10:00:00Z", request_id="q-x"),
    ev("IdentityVerified", "x3", "s-gone", "2026-03-02T10:05:00Z", request_id="q-x", method="email_link"),
]


def cli(settings: Settings, *args: str) -> subprocess.CompletedProcess[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LIFECYCLE_")}
    env.update(settings.to_env())
    return subprocess.run([sys.executable, "-m", "streams.cli", *args], env=env, capture_output=True, timeout=300)


def test_rotation_rewraps_every_key_and_keeps_erased_data_erased(settings: Settings, tmp_path: Path) -> None:
    old, new = settings.master_key, new_master_key_text()
    events_before = [(e.partition, e.offset, e.value) for e in read_topic(settings, "events")]
    proc = spawn_worker(settings, tmp_path / "w1.log")
    try:
        assert publish_lines([orjson.dumps(e) for e in HISTORY], settings).ok
        wait_caught_up(settings, proc=proc)
        ring = tmp_path / "ring"
        ring.write_text(f"{new}\n{old}\n")
        rotating = dataclasses.replace(settings, master_key="", master_key_file=ring)
        refused = cli(rotating, "keys", "rotate")
        assert refused.returncode == 2 and b"running" in refused.stderr
    finally:
        stop_worker(proc)
    events_before = [(e.partition, e.offset, e.value) for e in read_topic(settings, "events")]

    done = cli(rotating, "keys", "rotate")
    assert done.returncode == 0, done.stderr.decode()
    assert b"re-wrapped 1 data keys" in done.stdout  # s-kept's; s-gone's was destroyed by the erasure
    assert [(e.partition, e.offset, e.value) for e in read_topic(settings, "events")] == events_before

    only_new = dataclasses.replace(settings, master_key=new)
    kept = cli(only_new, "replay", "--subject", "s-kept")
    assert kept.returncode == 0, kept.stderr.decode()
    assert orjson.loads(kept.stdout)["state"]["records"][0]["fields"] == {"email": "kept.person@example.org"}
    gone = cli(only_new, "replay", "--subject", "s-gone")
    assert gone.returncode == 0 and b"gone.person" not in gone.stdout
    trail = orjson.loads(gone.stdout)["trail"]
    assert [t["fields"] for t in trail if t["type"] == "DataCollected"] == [{"email": "[erased]"}]

    # a worker holding only the new key recovers the re-wrapped keys and serves the export
    live = {k for k, e in latest_by_key(read_topic(settings, "keys")).items() if e.value is not None}
    assert live == {b"s-kept/k1"}
    proc = spawn_worker(only_new, tmp_path / "w2.log")
    try:
        wait_caught_up(only_new, proc=proc)
        deadline = time.monotonic() + 60
        export = cli(only_new, "export", "s-kept")
        while export.returncode == 2 and time.monotonic() < deadline:  # still recovering its tables
            time.sleep(1.0)
            export = cli(only_new, "export", "s-kept")
        assert export.returncode == 0, export.stderr.decode()
        assert orjson.loads(export.stdout)["records"][0]["fields"] == {"email": "kept.person@example.org"}
    finally:
        stop_worker(proc)


def test_worker_refuses_to_start_without_a_master_key_outside_dev(settings: Settings) -> None:
    keyless = dataclasses.replace(settings, master_key="", master_key_file=None)
    done = cli(keyless, "worker")
    assert done.returncode == 2
    err = done.stderr.decode()
    assert "no master key" in err and "--dev" in err and "Traceback" not in err
