"""The batch loop killed after any step of any batch ends exactly where the pure fold ends.

Every produce, flush and commit the worker makes is a numbered step of the in-memory Kafka
(``support.kafka``); for each step number the worker is killed right there (what it had in
flight reaches the broker as an idempotent producer allows: some prefix per partition), a fresh
worker with an empty local store folds again from the last commit, and then the downstream
topics, the decisions in the log and the auditor's replay must be what the pure fold computes:
no erasure lost, no record resurrected, no decision the fold does not take, none missing, and a
decision written twice only as the same bytes. The real broker and real SIGKILLs are the
integration suite's (``tests/integration/worker/test_faults.py``).
"""

from __future__ import annotations

import dataclasses
import random
from pathlib import Path

import pytest
from support.kafka import Broker, Crash, MemoryKafka, Steps

from processors.audit import Audit
from processors.envelope import ERASED, keys_of
from processors.fold import DECISION_TYPES, TIMER_DECISIONS
from processors.messages import downstream_of
from processors.shredding import Keyring, Keystore, new_data_key
from schemas import BY_NAME
from schemas.codec import decode, encode
from streams.bench.history import history
from streams.settings import Settings, load_policy
from streams.worker.loop import Worker

POLICY = load_policy()
KEYRING = Keyring.of(new_data_key())
HISTORY = history(160, 16, seed=31)
FINGERPRINTS = frozenset(BY_NAME[n].fingerprint for n in TIMER_DECISIONS)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    # small batches, so a short history makes many of them; no timer: the pure fold takes no tick
    return dataclasses.replace(
        Settings.from_env({}), home=tmp_path, store="memory://", partitions=4, fold_batch=12, timer_interval=3600.0
    )


def fresh_broker(settings: Settings) -> Broker:
    broker = Broker(settings.partitions)
    broker.publish(settings.topic("ingest"), HISTORY)
    return broker


def run_worker(settings: Settings, broker: Broker, steps: Steps, rng: random.Random) -> bool:
    """One worker process on ``broker`` until it has nothing left to fold; True if it was killed."""
    kafka = MemoryKafka(broker, steps)
    worker = Worker(settings, POLICY, KEYRING, clients=kafka)
    try:
        worker.run(until_idle=True)
    except Crash:
        kafka.producer.crashed(rng)
        return True
    return False


def decisions_in_log(settings: Settings, broker: Broker) -> list[dict]:
    return [
        ev
        for entries in broker.entries(settings.topic("events")).values()
        for _, _, value in entries
        if (ev := decode(value)) is not None and ev["type"] in DECISION_TYPES
    ]


def assert_where_the_pure_fold_ends(settings: Settings, broker: Broker) -> int:
    """The checks of one crashed-and-resumed run; returns how many decisions were written twice."""
    want = downstream_of(HISTORY, POLICY)
    assert broker.last_values(settings.topic("records")) == want.records
    assert broker.last_values(settings.topic("consent")) == want.consent
    decided = [d["event_id"] for d in decisions_in_log(settings, broker)]
    assert set(decided) == set(want.decisions)
    for p in range(settings.partitions):  # everything folded is committed
        assert broker.committed[(settings.topic("ingest"), p)] == len(broker.logs[(settings.topic("ingest"), p)])
    audit = Audit(POLICY, lambda v, p, o: decode(v), lambda e: encode(e))  # type: ignore[arg-type,return-value]
    for p, entries in sorted(broker.entries(settings.topic("events")).items()):
        audit.partition(p, entries, FINGERPRINTS)
    keys = {k: v for k, v in broker.last_values(settings.topic("keys")).items() if v is not None}
    # every copy of an event in the log opens with the key the broker holds for it: none went out
    # before its key, to be sealed again under another when the batch was folded again
    store = Keystore(keys, KEYRING, encode, decode, lambda: 0)  # type: ignore[arg-type]
    for entries in broker.entries(settings.topic("events")).values():
        for _, _, value in entries:
            event = decode(value)
            if event and event.get("fields") and keys_of(event["fields"]) & {k.decode() for k in keys}:
                assert ERASED not in store.open(event["fields"]).values(), f"{event['event_id']} does not open"
    report = audit.finish([k.decode() for k in keys])
    assert report["mismatch_count"] == 0, report["mismatches"]
    assert report["duplicate_decisions"] == len(decided) - len(set(decided))
    return report["duplicate_decisions"]


def crash_points(kinds: list[str]) -> list[int]:
    """Every flush and commit; of the produce steps between two of them, the first and the last
    (what was in flight differs most there) and every fifth: a kill after produce k and after
    k + 1 of one window differ only in what is in flight, which ``crashed`` varies anyway."""
    chosen = []
    for i, kind in enumerate(kinds, start=1):
        first = i == 1 or kinds[i - 2] != "produce"
        last = i == len(kinds) or kinds[i] != "produce"
        if kind != "produce" or first or last or i % 5 == 0:
            chosen.append(i)
    return chosen


def test_a_clean_run_is_the_pure_fold(settings: Settings) -> None:
    broker = fresh_broker(settings)
    assert not run_worker(settings, broker, Steps(), random.Random(0))
    assert assert_where_the_pure_fold_ends(settings, broker) == 0


def test_a_worker_killed_after_any_step_of_any_batch_ends_where_the_pure_fold_ends(settings: Settings) -> None:
    counted = Steps()
    run_worker(settings, fresh_broker(settings), counted, random.Random(0))
    kinds = counted.kinds
    assert {"produce", "flush", "commit"} <= set(kinds) and kinds.count("commit") >= 10  # the premise: many batches
    rng = random.Random(7)
    twice = 0
    for crash_at in crash_points(kinds):
        broker = fresh_broker(settings)
        assert run_worker(settings, broker, Steps(crash_at), rng), f"no crash at step {crash_at}"
        assert not run_worker(settings, broker, Steps(), rng)
        try:
            twice += assert_where_the_pure_fold_ends(settings, broker)
        except AssertionError as exc:
            raise AssertionError(f"killed at step {crash_at} ({kinds[crash_at - 1]}): {exc}") from None
    # the premise: some kills fell after a batch's outputs were out and before its commit
    assert twice > 0
