"""The downstream sink on a real broker: rows, tombstones, acks, and crashes at the worst moment.

Values and tombstones are written straight to the test's own ``lifecycle.records`` and
``lifecycle.consent`` (no worker), the sink runs into a SQLite file, and what it acknowledged is
read back from ``lifecycle.acks`` the way the pipeline reads it.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from streams.commands.sink import SqliteSink
from streams.plumbing.reading import decoded_events, read_topic
from streams.settings import Settings

T0 = 1_770_000_000_000
SECRET = "Ada Lovelace, 12 Analytical Way"  # stands for personal data: must never reach a log


def record(subject: str, rid: str, version: int = 1) -> dict[str, Any]:
    return {
        "type": "Record",
        "subject_id": subject,
        "record_id": rid,
        "category": "contact",
        "purpose": "inquiry",
        "legal_basis": "legitimate_interest",
        "fields": {"name": SECRET, "version": str(version)},
        "collected_at": T0,
        "retention_deadline": T0 + 365 * 86_400_000,
        "restricted": False,
        "updated_at": T0 + version,
        "caused_by": f"ev-{subject}-{rid}-{version}",
    }


def consent(subject: str) -> dict[str, Any]:
    return {
        "type": "ConsentSnapshot",
        "subject_id": subject,
        "purposes": {
            "newsletter": {
                "status": "granted",
                "legal_basis": "consent",
                "at": T0,
                "event_id": "c1",
                "source": "web_form",
            }
        },
        "stopped": {},
        "updated_at": T0,
        "caused_by": "c1",
    }


def rows(db: Path) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, Any]]]:
    with sqlite3.connect(db) as conn:
        records = {k: json.loads(v) for k, v in conn.execute("SELECT key, value FROM records")}
        consents = {k: json.loads(v) for k, v in conn.execute("SELECT subject_id, value FROM consent")}
    conn.close()
    return records, consents


def acks(settings: Settings) -> list[dict[str, Any]]:
    found = list(decoded_events(read_topic(settings, "acks")))
    assert all(e["type"] == "ErasureAcknowledged" for e in found)
    return found


def stripped(value: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in value.items() if k != "type"}


# ---------------------------------------------------------------------------------------------
# SqliteSink alone


def test_sqlite_sink_round_trip_and_rollback(tmp_path: Path) -> None:
    db = tmp_path / "copy.db"
    with SqliteSink(db) as sink:
        assert sink.offsets() == {}
        sink.upsert("records", "s1/r1", stripped(record("s1", "r1")))
        sink.upsert("records", "s1/r1", stripped(record("s1", "r1", version=2)))
        sink.upsert("records", "s1/r2", stripped(record("s1", "r2")))
        sink.upsert("consent", "s1", stripped(consent("s1")))
        sink.commit({("t.lifecycle.records", 0): 3, ("t.lifecycle.consent", 1): 1})
        sink.delete("records", "s1/r2")
        sink.delete("records", "never-there")
        sink.commit({("t.lifecycle.records", 0): 5})
        # what a reconcile compares with the feed, kind by kind
        assert sorted(sink.keys("records")) == ["s1/r1"]
        assert sorted(sink.keys("consent")) == ["s1"]
        with pytest.raises(ValueError, match="unknown kind"):
            sink.keys("mail")
        assert sink.offsets() == {("t.lifecycle.records", 0): 5, ("t.lifecycle.consent", 1): 1}
        with pytest.raises(ValueError, match="unknown kind"):
            sink.upsert("mail", "s1", {})

    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        assert conn.execute("SELECT subject_id, record_id FROM records").fetchall() == [("s1", "r1")]
    conn.close()
    assert rows(db) == ({"s1/r1": stripped(record("s1", "r1", version=2))}, {"s1": stripped(consent("s1"))})

    # A batch whose commit never comes: invisible while in flight, gone after the process ends.
    crashed = SqliteSink(db)
    crashed.delete("records", "s1/r1")
    crashed.upsert("consent", "s2", stripped(consent("s2")))
    with SqliteSink(db) as reader:
        assert reader.offsets() == {("t.lifecycle.records", 0): 5, ("t.lifecycle.consent", 1): 1}
    assert rows(db)[0].keys() == {"s1/r1"}
    crashed.close()
    with SqliteSink(db) as sink:
        assert sink.offsets() == {("t.lifecycle.records", 0): 5, ("t.lifecycle.consent", 1): 1}
    assert rows(db) == ({"s1/r1": stripped(record("s1", "r1", version=2))}, {"s1": stripped(consent("s1"))})


# ---------------------------------------------------------------------------------------------
# On the broker


# ---------------------------------------------------------------------------------------------
# Whether a sink was away longer than the tombstones are kept


class _Offsets:
    """A consumer that answers only the offset questions, for one partition of one feed."""

    def __init__(self, earliest: int, first_young: int | None, end: int) -> None:
        self.earliest, self.first_young, self.end = earliest, first_young, end

    def beginning_offsets(self, tps: list[Any]) -> dict[Any, int]:
        return dict.fromkeys(tps, self.earliest)

    def end_offsets(self, tps: list[Any]) -> dict[Any, int]:
        return dict.fromkeys(tps, self.end)

    def offsets_for_times(self, wanted: dict[Any, int]) -> dict[Any, Any]:
        from kafka.structs import OffsetAndTimestamp

        found = None if self.first_young is None else OffsetAndTimestamp(self.first_young, 0, -1)
        return dict.fromkeys(wanted, found)


@pytest.mark.parametrize(
    ("stored", "rows", "earliest", "first_young", "end", "behind"),
    [
        (10, True, 0, 5, 20, False),  # away less than the retention: every tombstone is still there
        (10, True, 0, 12, 20, True),  # what it has not read is older than the retention
        (10, True, 0, None, 20, True),  # everything unread is older than the retention
        (20, True, 0, None, 20, False),  # caught up on a quiet feed
        (10, True, 15, 15, 20, True),  # the log start moved past it
        (None, False, 0, 12, 20, False),  # a fresh copy reads what there is
        (None, True, 0, 12, 20, True),  # rows no offset vouches for: a restored copy
        (None, True, 0, 0, 20, False),  # ... on a partition that still has everything
    ],
)
def test_behind_the_tombstones(
    tmp_path: Path, stored: int | None, rows: bool, earliest: int, first_young: int | None, end: int, behind: bool
) -> None:
    from kafka import TopicPartition

    from streams.commands.sink import _behind_tombstones

    tp = TopicPartition("t.lifecycle.records.crm-mirror", 0)
    with SqliteSink(tmp_path / "copy.db") as sink:
        if rows:
            sink.upsert("records", "s1/r1", stripped(record("s1", "r1")))
        sink.commit({} if stored is None else {(tp.topic, tp.partition): stored})
        consumer: Any = _Offsets(earliest, first_young, end)
        assert _behind_tombstones(consumer, [tp], sink, "records", 1_000) is behind
