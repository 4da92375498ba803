"""The infrastructure around a worker fails: the broker restarts mid-stream, and one of two
workers in a group dies.

What a privacy engineer needs from both: nothing published with a success return is lost,
no one has to restart anything by hand, and the downstream topics end exactly where the pure
fold of what the broker holds ends: no erasure lost, none sent twice to a key that was
tombstoned, no record resurrected.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from support.differences import differences
from support.http import bearer, http_get
from support.ports import free_port_pair, local_broker_settings

from processors import fold as lifecycle
from processors.messages import downstream_of
from processors.shredding import new_master_key_text
from schemas.codec import encode
from streams.bench.history import history
from streams.bench.measure import fill
from streams.broker import local as broker
from streams.plumbing.group import ingest_owners
from streams.plumbing.reading import latest_by_key, read_topic
from streams.plumbing.topics import ensure_topics
from streams.plumbing.upstream import producer
from streams.settings import Settings, load_policy
from streams.worker.processes import spawn_worker, stop_worker, wait_caught_up

pytestmark = pytest.mark.integration


def _assert_exact(settings: Settings, events: list[dict]) -> int:
    """Downstream and decisions equal the pure fold of ``events``; returns the decision count."""
    want = downstream_of(events, load_policy())
    want_records, want_consent, want_decisions = want.records, want.consent, set(want.decisions)
    got_records = {k: e.value for k, e in latest_by_key(read_topic(settings, "records", timeout_s=60)).items()}
    got_consent = {k: e.value for k, e in latest_by_key(read_topic(settings, "consent", timeout_s=60)).items()}
    assert differences(got_records, want_records) == []
    assert differences(got_consent, want_consent) == []
    decided = {
        ev["event_id"]
        for e in read_topic(settings, "events", timeout_s=60)
        if (ev := e.decoded()) is not None and ev["type"] in lifecycle.DECISION_TYPES
    }
    assert decided == want_decisions  # none lost, none invented
    return len(decided)


class Publisher(threading.Thread):
    """Publishes events at a steady pace with the upstream producer library, remembering which
    sends returned success; a send that raised is not counted (the caller would retry it)."""

    def __init__(self, settings: Settings, events: list[dict], per_second: float) -> None:
        super().__init__(daemon=True)
        self.settings, self.events, self.pause = settings, events, 1.0 / per_second
        self.acknowledged: set[str] = set()
        self.failed = 0

    def run(self) -> None:
        prod = producer(self.settings)
        futures = []
        try:
            for ev in self.events:
                futures.append(
                    (ev["event_id"], prod.send(self.settings.topic("ingest"), key=ev["subject_id"].encode(), value=encode(ev)))
                )
                time.sleep(self.pause)
            prod.flush(timeout=180)
            for event_id, fut in futures:
                try:
                    fut.get(timeout=60)
                    self.acknowledged.add(event_id)
                except Exception:  # noqa: BLE001 - not acknowledged: the caller would retry it
                    self.failed += 1
        finally:
            prod.close()


@pytest.fixture
def own_broker(tmp_path: Path) -> Iterator[Settings]:
    """A broker of this test's own, since the test stops and restarts it."""
    web = free_port_pair()
    s = local_broker_settings(
        tmp_path / "home",
        web_port=web,
        worker_url=f"http://127.0.0.1:{web}",
        master_key=new_master_key_text(),
        api_token="test",
        topic_prefix="restart.",
        app_id="restart",
        timer_interval=3600.0,  # no retention tick: the pure fold takes none
    )
    broker.start(s)
    try:
        ensure_topics(s)
        yield s
    finally:
        broker.stop(s)


