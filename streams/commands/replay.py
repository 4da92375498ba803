"""``lifecycle replay``: the auditor's replay of ``lifecycle.events``, needing no worker.

    lifecycle replay                       # JSON report on stdout, progress on stderr
    lifecycle replay --until 2026-06-30T00:00:00Z
    lifecycle replay --subject s-1001      # one subject's audit trail, erased fields shown as [erased]

Reads every partition from the beginning to the end offsets it finds at start (or to
``--until``, by the time Kafka appended each entry), hands them to ``processors.audit`` and
``lifecycle.keys`` to the key checks, prints the report, and exits 1 on any mismatch.

The scans use librdkafka (``streams.plumbing.scan``: twice kafka-python's rate on the same topic)
with large fetches and no consumer group: the replay is a read-only scan that commits
nothing and disturbs no one.
"""

from __future__ import annotations

import multiprocessing
import os
import sys
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import orjson

from processors.audit import Audit, Entry
from processors.envelope import ERASED, PREFIX, key_of
from processors.fold import DECISION_TYPES, TIMER_DECISIONS, export
from processors.state import Event
from schemas import BY_NAME
from schemas.codec import CodecError, Where, decode, encode
from streams.plumbing.scan import live_keys, read_all
from streams.settings import Settings, load_policy

PARALLEL_FROM = 20_000
"""Log entries from which the audit is split across processes, one group of partitions each:
below that, starting the processes costs more than they save."""


def read_partitions(
    settings: Settings, name: str, until_ms: int | None = None, progress: Callable[[int, int], None] | None = None
) -> dict[int, list[Entry]]:
    """Every entry of ``lifecycle.<name>`` up to its end offsets at the time of the call."""
    return read_all(settings, name, until_ms, progress)


def _decode(value: bytes, partition: int, offset: int) -> Event:
    try:
        event = decode(value, Where("lifecycle.events", partition, offset))
    except CodecError as exc:
        raise ValueError(exc.reason) from None
    assert event is not None
    return event


def _encode(event: Event) -> bytes:
    value = encode(event)
    assert value is not None
    return value


def _parse_until(text: str | None) -> int | None:
    if not text:
        return None
    when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return int(when.timestamp() * 1000)


class _Bar:
    """A one-line progress bar on stderr, redrawn at most ten times a second."""

    def __init__(self, out: IO[str], label: str) -> None:
        self.out = out
        self.label = label
        self.last = 0.0

    def __call__(self, done: int, total: int) -> None:
        now = time.monotonic()
        if now - self.last < 0.1 and done < total:
            return
        self.last = now
        width = 30
        filled = int(width * done / total) if total else width
        self.out.write(f"\r{self.label} [{'#' * filled}{'.' * (width - filled)}] {done:,}/{total:,}")
        if done >= total:
            self.out.write("\n")
        self.out.flush()


def run_replay(
    settings: Settings,
    until_ms: int | None = None,
    progress: bool = False,
    err: IO[str] = sys.stderr,
    keep_states: bool = False,
) -> tuple[dict[str, Any], Audit]:
    started = time.monotonic()
    policy = load_policy(settings.policy_file)
    audit = Audit(policy, _decode, _encode, settings.clock_skew_ms)
    bar = _Bar(err, "reading lifecycle.events") if progress else None
    partitions = read_partitions(settings, "events", until_ms, bar)
    from kafka.errors import TopicAuthorizationFailedError

    def keys_if_allowed() -> dict[str, bytes] | None:
        try:
            return live_keys(settings)
        except TopicAuthorizationFailedError:
            # the auditor principal may read the log of record but not the wrapped data keys
            # (only the worker may): the decisions are still re-derived, the key checks are not
            return None

    # a subject's trail (--subject) needs its whole state, which only a single process keeps
    _, keys = audit_partitions(
        audit,
        partitions,
        settings.policy_file,
        jobs=1 if keep_states else None,
        meanwhile=keys_if_allowed,
        skew_ms=settings.clock_skew_ms,
    )
    report = audit.finish(keys.keys() if keys is not None else (), complete=until_ms is None)
    if keys is None:
        report["erasures_proven"] = None
        report["key_checks"] = f"skipped: this principal may not read {settings.topic('keys')}"
    else:
        report["key_checks"] = "done"
    report["until"] = until_ms
    report["topic"] = settings.topic("events")
    elapsed = time.monotonic() - started
    report["elapsed_s"] = round(elapsed, 3)
    report["events_per_second"] = round(report["events_read"] / elapsed) if elapsed > 0 else None
    return report, audit


