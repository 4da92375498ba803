"""A worker SIGKILLed in the middle of folding, again and again, restarted each time, on
whichever broker or cluster the settings name: the single broker's fault suite and the
cluster's exactly-once test run the same crash and the same checks.

Each kill lands while a batch is in flight, and the run proves it rather than hoping: the
worker is killed once the group's committed offsets have started to move and before they reach
the end, and the lag is above zero after the kill. At the end: the last value of every key on
``lifecycle.records`` and ``lifecycle.consent`` (no erasure lost, no record resurrected after
its tombstone), every decision the pure fold takes is in the log and none it does not take, and
the auditor's replay finds no mismatch; a decision written twice is byte-for-byte the same, and
counted.
"""

from __future__ import annotations

import dataclasses
import signal
import time
from pathlib import Path

from processors import fold as lifecycle
from processors.messages import downstream_of
from schemas.codec import encode
from streams.bench.history import history
from streams.bench.measure import fill
from streams.commands.replay import run_replay
from streams.plumbing.reading import latest_by_key, read_topic
from streams.settings import Settings, load_policy
from streams.worker.processes import LagProbe, group_offsets, spawn_worker, stop_worker, wait_caught_up

KILLS = 4
"""At least this many; more (at most ``MAX_KILLS``) until one fell between outputs and commit."""
MAX_KILLS = 8
CHUNK = 1_500


@dataclasses.dataclass
class Killed:
    """What the kills left: per kill (lag right after it, events with outputs but no commit)."""

    kills: list[tuple[int, int]]
    published: int
    twice: int
    entries_twice: int
    replay_entries: int
    mismatches: int

    def __str__(self) -> str:
        return (
            f"{len(self.kills)} kills (lag after each, events with outputs but no commit): {self.kills}; "
            f"{self.published} events published, 0 lost; {self.twice} decisions written twice; "
            f"replay {self.replay_entries} entries, {self.mismatches} mismatches"
        )


def caused_by_uncommitted(settings: Settings, committed: dict[int, int]) -> set[str]:
    """Event ids of ingest messages the group has not committed, whose outputs the broker holds
    nonetheless (read committed: what a downstream consumer would act on): as entries of the
    log, as the cause of a decision, of a record or of a consent."""
    pending = {
        ev["event_id"]
        for e in read_topic(settings, "ingest", timeout_s=60)
        if e.offset >= committed.get(e.partition, 0) and (ev := e.decoded()) is not None
    }
    seen: set[str] = set()
    for name in ("events", "records", "consent"):
        for e in read_topic(settings, name, timeout_s=60):
            ev = e.decoded()
            if ev is not None:
                seen.update(v for v in (ev.get("event_id"), ev.get("caused_by")) if isinstance(v, str))
    return pending & seen


def committed_offsets(probe: LagProbe, settings: Settings) -> dict[int, int]:
    topic = settings.topic("ingest")
    return {tp.partition: meta.offset for tp, meta in group_offsets(probe.admin, settings.app_id).items() if tp.topic == topic}


def kill_mid_batch(settings: Settings, tmp_path: Path, seed: int = 29) -> Killed:
    """Publishes a chunk, starts a worker, kills it mid-batch; again until enough kills; then
    one last worker folds the rest, and everything downstream is checked against the pure fold.

    At least once, some kill must fall between a batch's outputs and its commit (what the mode
    exists for), so kills go on until one does. Exactly once, none may: a batch's outputs are
    visible only with its offsets, and nothing is written twice."""
    exactly_once = settings.guarantee == "exactly_once"
    # small batches and no retention tick (the pure fold takes none): many batches in flight
    settings = dataclasses.replace(settings, timer_interval=3600.0, fold_batch=100)
    events = history(CHUNK * MAX_KILLS, 400, seed=seed)
    probe = LagProbe(settings)
    kills: list[tuple[int, int]] = []
    published = 0
    enough = KILLS if exactly_once else MAX_KILLS  # nothing more to wait for: none may fall so
    try:
        while len(kills) < KILLS or (not any(n for _, n in kills) and len(kills) < enough):
            chunk = events[published : published + CHUNK]
            fill(settings, "ingest", [(e["subject_id"].encode(), encode(e)) for e in chunk])  # type: ignore[misc]
            published += len(chunk)
            proc = spawn_worker(settings, tmp_path / f"worker-{len(kills)}.log")
            before = probe() or published  # nothing committed yet: all of it outstanding
            deadline = time.monotonic() + 120
            while True:  # kill once the group commits, before it has committed everything
                lag = probe()
                if lag is not None and 0 < lag < before:
                    break
                assert proc.poll() is None and time.monotonic() < deadline, "the worker never got to folding"
                time.sleep(0.05)
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            after = probe()
            assert after is not None and after > 0, "the worker was killed with nothing in flight"
            kills.append((after, len(caused_by_uncommitted(settings, committed_offsets(probe, settings)))))
            # let the group forget the dead member (session timeout 10 s) before the restart:
            # a restarted worker whose join spans two generations was seen to sit idle
            time.sleep(12.0)
    finally:
        probe.close()
    proc = spawn_worker(settings, tmp_path / "worker-last.log")
    try:
        wait_caught_up(settings, timeout=300, proc=proc)
    finally:
        stop_worker(proc)

    folded = events[:published]
    held = [ev for e in read_topic(settings, "ingest", timeout_s=60) if (ev := e.decoded()) is not None]
    assert sorted(e["event_id"] for e in held) == sorted(e["event_id"] for e in folded), "the input is not what was published"
    want = downstream_of(folded, load_policy())
    got_records = {k: e.value for k, e in latest_by_key(read_topic(settings, "records", timeout_s=60)).items()}
    got_consent = {k: e.value for k, e in latest_by_key(read_topic(settings, "consent", timeout_s=60)).items()}
    assert got_records == want.records
    assert got_consent == want.consent
    logged = [ev for e in read_topic(settings, "events", timeout_s=60) if (ev := e.decoded()) is not None]
    decided = [ev["event_id"] for ev in logged if ev["type"] in lifecycle.DECISION_TYPES]
    assert set(decided) == set(want.decisions)  # none lost, none invented

    report, _ = run_replay(settings)
    entries = [ev["event_id"] for ev in logged]
    result = Killed(
        kills=kills,
        published=published,
        twice=len(decided) - len(set(decided)),
        entries_twice=len(entries) - len(set(entries)),
        replay_entries=report["events_read"],
        mismatches=report["mismatch_count"],
    )
    print(f"{settings.guarantee.replace('_', ' ')}: {result}")
    assert report["mismatch_count"] == 0, report["mismatches"]
    assert report["duplicate_decisions"] == result.twice
    if not exactly_once:
        assert any(n for _, n in kills), "no kill fell between a batch's outputs and its commit"
        return result
    assert [n for _, n in kills] == [0] * len(kills), "outputs of an uncommitted batch were visible"
    assert result.twice == 0
    assert result.entries_twice == 0, "an entry was appended to the log twice"
    return result
