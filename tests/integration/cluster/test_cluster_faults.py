"""Brokers fail under the pipeline: three KRaft nodes, every topic with three copies of which two
must be in sync for a write, real processes and real SIGKILLs.

What a privacy engineer needs from a replicated cluster: a broker dying mid-stream, or all of
them restarted one by one, loses nothing that ``lifecycle publish`` reported published, and the
downstream topics and decisions end exactly where the pure fold of what the cluster holds ends,
with the auditor's replay agreeing; an erasure in flight when the broker dies still tombstones
the records and completes once its consumers acknowledge. With two of three brokers down a
write cannot have its two copies, and the pipeline must say so rather than pretend: ``publish``
fails naming the cause, the worker waits, and resumes when the brokers return.

The consumers' acknowledgements are written to ``lifecycle.acks`` by the test, as a consumer's
sink writes them (``streams.commands.sink``): what is under test is the pipeline on a failing
cluster, not a downstream store.
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import orjson
import pytest
from support import cluster
from support.differences import differences
from support.kills import kill_mid_batch
from support.ports import free_port_pair

from processors import fold as lifecycle
from processors.messages import downstream_of
from schemas.codec import decode, encode
from schemas.contract import Where
from streams.bench.history import history
from streams.broker import local as broker
from streams.commands.replay import run_replay
from streams.plumbing.reading import latest_by_key, read_topic
from streams.plumbing.scan import read_all
from streams.plumbing.text import iso
from streams.plumbing.topics import partition_for
from streams.plumbing.upstream import producer, publish_lines
from streams.settings import Settings, load_policy
from streams.worker.processes import LagProbe, spawn_worker, stop_worker, wait_caught_up

# one three-node cluster for all of them: in one test process under ``-n`` (``--dist loadgroup``)
pytestmark = [pytest.mark.integration, pytest.mark.xdist_group("cluster")]


def line(event: dict[str, Any]) -> bytes:
    """An event as upstream hands it to ``lifecycle publish``: a JSON line, its time in ISO-8601."""
    return orjson.dumps({**event, "occurred_at": iso(event["occurred_at"])})


class Publishing(threading.Thread):
    """``lifecycle publish``'s own function (``publish_lines``) on chunks of ``events`` at a
    steady pace until stopped: the lines of a chunk it reports wholly published count as
    published; of a chunk it reports partly published, the number it reports."""

    def __init__(self, settings: Settings, events: list[dict[str, Any]], per_second: float, chunk: int = 30) -> None:
        super().__init__(daemon=True)
        self.settings, self.events, self.chunk = settings, events, chunk
        self.pause = chunk / per_second
        self.stop = threading.Event()
        self.published: set[str] = set()
        self.partly: list[tuple[set[str], int]] = []  # (event ids of the chunk, how many it said were published)

    def run(self) -> None:
        for start in range(0, len(self.events), self.chunk):
            if self.stop.is_set():
                return
            began = time.monotonic()
            chunk = self.events[start : start + self.chunk]
            report = publish_lines([line(e) for e in chunk], self.settings, timeout=120)
            ids = {e["event_id"] for e in chunk}
            if report.ok:
                self.published |= ids
            else:
                self.partly.append((ids, report.published))
            time.sleep(max(0.0, self.pause - (time.monotonic() - began)))

    def finish(self) -> None:
        self.stop.set()
        self.join(timeout=300)
        assert not self.is_alive()

    def lost(self, held: set[str]) -> int:
        """Lines reported published that the cluster does not hold."""
        return len(self.published - held) + sum(max(0, n - len(ids & held)) for ids, n in self.partly)


class Sending:
    """The upstream producer ``lifecycle publish`` runs on, connected before the fault and
    sending during it without waiting: a send counts as published once its future says so."""

    def __init__(self, settings: Settings, events: list[dict[str, Any]]) -> None:
        assert events, "no event to send"
        self.settings, self.events = settings, events
        self.prod = producer(settings)
        self.futures: list[tuple[str, Any]] = []
        self._send(events[:1])
        self.prod.flush(timeout=60)  # connected, with a producer id and the topic's leaders

    def _send(self, events: list[dict[str, Any]]) -> None:
        topic = self.settings.topic("ingest")
        for e in events:
            self.futures.append((e["event_id"], self.prod.send(topic, key=e["subject_id"].encode(), value=encode(e))))

    def send(self) -> None:
        self._send(self.events[1:])

    def acknowledged(self) -> set[str]:
        """What the cluster acknowledged, once every send is answered (the producer retries
        until it is)."""
        self.prod.flush(timeout=180)
        self.prod.close()
        return {event_id for event_id, fut in self.futures if fut.is_done and fut.succeeded()}


def lone_events(at: int, count: int = 200, name: str = "lone") -> list[dict[str, Any]]:
    """One event each for subjects of their own: the pure fold of them is independent of the
    history's."""
    return [
        {"type": "ConsentGiven", "event_id": f"{name}-{i}", "subject_id": f"s-{name}-{i}", "occurred_at": at, "source": "web",
         "purpose": "newsletter"}
        for i in range(count)
    ]  # fmt: skip