_FORKED: tuple[Path | None, dict[int, list[Entry]]] | None = None
"""What a forked audit process inherits instead of receiving it pickled."""


def audit_partitions(
    audit: Audit,
    partitions: dict[int, list[Entry]],
    policy_file: Path | None,
    jobs: int | None = None,
    parallel_from: int = PARALLEL_FROM,
    meanwhile: Callable[[], Any] | None = None,
    skew_ms: int = 300_000,
) -> tuple[int, Any]:
    """Audit every partition into ``audit``; returns how many processes did it, and what
    ``meanwhile`` returned (run in this process while the others audit: reading the keys).

    Why processes: the audit of an entry (decode, re-fold, chain hash) is Python work on one
    core, and partitions are independent, so a big log is split into one contiguous group of
    partitions per core and the results merged in partition order. Forked where the process
    has no other thread (the entries are inherited, not copied), spawned otherwise.
    """
    global _FORKED
    fingerprints = _fingerprints()
    ordered = sorted(partitions)
    total = sum(len(partitions[p]) for p in ordered)
    jobs = min(jobs or os.cpu_count() or 1, len(ordered))
    if jobs < 2 or total < parallel_from:
        for p in ordered:
            audit.partition(p, partitions[p], fingerprints)
        return 1, meanwhile() if meanwhile else None
    groups = _groups(ordered, partitions, jobs)
    forkable = threading.active_count() == 1 and "fork" in multiprocessing.get_all_start_methods()
    if forkable:
        _FORKED = (policy_file, partitions)
        work: list[tuple[Path | None, int, dict[int, list[Entry]] | list[int]]] = [(policy_file, skew_ms, g) for g in groups]
    else:
        work = [(policy_file, skew_ms, {p: partitions[p] for p in g}) for g in groups]
    try:
        with multiprocessing.get_context("fork" if forkable else "spawn").Pool(len(groups)) as pool:
            pending = pool.map_async(_audit_group, work)
            result = meanwhile() if meanwhile else None
            for part in pending.get():
                audit.merge(part)
    finally:
        _FORKED = None
    return len(groups), result


def _fingerprints() -> frozenset[bytes]:
    return frozenset(BY_NAME[name].fingerprint for name in TIMER_DECISIONS)


def _groups(ordered: list[int], partitions: dict[int, list[Entry]], jobs: int) -> list[list[int]]:
    """Contiguous groups of partitions with about the same number of entries each."""
    total = sum(len(partitions[p]) for p in ordered)
    groups: list[list[int]] = [[]]
    done = 0
    for p in ordered:
        if groups[-1] and done >= total * len(groups) / jobs and len(groups) < jobs:
            groups.append([])
        groups[-1].append(p)
        done += len(partitions[p])
    return groups


def _audit_group(work: tuple[Path | None, int, dict[int, list[Entry]] | list[int]]) -> Audit:
    """One process's share: its partitions audited apart, returned without the callables."""
    policy_file, skew_ms, share = work
    if isinstance(share, list):  # forked: the entries are already here
        assert _FORKED is not None
        share = {p: _FORKED[1][p] for p in share}
    part = Audit(load_policy(policy_file), _decode, _encode, skew_ms)
    fingerprints = _fingerprints()
    for p in sorted(share):
        part.partition(p, share[p], fingerprints)
    part.policy = part.decode = part.encode = None  # type: ignore[assignment]  # not picklable, not needed back
    part.forget_policies()
    # what the verdict still needs, not the whole states: sending those back cost as much as
    # the audit itself (a subject's state holds every record it ever had)
    part.states = {subject: {"keys": state["keys"]} for subject, state in part.states.items()}  # type: ignore[typeddict-item]  # finish() reads only the keys
    part._matched = {}  # a decision and its copies sit in one partition: settled here
    return part


