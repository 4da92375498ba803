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