def home(settings: Settings, event: dict[str, Any]) -> int:
    return partition_for(event["subject_id"].encode(), settings.partitions)


@dataclasses.dataclass
class Erasure:
    """A subject with records for two consumers whose erasure is requested right before the
    fault and acknowledged by both consumers while the fault lasts."""

    subject: str
    request: str
    collected: list[dict[str, Any]]
    requested: list[dict[str, Any]]

    @classmethod
    def of(cls, name: str, first: int, last: int) -> Erasure:
        sid, req = f"s-{name}", f"q-{name}"

        def ev(kind: str, n: int, at: int, **fields: object) -> dict[str, Any]:
            return {"type": kind, "event_id": f"{name}-{n}", "subject_id": sid, "occurred_at": at, "source": "web", **fields}

        collected = [
            ev("DataCollected", 1, first, record_id="r1", category="contact", purpose="inquiry",
               legal_basis="legitimate_interest", fields={"name": "Erna Erased", "email": "erna@example.org"}),
            ev("ConsentGiven", 2, first + 1, purpose="newsletter"),
            ev("DataCollected", 3, first + 2, record_id="r2", category="contact", purpose="newsletter",
               legal_basis="consent", fields={"email": "erna@example.org"}),
        ]  # fmt: skip
        requested = [
            ev("ErasureRequested", 4, last, request_id=req),
            ev("IdentityVerified", 5, last + 1000, request_id=req, method="email_link"),
        ]
        return cls(sid, req, collected, requested)

    def consumers(self) -> list[str]:
        """Who must acknowledge: the consumers the pure fold sent the subject's data to."""
        state = downstream_of(self.collected + self.requested, load_policy()).states[self.subject]
        return list(state["requests"][self.request]["consumers"])

    def acknowledge(self, settings: Settings) -> None:
        """Every consumer acknowledges, as its sink would, once the erasure is on the log."""
        wait_for_decision(settings, "ErasureExecuted", self.request)
        at = self.requested[-1]["occurred_at"] + 2000
        prod = producer(settings)
        try:
            for name in self.consumers():
                ack = {"type": "ErasureAcknowledged", "event_id": f"ack-{name}-{self.request}", "subject_id": self.subject,
                       "occurred_at": at, "source": name, "consumer": name, "request_id": self.request, "record_id": ""}  # fmt: skip
                prod.send(settings.topic("acks"), key=self.subject.encode(), value=encode(ack)).get(timeout=120)
        finally:
            prod.close()


def decisions(settings: Settings) -> list[dict[str, Any]]:
    """The decisions on the log, read with librdkafka (the replay's reader), which finds the
    partitions' new leaders by itself while a broker is away."""
    out = []
    for p, entries in sorted(read_all(settings, "events").items()):
        for offset, _, value in entries:
            ev = decode(value, Where(settings.topic("events"), p, offset)) if value is not None else None
            if ev is not None and ev["type"] in lifecycle.DECISION_TYPES:
                out.append(ev)
    return out


