"""The auditor's replay: a faithful log verifies, a tampered copy is caught at the exact offset.

The in-memory tests build a log the way the worker writes one (events appended, the fold's
decisions appended after them with their hash chain, timer decisions placed after the entry
they followed) and hand it to the same audit the ``lifecycle replay`` command runs. The
integration test tampers with a copy of a real worker's log on the real broker and runs the
command.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from processors.audit import Audit
from processors.fold import TIMER_DECISIONS
from processors.policy import Policy
from schemas import BY_NAME
from schemas.codec import decode, encode
from streams.commands.replay import _decode, _encode
from streams.plumbing.reading import read_topic
from streams.plumbing.upstream import publish_lines
from streams.settings import Settings, load_policy
from streams.worker.processes import spawn_worker, stop_worker, wait_caught_up

DAY = 86_400_000
T0 = 1_705_312_800_000
FPS = frozenset(BY_NAME[n].fingerprint for n in TIMER_DECISIONS)


@pytest.fixture(scope="module")
def policy() -> Policy:
    return load_policy()


def ev(typ: str, eid: str, sid: str, at: int, **kw: object) -> dict:
    return {"type": typ, "event_id": eid, "subject_id": sid, "occurred_at": at, "source": "test", **kw}


HISTORY = [
    ev(
        "DataCollected",
        "e1",
        "s-1",
        T0,
        record_id="r1",
        category="contact",
        purpose="inquiry",
        legal_basis="legitimate_interest",
        fields={"name": "A"},
    ),
    ev(
        "DataCollected",
        "e2",
        "s-2",
        T0,
        record_id="r1",
        category="contact",
        purpose="inquiry",
        legal_basis="legitimate_interest",
        fields={"name": "B"},
    ),
    ev(
        "DataCollected",
        "e3",
        "s-1",
        T0,
        record_id="r2",
        category="contact",
        purpose="newsletter",
        legal_basis="consent",
        fields={"name": "A"},
    ),
    ev("ErasureRequested", "e4", "s-1", T0 + DAY, request_id="q1"),
    ev("IdentityVerified", "e5", "s-1", T0 + DAY, request_id="q1", method="email_link"),
    ev("AccessRequested", "e6", "s-2", T0 + DAY, request_id="q2"),
]


def audit(entries: list[tuple[int, int, bytes]], policy: Policy) -> dict:
    a = Audit(policy, _decode, _encode)
    a.partition(0, entries, FPS)
    return a.finish(set())


@pytest.mark.integration
def test_replay_command_passes_on_the_real_log_and_names_the_tampered_offset(settings: Settings, tmp_path: Path) -> None:
    history = [{**e, "occurred_at": f"2026-03-0{1 + i // 3}T10:00:00Z"} for i, e in enumerate(HISTORY)]
    proc = spawn_worker(settings, tmp_path / "worker.log")
    try:
        assert publish_lines([orjson.dumps(e) for e in history], settings).ok
        wait_caught_up(settings, proc=proc)
    finally:
        stop_worker(proc)
    env = {k: v for k, v in os.environ.items() if not k.startswith("LIFECYCLE_")}
    env.update(settings.to_env())
    ok = subprocess.run([sys.executable, "-m", "streams.cli", "replay"], env=env, capture_output=True, timeout=300)
    assert ok.returncode == 0, ok.stdout.decode() + ok.stderr.decode()
    assert orjson.loads(ok.stdout)["erasures_proven"] == 1

    # a copy of the log with one decision altered, under another prefix
    import dataclasses

    from kafka import KafkaProducer

    from streams.plumbing.topics import ensure_topics

    copy_settings = dataclasses.replace(settings, topic_prefix=settings.topic_prefix + "copy.")
    ensure_topics(copy_settings)
    producer = KafkaProducer(bootstrap_servers=settings.bootstrap)
    target: tuple[int, int] | None = None
    try:
        for name in ("events", "keys"):
            for e in sorted(read_topic(settings, name), key=lambda e: (e.partition, e.offset)):
                value = e.value
                if name == "events" and target is None and value is not None:
                    event = decode(value)
                    if event is not None and event["type"] == "ErasureExecuted":
                        value = encode({**event, "erased": []})
                        target = (e.partition, e.offset)
                producer.send(copy_settings.topic(name), key=e.key, value=value, partition=e.partition)
        producer.flush()
    finally:
        producer.close()
    assert target is not None
    env.update(copy_settings.to_env())
    bad = subprocess.run([sys.executable, "-m", "streams.cli", "replay"], env=env, capture_output=True, timeout=300)
    assert bad.returncode == 1
    report = orjson.loads(bad.stdout)
    assert {"kind": "differs", "partition": target[0], "offset": target[1]}.items() <= report["mismatches"][0].items()


@pytest.mark.integration
def test_replay_finds_no_mismatch_over_a_log_that_spans_a_policy_change(settings: Settings, tmp_path: Path) -> None:
    """A worker folds under one policy, the next one under an edited file: the log says which
    policy each stretch followed, and the replay, given either file, re-derives every decision."""
    import dataclasses

    policy = load_policy()
    edited = tmp_path / "policy.toml"
    edited.write_text(policy.text.replace("(the policy's own example of consent)", "(and partner offers)"), encoding="utf-8")
    newer = dataclasses.replace(settings, policy_file=edited)
    collect = {"category": "contact", "purpose": "newsletter", "legal_basis": "consent", "fields": {"name": "A"}}
    before = [
        ev("ConsentGiven", "p1", "s-p", "2026-11-01T10:00:00Z", purpose="newsletter"),  # type: ignore[arg-type]
        ev("DataCollected", "p2", "s-p", "2026-11-01T10:01:00Z", record_id="r1", **collect),  # type: ignore[arg-type]
        ev("AccessRequested", "p3", "s-q", "2026-11-01T10:02:00Z", request_id="q1"),  # type: ignore[arg-type]
        ev("IdentityVerified", "p4", "s-q", "2026-11-01T10:03:00Z", request_id="q1", method="email_link"),  # type: ignore[arg-type]
    ]
    after = [  # the newsletter means more now: the old consent no longer covers a collection
        ev("DataCollected", "p5", "s-p", "2026-11-20T10:00:00Z", record_id="r2", **collect),  # type: ignore[arg-type]
        ev("AccessRequested", "p6", "s-q", "2026-11-20T10:01:00Z", request_id="q2"),  # type: ignore[arg-type]
        ev("IdentityVerified", "p7", "s-q", "2026-11-20T10:02:00Z", request_id="q2", method="email_link"),  # type: ignore[arg-type]
    ]
    for run_settings, events in ((settings, before), (newer, after)):
        proc = spawn_worker(run_settings, tmp_path / "worker.log")
        try:
            assert publish_lines([orjson.dumps(e) for e in events], run_settings).ok
            wait_caught_up(run_settings, proc=proc)
        finally:
            stop_worker(proc)

    log = [e.decoded() for e in read_topic(settings, "events")]
    adopted = [e for e in log if e and e["type"] == "PolicyAdopted"]
    assert {e["version"] for e in adopted} == {policy.version, load_policy(edited).version}
    refused = [e for e in log if e and e["type"] == "RequestRejected"]
    assert [(e["reason"], e["policy"]) for e in refused] == [("consent_needs_renewal", load_policy(edited).version)]

    env = {k: v for k, v in os.environ.items() if not k.startswith("LIFECYCLE_")}
    for configured in (settings, newer):
        env.update(configured.to_env())
        done = subprocess.run([sys.executable, "-m", "streams.cli", "replay"], env=env, capture_output=True, timeout=300)
        assert done.returncode == 0, done.stdout.decode()[-3000:] + done.stderr.decode()[-2000:]
        report = orjson.loads(done.stdout)
        assert report["mismatch_count"] == 0 and report["policies_adopted"] == len(adopted)
        assert report["decisions_rederived"] == report["decisions_recorded"] >= 3
