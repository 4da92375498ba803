"""Hostile input end to end: what a broken or malicious upstream can put on ``lifecycle.ingest``.

``test_guard.py`` and ``test_codec.py`` fuzz the pure functions; this module puts their output
where it matters, on a real broker in front of a real worker process, with messages published
straight to ``lifecycle.ingest`` by a plain kafka-python producer (any upstream can bypass
``lifecycle publish``): random bytes, empty and null values, truncated messages, messages close
to the broker's size limit, unknown or mismatched schema fingerprints, valid Avro of types no
upstream may send, thousands of fields, field names disguised to slip past the special-category
refusal, card numbers split every which way, and messages keyed by something other than their
subject. Each is followed by a good event on the same partition. What a user relies on:

- the worker neither crashes nor stalls: the good event behind every hostile one comes out
  downstream;
- every hostile message is dead-lettered on ``lifecycle.rejected`` with a reason and its place
  (topic, partition, offset);
- nothing a hostile message carried (or a good one, outside ``lifecycle.records``) reaches any
  other topic or the worker's log, in any form a scan of the raw bytes can find.

And ``lifecycle publish`` either publishes a line whole or reports it with its number and reason,
for every kind of bad line.

Hypothesis draws most of the cases (``hostile_cases.py``); each run draws new ones. A failure
message names the seed, and ``HOSTILE_SEED=<seed>`` draws the same cases again.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from support.hostile import (
    NOW,
    SEED,
    Case,
    Person,
    bad_lines,
    collected,
    drawn,
    forms,
    good_line,
    hostile_cases,
    wire,
)

from schemas.codec import decode
from schemas.contract import parse_line
from streams.plumbing.reading import latest_by_key, read_entries, read_topic
from streams.settings import Settings, load_policy
from streams.worker.processes import spawn_worker, stop_worker, wait_caught_up

pytestmark = pytest.mark.integration


# --------------------------------------------------------------------------------------
# the broker side
# --------------------------------------------------------------------------------------


def max_message_bytes(settings: Settings) -> int:
    """The largest message ``lifecycle.ingest`` takes, as the broker says."""
    from kafka.admin import ConfigResource, ConfigResourceType, KafkaAdminClient

    admin = KafkaAdminClient(bootstrap_servers=settings.bootstrap.split(","))
    try:
        topic = settings.topic("ingest")
        found = admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, topic, configs=["max.message.bytes"])], config_filter="all"
        )
        return int(found["topic"][topic]["max.message.bytes"]["value"])
    finally:
        admin.close()


def raw_producer(settings: Settings, limit: int) -> Any:
    from kafka import KafkaProducer

    return KafkaProducer(
        bootstrap_servers=settings.bootstrap.split(","),
        client_id="hostile-upstream",
        acks="all",
        linger_ms=5,
        max_request_size=limit + 65_536,  # the broker, not this client, is to decide
    )


def every_topic(settings: Settings) -> dict[str, bytes]:
    """Keys and values of every topic of this test, ours and the worker's internal ones."""
    from kafka import KafkaAdminClient

    admin = KafkaAdminClient(bootstrap_servers=settings.bootstrap.split(","))
    try:
        names = [t for t in admin.list_topics() if t.startswith((settings.topic_prefix, settings.app_id))]
    finally:
        admin.close()
    return {
        name: b"".join((e.key or b"") + b"\0" + (e.value or b"") for e in read_entries(settings.bootstrap, name))
        for name in names
    }


def leaks(haystacks: dict[str, bytes], secrets: set[bytes]) -> list[str]:
    return sorted(f"{name}: {s[:40]!r}" for name, data in haystacks.items() for s in secrets if s in data)


@pytest.fixture
def worker_log(settings: Settings, tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], Path]]:
    log = tmp_path / "worker.log"
    proc = spawn_worker(settings, log)
    try:
        yield proc, log
    finally:
        stop_worker(proc)


# --------------------------------------------------------------------------------------
# the tests
# --------------------------------------------------------------------------------------