def wait_for_decision(settings: Settings, kind: str, request: str, timeout: float = 120.0) -> None:
    """Read the log until the decision is there. While a broker is away a read may fail (a
    partition's end offset asked of the dead leader before the controller fenced it): again."""
    from confluent_kafka import KafkaException

    deadline = time.monotonic() + timeout
    while True:
        try:
            if any(d["type"] == kind and d.get("request_id") == request for d in decisions(settings)):
                return
        except KafkaException:
            pass
        assert time.monotonic() < deadline, f"no {kind} for {request} within {timeout:.0f} s"
        time.sleep(1.0)


def spawn(settings: Settings, tmp_path: Path, i: int) -> subprocess.Popen[bytes]:
    """A worker of the group with a home and a views port of its own."""
    port = free_port_pair()
    own = dataclasses.replace(settings, home=settings.home / f"w{i}", web_port=port, worker_url=f"http://127.0.0.1:{port}")
    return spawn_worker(own, tmp_path / f"worker-{i}.log")


def running(tmp_path: Path, *workers: subprocess.Popen[bytes]) -> None:
    """Every worker still runs; one that exited is named with the last lines of its log."""
    for i, proc in enumerate(workers):
        if proc.poll() is not None:
            tail = (tmp_path / f"worker-{i}.log").read_text(errors="replace").splitlines()[-5:]
            raise AssertionError(f"worker {i} exited with {proc.returncode}: " + " | ".join(tail))


def folding(settings: Settings, timeout: float = 120.0) -> None:
    """Returns once the group has committed something and has more to fold: mid-stream."""
    probe = LagProbe(settings)
    try:
        deadline = time.monotonic() + timeout
        while not (probe() or 0) > 0:
            assert time.monotonic() < deadline, "the workers never got to folding"
            time.sleep(0.2)
    finally:
        probe.close()


def outcome(settings: Settings, lost: int, erasure: Erasure | None = None) -> dict[str, int]:
    """Records, consent and decisions equal the pure fold of what the cluster holds (ingest,
    then the acknowledgements, which came after everything of their subject), the replay finds
    no mismatch, and an erasure ended with its tombstones and its completion."""
    held = [ev for e in read_topic(settings, "ingest", timeout_s=60) if (ev := e.decoded()) is not None]
    acks = [ev for e in read_topic(settings, "acks", timeout_s=60) if (ev := e.decoded()) is not None]
    want = downstream_of(held + acks, load_policy())
    records = {k: e.value for k, e in latest_by_key(read_topic(settings, "records", timeout_s=60)).items()}
    consent = {k: e.value for k, e in latest_by_key(read_topic(settings, "consent", timeout_s=60)).items()}
    assert differences(records, want.records) == []
    assert differences(consent, want.consent) == []
    decided = [d["event_id"] for d in decisions(settings)]
    assert set(decided) == set(want.decisions)  # none lost, none invented
    if erasure is not None:
        mine = [k for k in records if k.startswith(erasure.subject.encode() + b"/")]
        assert mine and all(records[k] is None for k in mine), "an erased record was not tombstoned"
        done = [d for d in decisions(settings) if d["type"] == "ErasureCompleted" and d["request_id"] == erasure.request]
        assert [sorted(d["consumers"]) for d in done] == [sorted(erasure.consumers())]
    report, _ = run_replay(settings)
    twice = len(decided) - len(set(decided))
    assert report["duplicate_decisions"] == twice
    result = {"events": len(held), "lost": lost, "twice": twice, "mismatches": report["mismatch_count"]}
    assert report["mismatch_count"] == 0, report["mismatches"][:3]
    assert lost == 0, "an event reported published is not on lifecycle.ingest"
    return result


def summary(what: str, kills: int, result: dict[str, int], seconds: float, restarts: int = 0) -> str:
    restarted = f" ({restarts} clean restarts)" if restarts else ""
    return (
        f"{what}: {kills} kills{restarted}, {result['events']} events published, {result['lost']} lost, "
        f"{result['twice']} decisions duplicated, {result['mismatches']} replay mismatches ({seconds:.0f} s)"
    )


