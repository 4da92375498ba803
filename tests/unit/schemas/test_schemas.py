"""The schemas: every record type is there, pinned, and can only evolve compatibly."""

from __future__ import annotations

import io
import json
from pathlib import Path

import avro.schema
import fastavro
import pytest
from avro.compatibility import ReaderWriterCompatibilityChecker, SchemaCompatibilityType

import schemas
from schemas import (
    BY_FINGERPRINT,
    BY_NAME,
    DECISION_EVENTS,
    PIPELINE_EVENTS,
    REGISTRY,
    STATE_RECORDS,
    SUB_RECORDS,
    UPSTREAM_EVENTS,
    SchemaLoadError,
)

SCHEMA_DIR = Path(schemas.__file__).parent

# Changing a schema changes its fingerprint, and every message already in the forever-kept
# log names its writer by fingerprint. If the change is intended: add fields with defaults
# only, keep the old file as <Name>.v<N>.avsc, then update the fingerprint here.
PINNED_FINGERPRINTS = {
    "RestrictionLifted": "46f88f05f09ebe56",
    "RequestDenied": "cbb4e91e324e546c",
    "PolicyAdopted": "e1a8e89860f64570",
    "ObjectionDecided": "24729e7b49caf540",
    "AccessRequested": "aaedff3af3d4b0f7",
    "ConsentGiven": "482b916221da7fea",
    "ConsentSnapshot": "66329655950711b2",
    "ConsentWithdrawn": "eb47a80713de56b4",
    "DataCollected": "0d49929907b7a910",
    "DeadlineExtended": "76410245b70c440b",
    "DeadlineMissed": "97a296540058284e",
    "ErasureAcknowledged": "3a5a6823445e63d3",
    "ErasureCompleted": "86f87caa9525d5e4",
    "ErasureExecuted": "2ce91017f10d8890",
    "ErasureRequested": "cc5c19cd54779f4f",
    "IdentityVerified": "1b4bb7c8b68c28cc",
    "LegalHoldPlaced": "ba62b4577199f940",
    "LegalHoldReleased": "96168f0ed25208b6",
    "ObjectionRaised": "fca64efe2a2ee4c9",
    "PortabilityRequested": "305564dfc5371e2d",
    "PurposeConsent": "22f12277100c6b49",
    "Record": "dc57a8d4c1044a6e",
    "RectificationRequested": "d2a65b46fefef1e0",
    "Rejection": "4f8de1567182d78c",
    "RelationshipEnded": "7f6925b4369d46f7",
    "RelationshipStarted": "d0c244ada894bd02",
    "RequestFulfilled": "e20363de5dba1648",
    "RequestRejected": "41a93d5271366076",
    "RestrictionRequested": "07a766277768e08b",
    "RetentionExpired": "50981b40bc9ff120",
    "StoppedPurpose": "4aa0a1d2d0af006a",
    "Unsubscribed": "9bfb1e69edc1be02",
    "WrappedKey": "8beae0dfbef47bb2",
}

COMMON = ["event_id", "subject_id", "occurred_at", "source"]

# The fields version 1 of each record requires. Never add to this list: a field added later
# must have a default, or readers of old messages (and old readers of new ones) break.
V1_REQUIRED = {
    "AccessRequested": [*COMMON, "request_id"],
    "ConsentGiven": [*COMMON, "purpose"],
    "ConsentSnapshot": ["subject_id", "purposes", "stopped", "updated_at", "caused_by"],
    "ConsentWithdrawn": [*COMMON, "purpose"],
    "DataCollected": [*COMMON, "record_id", "category", "purpose", "legal_basis", "fields"],
    "DeadlineExtended": [*COMMON, "request_id", "notice"],
    "DeadlineMissed": [*COMMON, "caused_by", "request_id", "deadline"],
    "ErasureAcknowledged": [*COMMON, "consumer"],
    "ErasureCompleted": [*COMMON, "caused_by", "request_id", "consumers"],
    "ErasureExecuted": [*COMMON, "caused_by", "request_id", "erased", "retained"],
    "ErasureRequested": [*COMMON, "request_id"],
    "IdentityVerified": [*COMMON, "request_id", "method"],
    "LegalHoldPlaced": [*COMMON, "hold_id", "reason"],
    "LegalHoldReleased": [*COMMON, "hold_id", "reason"],
    "ObjectionRaised": [*COMMON, "request_id", "purpose"],
    "PortabilityRequested": [*COMMON, "request_id"],
    "PurposeConsent": ["status", "legal_basis", "at", "event_id", "source"],
    "Record": [
        "subject_id",
        "record_id",
        "category",
        "purpose",
        "legal_basis",
        "fields",
        "collected_at",
        "updated_at",
        "caused_by",
    ],
    "RectificationRequested": [*COMMON, "request_id", "record_id", "fields"],
    "Rejection": ["reason", "topic", "partition", "offset", "rejected_at"],
    "RelationshipEnded": [*COMMON, "relationship_id", "kind"],
    "RelationshipStarted": [*COMMON, "relationship_id", "kind"],
    "RequestFulfilled": [*COMMON, "caused_by", "request_id", "request_type"],
    "RequestRejected": [*COMMON, "caused_by", "reason"],
    "RestrictionRequested": [*COMMON, "request_id", "purpose"],
    "RetentionExpired": [*COMMON, "caused_by", "record_id", "deadline", "reason"],
    "StoppedPurpose": ["reason", "at", "request_id"],
    "Unsubscribed": [*COMMON, "channel"],
    "WrappedKey": ["subject_id", "key_class", "wrapped", "master_key_id", "created_at"],
    # first versions of records added later
    "ObjectionDecided": [*COMMON, "request_id", "upheld", "notice"],
    "PolicyAdopted": ["event_id", "occurred_at", "source", "version", "name", "text"],
    "RequestDenied": [*COMMON, "caused_by", "request_id", "reason"],
    "RestrictionLifted": [*COMMON, "request_id", "notice"],
}