def _trail(settings: Settings, subject: str, audit: Audit, dev: bool, err: IO[str]) -> dict[str, Any] | None:
    """One subject's history as the log holds it, fields opened where their key survives."""
    from processors.shredding import KeyringError, Keystore

    state = audit.states.get(subject)
    if state is None:
        return None
    keys = live_keys(settings)
    try:
        ring = settings.keyring(dev=dev, create=False)
    except KeyringError as exc:
        ring = None
        print(f"note: {exc}; fields whose key survives are shown as [encrypted]", file=err)
    store = Keystore({k.encode(): v for k, v in keys.items()}, ring, encode, lambda raw: decode(raw), lambda: 0) if ring else None

    def shown(value: str) -> str:
        """Without a master key: what an auditor may still tell about a sealed value."""
        if not value.startswith(PREFIX):
            return value
        return "[encrypted]" if key_of(value) in keys else ERASED

    def opened(fields: dict[str, str]) -> dict[str, str]:
        if store is not None:
            return store.open(fields)
        return {name: shown(value) for name, value in fields.items()}

    trail = []
    for p, entries in sorted(read_partitions(settings, "events").items()):
        for offset, ts, value in entries:
            if value is None:
                continue
            try:
                event = _decode(value, p, offset)
            except ValueError:
                continue
            if event["subject_id"] != subject:
                continue
            if event.get("fields"):
                event["fields"] = opened(event["fields"])
            kind = "decision" if event["type"] in DECISION_TYPES else "event"
            trail.append({"partition": p, "offset": offset, "appended_at": ts, "kind": kind, **event})
    doc = export(state, audit.policy)
    for rec in doc["records"]:
        rec["fields"] = opened(rec["fields"])
    return {"subject_id": subject, "trail": trail, "state": doc}


def main_replay(
    settings: Settings,
    until: str | None = None,
    subject: str | None = None,
    dev: bool = False,
    progress: bool = True,
    out: IO[str] = sys.stdout,
    err: IO[str] = sys.stderr,
) -> int:
    from kafka.errors import KafkaError

    from processors.shredding import KeyringError
    from streams.plumbing.scan import ReadError
    from streams.plumbing.text import humane

    try:
        until_ms = _parse_until(until)
    except ValueError:
        print(f"error: --until {until!r}: not an ISO-8601 time", file=err)
        return 2
    try:
        report, audit = run_replay(
            settings, until_ms, progress=progress and err.isatty(), err=err, keep_states=subject is not None
        )
        if subject is not None:
            doc = _trail(settings, subject, audit, dev, err)
            if doc is None:
                print(f"error: subject {subject!r} does not appear in {settings.topic('events')}", file=err)
                return 1
            out.write(orjson.dumps(humane(doc), option=orjson.OPT_INDENT_2).decode() + "\n")
            return 0
    except KafkaError as exc:
        print(f"error: Kafka at {settings.bootstrap}: {type(exc).__name__}", file=err)
        return 2
    except ReadError as exc:
        print(f"error: cannot read the log at {settings.bootstrap} (LIFECYCLE_BOOTSTRAP): {exc}", file=err)
        return 2
    except KeyringError as exc:
        print(f"error: {exc}: give the master keys that wrapped this log's data keys (LIFECYCLE_MASTER_KEY_FILE)", file=err)
        return 2
    out.write(orjson.dumps(report, option=orjson.OPT_INDENT_2).decode() + "\n")
    if report["mismatch_count"]:
        print(f"replay: {report['mismatch_count']} mismatches", file=err)
        return 1
    return 0