def test_the_broker_leading_the_busiest_partitions_killed_mid_stream(
    cluster3: Settings, on_cluster: Settings, tmp_path: Path
) -> None:
    t0 = time.monotonic()
    s = on_cluster
    events = history(6_000, 600, seed=61)
    erasure = Erasure.of("erased-at-kill", events[0]["occurred_at"], events[-1]["occurred_at"] + 60_000)
    assert publish_lines([line(e) for e in erasure.collected], s).ok
    worker = spawn(s, tmp_path, 0)
    publisher = Publishing(s, events, per_second=150.0)
    try:
        publisher.start()
        folding(s)
        assert publish_lines([line(e) for e in erasure.requested], s).ok  # in flight: not folded yet
        victim = cluster.busiest(s)
        # the kill finds writes the victim took that its followers have not fetched, which
        # acks=all exists for: the followers stand still a moment while upstream writes on
        led = {p for p, leader in cluster.leaders(s).items() if leader == victim}
        late = Sending(s, [e for e in lone_events(events[0]["occurred_at"]) if home(s, e) in led][:20])
        with cluster.frozen(cluster3, (n for n in (1, 2, 3) if n != victim)):
            late.send()
            time.sleep(2.0)
            cluster.kill(cluster3, victim)
        assert cluster.up(cluster3) == [n for n in (1, 2, 3) if n != victim]
        erasure.acknowledge(s)  # the erasure goes through on the two brokers left
        time.sleep(3.0)  # traffic goes on without the victim a while longer
        assert publisher.is_alive()
        running(tmp_path, worker)
        broker.start(cluster3)  # the victim comes back, on the data it had
        cluster.wait_in_sync(s)
        acknowledged = late.acknowledged()
        assert acknowledged, "nothing was sent to the victim while its followers stood still"
        publisher.finish()
        wait_caught_up(s, timeout=240, proc=worker)
        wait_for_decision(s, "ErasureCompleted", erasure.request)
        assert stop_worker(worker) == 0, "the worker did not stop cleanly"
    finally:
        publisher.stop.set()
        stop_worker(worker)
    held = {ev["event_id"] for e in read_topic(s, "ingest", timeout_s=60) if (ev := e.decoded()) is not None}
    result = outcome(s, publisher.lost(held) + len(acknowledged - held), erasure)
    print(summary(f"leader of the busiest partitions (node {victim}) killed", 1, result, time.monotonic() - t0))


def test_a_rolling_restart_of_all_three_brokers_while_two_workers_fold(
    cluster3: Settings, on_cluster: Settings, tmp_path: Path
) -> None:
    t0 = time.monotonic()
    s = on_cluster
    events = history(20_000, 2_000, seed=67)  # more than the restarts take: published until they are done
    erasure = Erasure.of("erased-in-restart", events[0]["occurred_at"], events[-1]["occurred_at"] + 60_000)
    assert publish_lines([line(e) for e in erasure.collected], s).ok
    workers = [spawn(s, tmp_path, i) for i in range(2)]
    publisher = Publishing(s, events, per_second=50.0)
    try:
        publisher.start()
        folding(s)
        for node in (1, 2, 3):
            assert publisher.is_alive()
            running(tmp_path, *workers)
            if node == 2:
                assert publish_lines([line(e) for e in erasure.requested], s).ok
            broker.stop(cluster3, node=node)  # a clean shutdown: its partitions' leadership moves first
            if node == 2:
                erasure.acknowledge(s)
            broker.start(cluster3)
            cluster.wait_in_sync(s)  # as an operator does: the next one only once every copy caught up
        publisher.finish()
        wait_caught_up(s, timeout=240, proc=workers[0])
        wait_for_decision(s, "ErasureCompleted", erasure.request)
        assert [stop_worker(w) for w in workers] == [0, 0], "a worker did not stop cleanly"
    finally:
        publisher.stop.set()
        for w in workers:
            stop_worker(w)
    held = {ev["event_id"] for e in read_topic(s, "ingest", timeout_s=60) if (ev := e.decoded()) is not None}
    result = outcome(s, publisher.lost(held), erasure)
    print(summary("rolling restart of 3 brokers, 2 workers", 0, result, time.monotonic() - t0, restarts=3))