TIME_FIELDS = {
    "occurred_at",
    "deadline",
    "collected_at",
    "retention_deadline",
    "updated_at",
    "at",
    "rejected_at",
    "created_at",
}


def test_every_record_type_is_present_and_in_exactly_one_group() -> None:
    groups = [UPSTREAM_EVENTS, DECISION_EVENTS, PIPELINE_EVENTS, STATE_RECORDS, SUB_RECORDS]
    listed = [name for group in groups for name in group]
    assert len(listed) == len(set(listed))
    assert set(listed) == set(BY_NAME) == set(PINNED_FINGERPRINTS) == set(V1_REQUIRED)
    assert len(REGISTRY) == 33


def test_one_file_per_record_named_after_it_in_the_lifecycle_namespace() -> None:
    files = sorted(p.stem for p in SCHEMA_DIR.glob("*.avsc") if ".v" not in p.stem)
    assert files == sorted(BY_NAME)
    for name in files:
        raw = json.loads((SCHEMA_DIR / f"{name}.avsc").read_text(encoding="utf-8"))
        assert raw["name"] == name
        assert raw["namespace"] == "lifecycle"
        assert raw["doc"]
        assert all(f.get("doc") for f in raw["fields"]), name


def test_fingerprints_are_pinned() -> None:
    actual = {s.name: s.fingerprint.hex() for s in REGISTRY}
    assert actual == PINNED_FINGERPRINTS
    assert all(BY_FINGERPRINT[s.fingerprint] is s for s in REGISTRY)


def test_fields_beyond_version_1_have_defaults() -> None:
    for s in REGISTRY:
        for f in s.fields:
            assert "default" in f or f["name"] in V1_REQUIRED[s.name], f"{s.name}.{f['name']} was added without a default"


def test_no_record_has_a_type_field_because_the_event_dict_uses_that_key() -> None:
    assert all("type" not in s.field_names for s in REGISTRY)


def test_events_start_with_the_common_fields_and_decisions_carry_cause_and_chain() -> None:
    for name in UPSTREAM_EVENTS:
        assert list(BY_NAME[name].field_names[:4]) == COMMON
    for name in DECISION_EVENTS:
        s = BY_NAME[name]
        assert list(s.field_names[:6]) == [*COMMON, "caused_by", "chain"]
        assert s.defaults["chain"] == ""


def test_times_are_plain_long_epoch_milliseconds() -> None:
    seen = set()
    for s in REGISTRY:
        for f in s.fields:
            if f["name"] in TIME_FIELDS:
                seen.add(f["name"])
                assert f["type"] in ("long", ["null", "long"]), f"{s.name}.{f['name']}"
                assert "logicalType" not in json.dumps(f["type"])
                assert "epoch milliseconds UTC" in f["doc"]
    assert seen == TIME_FIELDS


def test_rejection_carries_no_subject() -> None:
    assert "subject_id" not in BY_NAME["Rejection"].field_names


