"""``lifecycle replay``: the auditor's replay of ``lifecycle.events``, needing no worker.

    lifecycle replay                       # JSON report on stdout, progress on stderr
    lifecycle replay --until 2026-06-30T00:00:00Z
    lifecycle replay --subject s-1001      # one subject's audit trail, erased fields shown as [erased]

Reads every partition from the beginning to the end offsets it finds at start (or to
``--until``, by the time Kafka appended each entry), hands them to ``processors.audit`` and
``lifecycle.keys`` to the key checks, prints the report, and exits 1 on any mismatch.

The scans use librdkafka (``streams.fastread``: twice kafka-python's rate on the same topic)
with large fetches and no consumer group: the replay is a read-only scan that commits
nothing and disturbs no one.
"""

from __future__ import annotations

import sys
import time
from datetime import datetime, timezone
from typing import IO, Any, Callable

import orjson

from processors.audit import Audit, Entry
from processors.envelope import ERASED, PREFIX, key_of
from processors.fold import DECISION_TYPES, export
from processors.policy import load_policy
from schemas import BY_NAME
from streams.codec import CodecError, decode, encode
from streams.fastread import latest_values, read_all
from streams.settings import Settings

TIMER_DECISIONS = ("RetentionExpired", "DeadlineMissed")


def read_partitions(
    settings: Settings, name: str, until_ms: int | None = None, progress: Callable[[int, int], None] | None = None
) -> dict[int, list[Entry]]:
    """Every entry of ``lifecycle.<name>`` up to its end offsets at the time of the call."""
    return read_all(settings, name, until_ms, progress)


def live_keys(settings: Settings) -> dict[str, bytes]:
    """key id -> WrappedKey bytes, for every data key ``lifecycle.keys`` still holds."""
    latest = latest_values(settings, "keys")
    return {k.decode("utf-8", "replace"): v for k, v in latest.items() if v is not None}


def _decode(value: bytes, partition: int, offset: int) -> dict:
    try:
        event = decode(value, topic="lifecycle.events", partition=partition, offset=offset)
    except CodecError as exc:
        raise ValueError(exc.reason) from None
    assert event is not None
    return event


def _encode(event: dict) -> bytes:
    value = encode(event)
    assert value is not None
    return value


def _parse_until(text: str | None) -> int | None:
    if not text:
        return None
    when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
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


def run_replay(settings: Settings, until_ms: int | None = None, progress: bool = False, err: IO[str] = sys.stderr) -> tuple[dict[str, Any], Audit]:
    policy = load_policy(settings.policy_file)
    audit = Audit(policy, _decode, _encode)
    bar = _Bar(err, "reading lifecycle.events") if progress else None
    partitions = read_partitions(settings, "events", until_ms, bar)
    fingerprints = frozenset(BY_NAME[name].fingerprint for name in TIMER_DECISIONS)
    for p in sorted(partitions):
        audit.partition(p, partitions[p], fingerprints)
    from kafka.errors import TopicAuthorizationFailedError

    try:
        keys: dict[str, bytes] | None = live_keys(settings)
    except TopicAuthorizationFailedError:
        # the auditor principal may read the log of record but not the wrapped data keys
        # (only the worker may): the decisions are still re-derived, the key checks are not
        keys = None
    report = audit.finish(keys.keys() if keys is not None else (), complete=until_ms is None)
    if keys is None:
        report["erasures_proven"] = None
        report["key_checks"] = f"skipped: this principal may not read {settings.topic('keys')}"
    else:
        report["key_checks"] = "done"
    report["until"] = until_ms
    report["topic"] = settings.topic("events")
    return report, audit


def _trail(settings: Settings, subject: str, audit: Audit, dev: bool, err: IO[str]) -> dict[str, Any] | None:
    """One subject's history as the log holds it, fields opened where their key survives."""
    from processors.shredding import KeyringError, Keystore

    state = audit.states.get(subject)
    if state is None:
        return None
    keys = live_keys(settings)
    try:
        ring = settings.keyring(dev=dev)
    except KeyringError:
        ring = None
        print("note: no master key: fields whose key survives are shown as [encrypted]", file=err)
    store = Keystore(dict((k.encode(), v) for k, v in keys.items()), ring, encode, lambda raw: decode(raw), lambda: 0) if ring else None

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
    doc = export(state)
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

    from streams.views import humane

    try:
        until_ms = _parse_until(until)
    except ValueError:
        print(f"error: --until {until!r}: not an ISO-8601 time", file=err)
        return 2
    try:
        report, audit = run_replay(settings, until_ms, progress=progress and err.isatty(), err=err)
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
    out.write(orjson.dumps(report, option=orjson.OPT_INDENT_2).decode() + "\n")
    if report["mismatch_count"]:
        print(f"replay: {report['mismatch_count']} mismatches", file=err)
        return 1
    return 0