def cli_publish(settings: Settings, events: list[dict[str, Any]], timeout: float) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LIFECYCLE_")}
    env.update(settings.to_env())
    cmd = [sys.executable, "-m", "streams.cli", "publish", "-", "--timeout", str(timeout)]
    lines = b"".join(line(e) + b"\n" for e in events)
    return subprocess.run(cmd, env=env, input=lines.decode(), capture_output=True, text=True, timeout=timeout + 120)


def test_two_of_three_brokers_down_refuses_writes_loudly_and_the_worker_resumes(
    cluster3: Settings, on_cluster: Settings, tmp_path: Path
) -> None:
    t0 = time.monotonic()
    s = on_cluster
    events = history(6_000, 600, seed=71)
    at = events[0]["occurred_at"]
    refused_lines = lone_events(at, 20, name="late")
    worker = spawn(s, tmp_path, 0)
    publisher = Publishing(s, events, per_second=150.0)
    try:
        publisher.start()
        folding(s)
        first = cluster.busiest(s)
        second = next(n for n in (1, 2, 3) if n != first)
        cluster.kill(cluster3, first)
        cluster.kill(cluster3, second)

        refused = cli_publish(s, refused_lines, timeout=10)
        assert refused.returncode == 1, refused.stdout + refused.stderr
        line = refused.stdout.strip()
        assert line.startswith(f"published 0 events to {s.topic('ingest')}, {len(refused_lines)} lines not delivered"), line
        assert "2 of the 3 brokers at LIFECYCLE_BOOTSTRAP do not answer" in line, line
        # "... with 2 copies in sync (min.insync.replicas)" when the broker left says so in time
        assert "takes a write only with" in line and "min.insync.replicas" in line, line
        assert "Traceback" not in refused.stderr
        running(tmp_path, worker)  # it did not give up: it waits for the brokers

        broker.start(cluster3)
        cluster.wait_in_sync(s)
        resumed = cli_publish(s, refused_lines, timeout=120)  # upstream sends them again
        assert resumed.returncode == 0, resumed.stdout + resumed.stderr
        time.sleep(3.0)
        publisher.finish()
        wait_caught_up(s, timeout=240, proc=worker)  # the same worker: it waited, it did not restart
        assert stop_worker(worker) == 0, "the worker did not stop cleanly"
    finally:
        publisher.stop.set()
        stop_worker(worker)
    held = {ev["event_id"] for e in read_topic(s, "ingest", timeout_s=60) if (ev := e.decoded()) is not None}
    result = outcome(s, publisher.lost(held) + len({e["event_id"] for e in refused_lines} - held))
    assert result["twice"] == 0, "a decision was taken twice"
    print(summary(f"nodes {first} and {second} of 3 killed, writes refused meanwhile", 2, result, time.monotonic() - t0))


def test_exactly_once_on_the_cluster_a_worker_killed_with_its_transaction_open(on_cluster: Settings, tmp_path: Path) -> None:
    """The single broker's crash test, on three copies that need two in sync: the batch's
    transaction spans partitions led by different brokers, its offsets go to a group
    coordinator and its markers to a transaction coordinator of their own, and still no
    killed batch is visible, nothing is written twice, and the fold ends where the pure fold
    ends."""
    t0 = time.monotonic()
    killed = kill_mid_batch(dataclasses.replace(on_cluster, guarantee="exactly_once"), tmp_path, seed=73)
    assert all(lag > 0 for lag, _ in killed.kills)
    print(f"(on 3 nodes, {len(killed.kills)} worker kills, {time.monotonic() - t0:.0f} s)")