def test_broker_restarted_mid_stream_loses_nothing_and_everyone_reconnects(own_broker: Settings, tmp_path: Path) -> None:
    s = own_broker
    events = history(2_400, 300, seed=41)
    worker = spawn_worker(s, tmp_path / "worker.log")
    try:
        publisher = Publisher(s, events, per_second=150.0)  # ~16 s of traffic
        publisher.start()
        time.sleep(6.0)  # the worker is folding, the publisher mid-way
        assert worker.poll() is None
        broker.stop(s)  # a clean broker shutdown, as in a rolling restart
        time.sleep(4.0)  # producers and the worker see the broker gone
        broker.start(s)
        publisher.join(timeout=300)
        assert not publisher.is_alive()
        wait_caught_up(s, timeout=240, proc=worker)  # the worker reconnected by itself
    finally:
        stop_worker(worker)

    held = [e.decoded() for e in read_topic(s, "ingest", timeout_s=60)]
    held_ids = {ev["event_id"] for ev in held if ev is not None}
    assert publisher.acknowledged <= held_ids, "an event published with a success return was lost"
    assert len(publisher.acknowledged) == len(events) - publisher.failed
    decisions = _assert_exact(s, [ev for ev in held if ev is not None])
    print(f"broker restart: {len(publisher.acknowledged)} acknowledged, {publisher.failed} failed sends, {decisions} decisions")
    # the log says the broker was away, and says it a few times, not once per reconnection
    refused = [line for line in (tmp_path / "worker.log").read_text().splitlines() if "Connection refused" in line]
    assert 1 <= len(refused) <= 10, refused[:20]


def _ingest_owners(settings: Settings) -> list[set[int]]:
    """The ingest partitions each member of the worker group holds, as the broker sees it."""
    return [held for _, held in ingest_owners(settings)[1]]


def _owners_if_described(settings: Settings) -> list[set[int]] | None:
    """``_ingest_owners``, or None while the group's coordinator does not answer yet."""
    from confluent_kafka import KafkaException

    try:
        return _ingest_owners(settings)
    except KafkaException:
        return None


def _view(url: str, settings: Settings, subject: str) -> tuple[int, bytes]:
    return http_get(dataclasses.replace(settings, worker_url=url), f"/subjects/{subject}/export", bearer(settings))