def test_fingerprint_is_what_the_avro_package_computes_from_the_self_contained_schema() -> None:
    for s in REGISTRY:
        theirs = avro.schema.parse(s.json)
        assert theirs.fingerprint("CRC-64-AVRO") == s.fingerprint, s.name
        assert avro.schema.parse(s.canonical).fingerprint("CRC-64-AVRO") == s.fingerprint


def test_shared_sub_records_are_injected_into_the_record_that_uses_them() -> None:
    snapshot = BY_NAME["ConsentSnapshot"]
    assert '"name":"lifecycle.PurposeConsent"' in snapshot.canonical
    assert '"name":"lifecycle.StoppedPurpose"' in snapshot.canonical


# --- versioning ----------------------------------------------------------------------------

V1 = {
    "type": "record",
    "name": "Thing",
    "namespace": "lifecycle",
    "fields": [
        {"name": "event_id", "type": "string"},
        {"name": "occurred_at", "type": "long"},
    ],
}
V2 = {
    **V1,
    "fields": [
        *V1["fields"],
        {"name": "note", "type": "string", "default": ""},
        {"name": "deadline", "type": ["null", "long"], "default": None},
    ],
}
V2_BREAKING = {**V1, "fields": [*V1["fields"], {"name": "note", "type": "string"}]}


def _write(schema: dict, record: dict) -> bytes:
    out = io.BytesIO()
    fastavro.schemaless_writer(out, fastavro.parse_schema(schema), record)
    return out.getvalue()


def test_bytes_written_with_v1_are_read_with_v2() -> None:
    data = _write(V1, {"event_id": "e1", "occurred_at": 5})
    got = fastavro.schemaless_reader(io.BytesIO(data), fastavro.parse_schema(V1), fastavro.parse_schema(V2))
    assert got == {"event_id": "e1", "occurred_at": 5, "note": "", "deadline": None}


def test_bytes_written_with_v2_are_read_with_v1() -> None:
    data = _write(V2, {"event_id": "e1", "occurred_at": 5, "note": "n", "deadline": 7})
    got = fastavro.schemaless_reader(io.BytesIO(data), fastavro.parse_schema(V2), fastavro.parse_schema(V1))
    assert got == {"event_id": "e1", "occurred_at": 5}


def _compatible(reader: dict | str, writer: dict | str) -> bool:
    parse = lambda s: avro.schema.parse(s if isinstance(s, str) else json.dumps(s))  # noqa: E731
    result = ReaderWriterCompatibilityChecker().get_compatibility(parse(reader), parse(writer))
    return result.compatibility is SchemaCompatibilityType.compatible


def test_compatibility_gate_accepts_an_optional_field_and_refuses_a_required_one() -> None:
    assert _compatible(V2, V1) and _compatible(V1, V2)
    assert not _compatible(V2_BREAKING, V1)


def test_every_superseded_schema_in_the_package_is_compatible_both_ways() -> None:
    old = [s for s in BY_FINGERPRINT.values() if s.version is not None]
    for s in old:
        current = BY_NAME[s.name]
        assert _compatible(current.json, s.json), f"{s.name} v{s.version} -> current"
        assert _compatible(s.json, current.json), f"current -> {s.name} v{s.version}"


def _dump(directory: Path, name: str, schema: dict) -> None:
    (directory / f"{name}.avsc").write_text(json.dumps(schema), encoding="utf-8")


def test_a_superseded_file_is_registered_by_fingerprint_and_resolves_into_the_current(
    tmp_path: Path,
) -> None:
    _dump(tmp_path, "Thing", V2)
    _dump(tmp_path, "Thing.v1", V1)
    registry = schemas.load(tmp_path)
    assert list(registry.by_name) == ["Thing"]
    old = next(s for s in registry.by_fingerprint.values() if s.version == 1)
    assert old.reader is registry["Thing"].parsed
    data = _write(V1, {"event_id": "e1", "occurred_at": 5})
    got = fastavro.schemaless_reader(io.BytesIO(data), old.parsed, old.reader)
    assert got == {"event_id": "e1", "occurred_at": 5, "note": "", "deadline": None}


def test_loading_refuses_a_file_not_named_after_its_record(tmp_path: Path) -> None:
    _dump(tmp_path, "Other", V1)
    with pytest.raises(SchemaLoadError, match=r"Other\.avsc defines record Thing"):
        schemas.load(tmp_path)


def test_loading_refuses_another_namespace(tmp_path: Path) -> None:
    _dump(tmp_path, "Thing", {**V1, "namespace": "elsewhere"})
    with pytest.raises(SchemaLoadError, match="namespace lifecycle"):
        schemas.load(tmp_path)