def test_hostile_messages_are_dead_lettered_and_leak_nowhere_while_good_ones_flow(
    settings: Settings, worker_log: tuple[subprocess.Popen[bytes], Path]
) -> None:
    proc, log = worker_log
    limit = max_message_bytes(settings)
    cases = hostile_cases(limit)
    where = f"(hypothesis seed {SEED}: HOSTILE_SEED={SEED} draws these cases again)"

    # each hostile message is followed on its partition by a good event; a few good subjects
    # are then erased, so that decisions are written too
    tag = uuid.uuid4().hex[:10]
    good = [Person.new("gd", i) for i in range(len(cases))]
    erased = set(range(0, len(cases), 50))
    placed: dict[tuple[int, int], Case] = {}
    good_places: set[tuple[int, int]] = set()
    producer = raw_producer(settings, limit)
    topic = settings.topic("ingest")
    try:
        sends = []
        for i, case in enumerate(cases):
            partition = i % settings.partitions
            sends.append((case, producer.send(topic, key=case.key, value=case.value, partition=partition)))
            event = collected(f"gd-{i}", f"gd-e{i}-{tag}", good[i].fields())
            sends.append((None, producer.send(topic, key=f"gd-{i}".encode(), value=wire(event), partition=partition)))
        for i in sorted(erased):
            for event in (
                {"type": "ErasureRequested", "request_id": f"q-{i}"},
                {"type": "IdentityVerified", "request_id": f"q-{i}", "method": "email_link"},
            ):
                full = {**event, "event_id": f"gd-{event['type']}-{i}-{tag}", "subject_id": f"gd-{i}",
                        "occurred_at": NOW + 1_000, "source": "hostile-test"}  # fmt: skip
                partition = i % settings.partitions
                sends.append((None, producer.send(topic, key=f"gd-{i}".encode(), value=wire(full), partition=partition)))
        producer.flush()
        for case, future in sends:
            meta = future.get(timeout=60)
            if case is None:
                good_places.add((meta.partition, meta.offset))
            else:
                placed[(meta.partition, meta.offset)] = case
    finally:
        producer.close()

    wait_caught_up(settings, timeout=120, proc=proc)
    assert proc.poll() is None, "the worker exited"
    log_text = log.read_bytes()
    crashes = [ln for ln in log_text.decode(errors="replace").splitlines() if "Crashed" in ln or "CRITICAL" in ln]
    assert not crashes, f"the worker's agents crashed: {crashes[:3]}"

    # no stall: the good event behind every hostile one came out downstream, whole
    records = latest_by_key(read_topic(settings, "records"))
    for i, person in enumerate(good):
        entry = records.get(f"gd-{i}/r1".encode())
        assert entry is not None, f"the good event after {cases[i].kind} never came out {where}"
        if i in erased:
            assert entry.tombstone, f"gd-{i} was erased"
        else:
            assert entry.decoded()["fields"] == person.fields()

    # every hostile message dead-lettered once, with a reason and its place; nothing else
    rejected: dict[tuple[int, int], list[dict]] = {}
    for entry in read_topic(settings, "rejected"):
        letter = entry.decoded()
        assert letter is not None and letter["topic"] == topic
        rejected.setdefault((letter["partition"], letter["offset"]), []).append(letter)
    assert not good_places & set(rejected), f"good events were dead-lettered {where}"
    for place, case in placed.items():
        letters = rejected.get(place)
        assert letters, f"{case.kind} at {place} was not dead-lettered {where}"
        assert len(letters) == 1, f"{case.kind} at {place} was dead-lettered {len(letters)} times"
        reason = letters[0]["reason"]
        assert reason, f"{case.kind}: a dead letter without a reason"
        if case.reasons is not None:
            expected = sorted(case.reasons)
            assert reason in case.reasons, f"{case.kind}: dead-lettered as {reason}, not {expected} {where}"
    assert len(rejected) == len(placed)

    # nothing personal leaves lifecycle.ingest, except the good records downstream
    topics = every_topic(settings)
    hostile = set().union(*(case.leak_forms() for case in cases))
    good_values = set().union(*(forms(v.encode()) for person in good for v in person.values()))
    assert leaks({topic: topics[topic]}, hostile), "the scan would prove nothing: ingest holds no secret"
    others = {name: data for name, data in topics.items() if name != topic}
    found = leaks(others, hostile)
    assert not found, f"hostile values escaped lifecycle.ingest {where}: {found[:5]}"
    # the complete feed and each consumer's own carry records in plaintext, by design
    plaintext = {settings.topic("records"), *(settings.topic(f"records.{c}") for c in load_policy().consumer_names)}
    found = leaks({n: d for n, d in others.items() if n not in plaintext}, good_values)
    assert not found, f"personal values outside the records feeds (sealed, dead letters, decisions): {found[:5]}"
    found = leaks({"worker log": log_text}, hostile | good_values)
    assert not found, f"personal values in the worker's log {where}: {found[:5]}"