def _wait_for(check: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = check()
        if got:
            return got
        time.sleep(0.5)
    raise TimeoutError(f"{what} within {timeout:.0f} s")


def test_two_workers_split_the_partitions_and_the_survivor_takes_over_a_killed_one(settings: Settings, tmp_path: Path) -> None:
    # what each worker of a group on one machine needs (README, scale-out): a home and a views
    # port of its own, the master key file and the API token of the group
    keys = tmp_path / "master-keys"
    keys.write_text(new_master_key_text() + "\n")
    s = dataclasses.replace(
        settings, timer_interval=3600.0, api_token="one-token-for-the-group", master_key="", master_key_file=keys
    )
    events = history(3_000, 400, seed=43)
    first, rest = events[:600], events[600:]
    fill(s, "ingest", [(e["subject_id"].encode(), encode(e)) for e in first])  # type: ignore[misc]

    urls: list[str] = []

    def worker(i: int) -> Any:
        port = free_port_pair()
        urls.append(f"http://127.0.0.1:{port}")
        own = dataclasses.replace(s, home=s.home / f"w{i}", web_port=port, worker_url=urls[-1])
        return spawn_worker(own, tmp_path / f"worker-{i}.log")

    survivor = worker(0)
    victim = None
    try:
        wait_caught_up(s, timeout=120, proc=survivor)
        victim = worker(1)
        owners = _wait_for(
            lambda: (o := _ingest_owners(s)) and len(o) == 2 and all(o) and o,
            timeout=90,
            what="the two workers did not split the ingest partitions",
        )
        assert owners[0] | owners[1] == set(range(s.partitions)) and not owners[0] & owners[1]

        # either worker answers for any subject: its own from its table, the other's by asking
        # the owner, which the group's description names
        subjects = sorted({e["subject_id"] for e in first})[:12]
        for sid in subjects:  # 503 while a worker still recovers the partition it was given
            answers = _wait_for(
                lambda sid=sid: (a := [_view(url, s, sid) for url in urls]) and all(st != 503 for st, _ in a) and a,
                timeout=60,
                what=f"the workers did not both answer for {sid}",
            )
            assert answers[0] == answers[1] and answers[0][0] in (200, 404), (sid, answers)
        assert any(_view(urls[0], s, sid)[0] == 200 for sid in subjects)

        publisher = Publisher(s, rest, per_second=200.0)
        publisher.start()
        time.sleep(5.0)
        assert victim.poll() is None
        victim.send_signal(signal.SIGKILL)
        victim.wait()
        publisher.join(timeout=300)
        assert publisher.failed == 0
        _wait_for(
            lambda: _ingest_owners(s) == [set(range(s.partitions))],
            timeout=60,
            what="the survivor did not take over every partition",
        )
        wait_caught_up(s, timeout=240, proc=survivor)
    finally:
        stop_worker(survivor)
        if victim is not None and victim.poll() is None:
            stop_worker(victim)

    decisions = _assert_exact(s, events)
    print(f"failover: 1 of 2 workers killed mid-stream, {decisions} decisions exact")


def test_publish_gives_up_with_a_count_when_the_broker_stays_away_and_on_a_signal(own_broker: Settings) -> None:
    """``lifecycle publish`` never waits for ever: a broker that does not come back within
    ``--timeout`` ends it with what was delivered and what was not, and so does Ctrl-C, even
    while it waits for more input on a pipe."""
    s = own_broker
    now = int(time.time() * 1000)
    lines = [
        orjson.dumps({"type": "ConsentGiven", "event_id": f"pub-{i}", "subject_id": f"s-pub-{i % 7}", "source": "test",
                      "occurred_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now / 1000)), "purpose": "newsletter"})
        for i in range(110)
    ]  # fmt: skip

    def publish(timeout: float) -> subprocess.Popen[bytes]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("LIFECYCLE_")}
        env.update(s.to_env())
        cmd = [sys.executable, "-m", "streams.cli", "publish", "-", "--timeout", str(timeout)]
        return subprocess.Popen(cmd, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)

    def on_ingest(count: int) -> None:
        _wait_for(lambda: len(read_topic(s, "ingest")) >= count, timeout=60, what=f"{count} events on ingest")

    proc = publish(15)
    assert proc.stdin is not None
    proc.stdin.write(b"\n".join(lines[:50]) + b"\n")
    proc.stdin.flush()
    on_ingest(50)
    broker.stop(s)
    proc.stdin.write(b"\n".join(lines[50:100]) + b"\n")
    proc.stdin.close()
    proc.stdin = None  # closed: communicate() must not flush it
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 1, err
    assert out.decode().startswith("published 50 events to ") and "50 lines not delivered" in out.decode(), out
    assert "--timeout" in out.decode() and "Traceback" not in err.decode()

    broker.start(s)
    proc = publish(300)
    assert proc.stdin is not None
    proc.stdin.write(b"\n".join(lines[100:110]) + b"\n")
    proc.stdin.flush()
    on_ingest(60)
    proc.send_signal(signal.SIGINT)  # the pipe stays open: the command is waiting for input
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert out.decode().startswith("published 10 events to ") and "interrupted by SIGINT" in out.decode(), out
    assert "Traceback" not in err.decode()
    assert len(read_topic(s, "ingest")) == 60  # nothing delivered twice, nothing reported that was not


def test_three_workers_share_six_partitions_and_end_where_the_pure_fold_ends(settings: Settings, tmp_path: Path) -> None:
    """Any partition count works, not just the default four: six partitions, three workers, each
    folding its own two, and together exactly what the pure fold of the input gives."""
    keys = tmp_path / "master-keys"
    keys.write_text(new_master_key_text() + "\n")
    s = dataclasses.replace(
        settings,
        topic_prefix=settings.topic_prefix + "six.",
        app_id=settings.app_id + "-six",
        partitions=6,
        timer_interval=3600.0,
        api_token="one-token-for-the-group",
        master_key="",
        master_key_file=keys,
    )
    ensure_topics(s)
    events = history(2_400, 300, seed=47)
    workers = []
    try:
        for i in range(3):
            port = free_port_pair()
            own = dataclasses.replace(s, home=s.home / f"w{i}", web_port=port, worker_url=f"http://127.0.0.1:{port}")
            workers.append(spawn_worker(own, tmp_path / f"worker-{i}.log"))
        owners = _wait_for(
            lambda: (o := _owners_if_described(s)) and len(o) == 3 and all(len(h) == 2 for h in o) and o,
            timeout=120,
            what="the three workers did not take two partitions each",
        )
        assert set().union(*owners) == set(range(6))
        fill(s, "ingest", [(e["subject_id"].encode(), encode(e)) for e in events])  # type: ignore[misc]
        wait_caught_up(s, timeout=240, proc=workers[0])
    finally:
        for proc in workers:
            stop_worker(proc)
    decisions = _assert_exact(s, events)
    print(f"six partitions, three workers: {len(events)} events, {decisions} decisions exact")
