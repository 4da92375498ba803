"""The worker as a process an operator runs: how it starts, how it stops, what it leaves behind.

Real processes on the real broker. What an operator needs to be true: a worker that stops on an
error commits nothing of the batch that stopped it (the next worker folds it again); only one
worker runs on a state directory, and a second one says so in one line instead of deleting the
first one's state; a taken views port is one line too; a local store that cannot be opened is
rebuilt from the changelogs instead of stopping the worker for good; and each of them says what
to fix without a traceback.
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest
from support.http import bearer, http_get
from support.ports import free_port_pair

from processors.shredding import new_master_key_text
from streams.commands.replay import run_replay
from streams.plumbing.reading import read_topic
from streams.plumbing.upstream import publish_lines
from streams.settings import Settings
from streams.worker.processes import lag, spawn_worker, stop_worker, wait_caught_up

pytestmark = pytest.mark.integration

DAY_MS = 86_400_000


def ev(type_: str, event_id: str, subject: str, at_ms: int, **fields: object) -> bytes:
    iso = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(at_ms / 1000))
    return orjson.dumps(
        {"type": type_, "event_id": event_id, "subject_id": subject, "occurred_at": iso, "source": "test", **fields}
    )


def collected(event_id: str, subject: str, record: str, at_ms: int) -> bytes:
    return ev(
        "DataCollected", event_id, subject, at_ms, record_id=record, category="contact", purpose="inquiry",
        legal_basis="legitimate_interest", fields={"email": f"{subject}@example.org", "name": f"Name {subject}"},
    )  # fmt: skip


def logged_ids(settings: Settings) -> set[str]:
    return {ev["event_id"] for e in read_topic(settings, "events") if (ev := e.decoded()) is not None}


def cli(
    settings: Settings, *args: str, env: dict[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    full = {k: v for k, v in os.environ.items() if not k.startswith("LIFECYCLE_")}
    full.update(settings.to_env() if env is None else env)
    return subprocess.run([sys.executable, "-m", "streams.cli", *args], env=full, capture_output=True, text=True, timeout=timeout)


def one_line(text: str) -> str:
    lines = text.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in text, text[-2000:]
    return lines[0]


def test_a_worker_failing_inside_a_batch_commits_nothing_and_the_next_one_folds_it(settings: Settings, tmp_path: Path) -> None:
    """The batch a worker dies on is folded again: at-least-once, even on an error.

    A record is sealed under one master key; a worker started with another key meets it in the
    middle of a batch (a verified rectification must open it) and stops. Nothing of that batch
    may be committed, and the local state it leaves must not be trusted: the next worker, with
    the right key, folds every event of the batch into the log, and the replay agrees.
    """
    right = dataclasses.replace(settings, timer_interval=3600.0)
    wrong = dataclasses.replace(right, master_key=new_master_key_text())
    now = int(time.time() * 1000)

    proc = spawn_worker(right, tmp_path / "first.log")
    try:
        assert publish_lines([collected("k1", "s-key", "r1", now - DAY_MS)], right).ok
        wait_caught_up(right, proc=proc)
    finally:
        assert stop_worker(proc) == 0

    batch = [
        ev("RectificationRequested", "k2", "s-key", now - 1000, request_id="q-1", record_id="r1", fields={"name": "Corrected"}),
        ev("IdentityVerified", "k3", "s-key", now - 900, request_id="q-1", method="email_link"),
        *(collected(f"k{i}", f"s-other-{i}", "r1", now - 800) for i in range(4, 12)),
    ]
    assert publish_lines(batch, right).ok
    proc = spawn_worker(wrong, tmp_path / "wrong.log")
    try:
        code = proc.wait(timeout=120)
    finally:
        stop_worker(proc)
    text = (tmp_path / "wrong.log").read_text()
    assert code == 1, text[-2000:]
    assert "wrapped by master key" in text and "LIFECYCLE_MASTER_KEY" in text and "Traceback" not in text
    assert lag(right), "the batch the worker failed on was committed"
    assert not {"k2", "k3"} & logged_ids(right)

    # the failed worker may have wrapped data keys with its key before it stopped: the keyring
    # that opens everything holds both, the right one first (README, More workers)
    ring = tmp_path / "master-keys"
    ring.write_text(f"{right.master_key}\n{wrong.master_key}\n")
    fixed = dataclasses.replace(right, master_key="", master_key_file=ring)
    proc = spawn_worker(fixed, tmp_path / "after.log")
    try:
        wait_caught_up(right, timeout=120, proc=proc)
    finally:
        stop_worker(proc)
    assert "did not stop cleanly" in (tmp_path / "after.log").read_text()  # its local state was not trusted
    ids = logged_ids(right)
    assert {"k2", "k3", *(f"k{i}" for i in range(4, 12))} <= ids, "the batch the worker failed on was lost"
    assert "k3/RequestFulfilled/q-1" in ids
    report, _ = run_replay(right)
    assert report["mismatch_count"] == 0, report["mismatches"]


def test_one_worker_per_home_one_per_port_and_the_demo_beside_them(settings: Settings, tmp_path: Path) -> None:
    s = dataclasses.replace(settings, timer_interval=3600.0)
    now = int(time.time() * 1000)
    proc = spawn_worker(s, tmp_path / "first.log")
    try:
        assert publish_lines([collected("h1", "s-home", "r1", now - DAY_MS)], s).ok
        wait_caught_up(s, proc=proc)
        store = s.worker_dir / "store"
        assert store.is_dir()

        port = free_port_pair()
        same_home = dataclasses.replace(s, web_port=port, worker_url=f"http://127.0.0.1:{port}")
        second = cli(same_home, "worker", timeout=60)
        assert second.returncode == 2
        line = one_line(second.stderr)
        assert line.startswith("error: another worker is running on the state in ") and "LIFECYCLE_HOME" in line

        same_port = dataclasses.replace(s, home=tmp_path / "other-home")
        third = cli(same_port, "worker", timeout=60)
        assert third.returncode == 2
        line = one_line(third.stderr)
        assert f"127.0.0.1:{s.web_port}" in line and "LIFECYCLE_WEB_PORT" in line

        # the demo runs beside a worker the user already has, on the same home and port settings
        demo = cli(s, "demo", timeout=180)
        assert demo.returncode == 0, demo.stdout[-2000:] + demo.stderr[-2000:]

        # the first worker never noticed: its state is where it was, and it goes on folding
        assert proc.poll() is None and store.is_dir()
        assert publish_lines([collected("h2", "s-home", "r2", now)], s).ok
        wait_caught_up(s, proc=proc)
        status, body = http_get(s, "/subjects/s-home/export", bearer(s))
        assert status == 200 and [r["record_id"] for r in orjson.loads(body)["records"]] == ["r1", "r2"]
    finally:
        assert stop_worker(proc) == 0
    assert "did not stop cleanly" not in (tmp_path / "first.log").read_text()


def test_a_store_that_cannot_be_opened_is_rebuilt_from_the_changelogs(settings: Settings, tmp_path: Path) -> None:
    s = dataclasses.replace(settings, timer_interval=3600.0)
    now = int(time.time() * 1000)
    proc = spawn_worker(s, tmp_path / "first.log")
    try:
        assert publish_lines([collected(f"c{i}", f"s-c{i}", "r1", now - DAY_MS) for i in range(20)], s).ok
        wait_caught_up(s, proc=proc)
    finally:
        assert stop_worker(proc) == 0
    store = s.worker_dir / "store"
    (store / "CURRENT").write_text("garbage\n")  # what a disk that lost a write leaves behind

    proc = spawn_worker(s, tmp_path / "second.log")
    try:
        assert publish_lines([collected("c20", "s-c1", "r2", now)], s).ok
        wait_caught_up(s, proc=proc)
        status, body = http_get(s, "/subjects/s-c1/export", bearer(s))
    finally:
        assert stop_worker(proc) == 0
    text = (tmp_path / "second.log").read_text()
    assert "cannot be opened" in text and "rebuilding it from the changelogs" in text and "Traceback" not in text
    assert status == 200 and [r["record_id"] for r in orjson.loads(body)["records"]] == ["r1", "r2"]


def test_the_replay_never_mints_a_key_and_says_in_one_line_when_its_key_does_not_fit(settings: Settings, tmp_path: Path) -> None:
    s = dataclasses.replace(settings, timer_interval=3600.0)
    proc = spawn_worker(s, tmp_path / "worker.log")
    try:
        assert publish_lines([collected("m1", "s-m", "r1", int(time.time() * 1000) - DAY_MS)], s).ok
        wait_caught_up(s, proc=proc)
    finally:
        stop_worker(proc)
    auditor = {k: v for k, v in s.to_env().items() if k != "LIFECYCLE_MASTER_KEY"}  # the auditor has no key
    dev_key = s.home / "master-key"
    shown = cli(s, "replay", "--subject", "s-m", "--dev", env=auditor)
    assert shown.returncode == 0, shown.stderr
    assert not dev_key.exists(), "the replay created a master key"
    assert "[encrypted]" in shown.stdout and "s-m@example.org" not in shown.stdout

    dev_key.write_text(new_master_key_text() + "\n")  # a development key of another worker
    wrong = cli(s, "replay", "--subject", "s-m", "--dev", env=auditor)
    assert wrong.returncode == 2
    assert "LIFECYCLE_MASTER_KEY_FILE" in one_line(wrong.stderr)


def test_commands_say_in_one_line_that_no_broker_answers(tmp_path: Path) -> None:
    port = free_port_pair()
    nowhere = dataclasses.replace(Settings.from_env({}), bootstrap=f"127.0.0.1:{port}", home=tmp_path)
    events = tmp_path / "one.jsonl"
    events.write_bytes(collected("n1", "s-n", "r1", int(time.time() * 1000)))
    for args in (("publish", str(events), "--timeout", "5"), ("replay",)):
        done = cli(nowhere, *args, timeout=90)
        assert done.returncode == 2, (args, done.stdout, done.stderr)
        assert f"127.0.0.1:{port}" in one_line(done.stderr) and "LIFECYCLE_BOOTSTRAP" in done.stderr