def cli(settings: Settings, *args: str) -> subprocess.CompletedProcess[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LIFECYCLE_")}
    env.update(settings.to_env())
    return subprocess.run([sys.executable, "-m", "streams.cli", *args], env=env, capture_output=True, timeout=120)


def test_publish_publishes_each_line_whole_or_reports_it_by_number(settings: Settings, tmp_path: Path) -> None:
    """``lifecycle publish`` on a file where good lines alternate with hostile ones: every line
    is either on ``lifecycle.ingest`` exactly as written or reported as ``line N: reason``,
    never both, never neither, and no report quotes what the line held. A line too large for a
    Kafka message, which the contract cannot see, is reported too, not a crash."""
    limit = max_message_bytes(settings)
    recipes = drawn(bad_lines(), 120)
    big = Person.new("big", 0)
    huge = {**good_line(0, big), "fields": {f"f{j}": big.name * (60_000 // len(big.name)) for j in range(20)}}
    assert len(orjson.dumps(huge)) > limit

    lines: list[bytes] = []
    expect_bad: set[int] = set()
    good_events: dict[str, dict] = {}
    secrets = {v.encode() for v in big.values()}
    too_large = [
        lambda n, p: orjson.dumps({**huge, "event_id": f"L{n}"}),
        lambda n, p: b"{" + os.urandom(2_000_000).replace(b"\n", b""),
    ]
    for recipe in [*recipes, *too_large]:
        for bad in (True, False):
            n = len(lines) + 1
            person = Person.new("pl", n)
            secrets |= {v.encode() for v in person.values()}
            if bad:
                lines.append(recipe(n, person))
                expect_bad.add(n)
            else:
                lines.append(orjson.dumps(good_line(n, person)))
                good_events[f"L{n}"] = parse_line(lines[-1])
        lines.append(b"   ")  # blank lines are skipped, yet counted
    path = tmp_path / "hostile.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")

    done = cli(settings, "publish", str(path))
    err, out = done.stderr.decode(errors="replace"), done.stdout.decode(errors="replace")
    where = f"(hypothesis seed {SEED})"
    assert done.returncode == 1, err
    assert "Traceback" not in err, err[-2000:]
    reported = [int(ln.split(":")[0].removeprefix("line ")) for ln in err.splitlines() if ln.startswith("line ")]
    assert len(err.strip().splitlines()) == len(reported), f"stderr holds more than line reports: {err[:500]}"
    assert sorted(reported) == sorted(expect_bad), f"reported {sorted(set(reported) ^ expect_bad)} wrongly {where}"
    assert f"published {len(good_events)} events" in out

    published = {}
    for entry in read_topic(settings, "ingest"):
        event = decode(entry.value)
        assert event is not None
        published[event["event_id"]] = event
        assert entry.key == event["subject_id"].encode()
    assert published == good_events, f"the topic differs from the good lines {where}"
    assert not [s for s in secrets if s in (err + out).encode()], f"a report quotes a line {where}"
