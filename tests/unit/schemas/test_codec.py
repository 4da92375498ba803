"""The wire codec: golden bytes, a table of what it refuses and why, round trips."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path
from typing import Any

import avro.io
import avro.schema
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import schemas
from schemas import BY_FINGERPRINT, BY_NAME, codec
from schemas.codec import MAGIC, CodecError, Where, decode, encode

ERASURE_REQUESTED = {
    "type": "ErasureRequested",
    "event_id": "e1",
    "subject_id": "s1",
    "occurred_at": 1767607200000,  # 2026-01-05T10:00:00Z
    "source": "crm",
    "request_id": "q1",
    "received_at": 0,
    "digest": "",
}
ERASURE_REQUESTED_BYTES = bytes.fromhex(
    "c301"  # single-object marker
    "cc5c19cd54779f4f"  # CRC-64-AVRO of lifecycle.ErasureRequested, little-endian
    "04 6531"  # event_id: length 2 (zigzag 4), "e1"
    "04 7331"  # subject_id "s1"
    "80a4cbd9f166"  # occurred_at 1767607200000, zigzag varint
    "06 63726d"  # source "crm"
    "04 7131"  # request_id "q1"
    "00"  # received_at 0: not stamped yet
    "00"  # digest ""
)
ERASURE_REQUESTED_V1_BYTES = bytes.fromhex(
    "c301 52a2c9127774b575"  # the same event as version 1 wrote it (no received_at, no digest)
    "04 6531 04 7331 80a4cbd9f166 06 63726d 04 7131"
)
DATA_COLLECTED = {
    "type": "DataCollected",
    "event_id": "e1",
    "subject_id": "s1",
    "occurred_at": 1767607200000,
    "source": "web_form",
    "record_id": "r1",
    "category": "contact",
    "purpose": "inquiry",
    "legal_basis": "consent",
    "fields": {"email": "ada@example.com"},
    "origin": "",
    "unchanged": False,
    "received_at": 1767607201000,
    "digest": "ab",
}
DATA_COLLECTED_BYTES = bytes.fromhex(
    "c301 0d49929907b7a910"
    "04 6531 04 7331 80a4cbd9f166"
    "10 7765625f666f726d"  # "web_form"
    "04 7231"  # record_id "r1"
    "0e 636f6e74616374"  # "contact"
    "0e 696e7175697279"  # "inquiry"
    "0e 636f6e73656e74"  # "consent"
    "02 0a 656d61696c 1e 616461406578616d706c652e636f6d 00"  # map: 1 entry, end
    "00"  # origin ""
    "00"  # unchanged false
    "d0b3cbd9f166"  # received_at 1767607201000
    "04 6162"  # digest "ab"
)
DATA_COLLECTED_V2_BYTES = bytes.fromhex(
    "c301 4406a6f8b8931e00"  # the same event as version 2 wrote it (no origin, no unchanged)
    "04 6531 04 7331 80a4cbd9f166 10 7765625f666f726d 04 7231 0e 636f6e74616374"
    "0e 696e7175697279 0e 636f6e73656e74 02 0a 656d61696c 1e 616461406578616d706c652e636f6d 00"
    "d0b3cbd9f166 04 6162"
)
RECORD = {
    "type": "Record",
    "subject_id": "s1",
    "record_id": "r1",
    "category": "contact",
    "purpose": "inquiry",
    "legal_basis": "consent",
    "fields": {},
    "collected_at": 1,
    "retention_deadline": None,
    "restricted": False,
    "updated_at": 2,
    "caused_by": "e1",
    "source": "web_form",
    "origin": "",
    "policy": "",
}
RECORD_BYTES = bytes.fromhex(
    "c301 dc57a8d4c1044a6e"
    "04 7331 04 7231 0e 636f6e74616374 0e 696e7175697279 0e 636f6e73656e74"
    "00"  # fields: empty map
    "02"  # collected_at 1
    "00"  # retention_deadline: union branch 0, null
    "00"  # restricted false
    "04"  # updated_at 2
    "04 6531"  # caused_by "e1"
    "10 7765625f666f726d"  # source "web_form"
    "00 00"  # origin "", policy ""
)

GOLDEN: list[tuple[dict[str, Any], bytes]] = [
    (ERASURE_REQUESTED, ERASURE_REQUESTED_BYTES),
    (DATA_COLLECTED, DATA_COLLECTED_BYTES),
    (RECORD, RECORD_BYTES),
]


@pytest.mark.parametrize(("event", "data"), GOLDEN, ids=[event["type"] for event, _ in GOLDEN])
def test_golden_bytes(event: dict[str, Any], data: bytes) -> None:
    assert encode(event) == data
    assert decode(data) == event


def test_bytes_of_version_1_read_as_the_current_shape() -> None:
    assert decode(ERASURE_REQUESTED_V1_BYTES) == ERASURE_REQUESTED


def test_bytes_of_the_previous_version_read_with_the_new_fields_defaulted() -> None:
    assert decode(DATA_COLLECTED_V2_BYTES) == DATA_COLLECTED


def test_defaults_are_written_when_a_field_is_left_out() -> None:
    ack = {
        "type": "ErasureAcknowledged",
        "event_id": "e",
        "subject_id": "s",
        "occurred_at": 0,
        "source": "crm",
        "consumer": "mailer",
        "request_id": "q",
    }
    assert decode(encode(ack)) == {**ack, "record_id": "", "received_at": 0, "digest": ""}


def test_tombstones_pass_through() -> None:
    assert encode(None) is None
    assert decode(None) is None


def test_header_is_magic_then_the_writer_fingerprint() -> None:
    data = encode(DATA_COLLECTED)
    assert data is not None
    assert data[:2] == MAGIC == b"\xc3\x01"
    assert data[2:10] == BY_NAME["DataCollected"].fingerprint
    parsed = avro.schema.parse(BY_NAME["DataCollected"].json)
    assert data[2:10] == parsed.fingerprint("CRC-64-AVRO")


def test_another_avro_library_reads_the_body_from_the_fingerprint_alone() -> None:
    data = encode(DATA_COLLECTED)
    assert data is not None
    writer = avro.schema.parse(BY_FINGERPRINT[data[2:10]].json)
    body = avro.io.DatumReader(writer).read(avro.io.BinaryDecoder(io.BytesIO(data[10:])))
    assert isinstance(body, dict)
    assert {**body, "type": "DataCollected"} == DATA_COLLECTED


def test_decode_takes_any_bytes_like_value() -> None:
    assert decode(bytearray(ERASURE_REQUESTED_BYTES)) == ERASURE_REQUESTED
    assert decode(memoryview(ERASURE_REQUESTED_BYTES)) == ERASURE_REQUESTED


# --- what it refuses ------------------------------------------------------------------------

HEADER = ERASURE_REQUESTED_BYTES[:10]
RECORD_UNION_AT = RECORD_BYTES.index(bytes.fromhex("02 00 00 04"), 10) + 1

INVALID_BYTES = [
    (b"", "0 bytes is shorter than the 10-byte single-object header"),
    (b"\xc3\x01", "2 bytes is shorter than the 10-byte single-object header"),
    (
        b"\x00\x01" + ERASURE_REQUESTED_BYTES[2:],
        "bad magic: not Avro single-object encoding (C3 01)",
    ),
    (b"Obj\x01" + ERASURE_REQUESTED_BYTES[4:], "bad magic"),
    (
        MAGIC + bytes(8) + ERASURE_REQUESTED_BYTES[10:],
        "unknown schema fingerprint 0000000000000000",
    ),
    (ERASURE_REQUESTED_BYTES[:-1], "truncated ErasureRequested body"),
    (HEADER, "truncated ErasureRequested body"),
    (HEADER + bytes.fromhex("04653104"), "truncated ErasureRequested body"),
    (ERASURE_REQUESTED_BYTES + b"\x00", "1 trailing bytes after the ErasureRequested body"),
    (
        HEADER + bytes.fromhex("04fffe") + ERASURE_REQUESTED_BYTES[13:],
        "ErasureRequested body is not valid Avro (UnicodeDecodeError)",
    ),
    (
        RECORD_BYTES[:RECORD_UNION_AT] + b"\x0a" + RECORD_BYTES[RECORD_UNION_AT + 1 :],
        "Record body is not valid Avro (IndexError)",
    ),
]


@pytest.mark.parametrize(("data", "message"), INVALID_BYTES)
def test_invalid_bytes(data: bytes, message: str) -> None:
    with pytest.raises(CodecError) as caught:
        decode(data, Where("lifecycle.ingest", 3, 42))
    assert str(caught.value).startswith("lifecycle.ingest[3]@42: ")
    assert message in str(caught.value)
    assert caught.value.where == ("lifecycle.ingest", 3, 42)


def _with(**changes: Any) -> dict[str, Any]:
    return {**ERASURE_REQUESTED, **changes}


INVALID_EVENTS = [
    ({"type": "Nope"}, "cannot encode: unknown record type 'Nope'"),
    ({"type": "no such\nthing"}, "cannot encode: unknown record type (unprintable)"),
    ({"event_id": "e"}, "cannot encode: no 'type'"),
    (
        {k: v for k, v in ERASURE_REQUESTED.items() if k != "request_id"},
        "cannot encode ErasureRequested: missing field 'request_id'",
    ),
    (_with(extra="x"), "cannot encode ErasureRequested: unexpected field 'extra'"),
    (_with(occurred_at=True), "field 'occurred_at' is not a valid long"),
    (_with(occurred_at=1.5), "field 'occurred_at' is not a valid long"),
    (_with(occurred_at="2026-01-05T10:00:00Z"), "field 'occurred_at' is not a valid long"),
    (_with(occurred_at=2**63), "field 'occurred_at' is not a valid long"),
    (_with(source=None), "field 'source' is not a valid string"),
    (_with(source=7), "field 'source' is not a valid string"),
    (
        _with(source="\ud800"),
        "field 'source' holds text that is not valid Unicode (a lone surrogate)",
    ),
    ({**DATA_COLLECTED, "fields": {"email": 1}}, "field 'fields' is not a valid map of string"),
    (
        {
            "type": "Rejection",
            "reason": "r",
            "topic": "t",
            "partition": 2**31,
            "offset": 1,
            "rejected_at": 1,
        },
        "cannot encode Rejection: field 'partition' is not a valid int",
    ),
]


@pytest.mark.parametrize(("event", "message"), INVALID_EVENTS)
def test_invalid_events(event: dict[str, Any], message: str) -> None:
    with pytest.raises(CodecError) as caught:
        encode(event)
    assert message in str(caught.value)


def test_errors_never_quote_the_payload() -> None:
    secret = "ada.lovelace@example.com"
    wrong = {**DATA_COLLECTED, "fields": {"email": secret, "phone": 4930123456}}
    with pytest.raises(CodecError) as caught:
        encode(wrong)
    assert secret not in str(caught.value) and "4930123456" not in str(caught.value)

    data = encode({**DATA_COLLECTED, "fields": {"email": secret}})
    assert data is not None
    for broken in (data[:-3], data + b"\x01\x02", data.replace(b"ada", b"\xff\xfe\xfd")):
        with pytest.raises(CodecError) as caught:
            decode(broken)
        text = str(caught.value)
        assert "ada" not in text and "example" not in text and "lovelace" not in text
        # A chained fastavro exception would print its own message, which may quote bytes.
        error = caught.value
        assert error.__cause__ is None and (error.__context__ is None or error.__suppress_context__)


# --- every schema ---------------------------------------------------------------------------


def _sample(avro_type: Any, name: str) -> Any:
    if isinstance(avro_type, list):
        return _sample(next(t for t in avro_type if t != "null"), name)
    if isinstance(avro_type, dict):
        kind = avro_type["type"]
        if kind == "map":
            return {
                "k": _sample(avro_type["values"], name),
                "ü✓": _sample(avro_type["values"], name),
            }
        if kind == "array":
            return [_sample(avro_type["items"], name), _sample(avro_type["items"], name)]
        if kind == "record":
            return {f["name"]: _sample(f["type"], f["name"]) for f in avro_type["fields"]}
        avro_type = kind
    return {
        "string": f"{name}-ü✓ 漢字",
        "long": 1767607200000,
        "int": 2**31 - 1,
        "boolean": True,
        "bytes": b"\x00\xff\x10",
    }[avro_type]


@pytest.mark.parametrize("name", sorted(BY_NAME))
def test_round_trip_every_schema(name: str) -> None:
    schema = BY_NAME[name]
    event = {"type": name, **_sample(schema.parsed, name)}
    data = encode(event)
    assert data is not None and data[2:10] == schema.fingerprint
    assert decode(data) == event
    with pytest.raises(CodecError, match="trailing"):
        decode(data + b"\x00")


def test_a_message_from_a_superseded_schema_is_read_into_the_current_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    v1 = {
        "type": "record",
        "name": "Thing",
        "namespace": "lifecycle",
        "fields": [{"name": "event_id", "type": "string"}],
    }
    v2 = {**v1, "fields": [*v1["fields"], {"name": "note", "type": "string", "default": "-"}]}
    (tmp_path / "Thing.avsc").write_text(json.dumps(v2), encoding="utf-8")
    (tmp_path / "Thing.v1.avsc").write_text(json.dumps(v1), encoding="utf-8")
    old = next(s for s in schemas.load(tmp_path).by_fingerprint.values() if s.version == 1)
    monkeypatch.setitem(codec._READERS, old.fingerprint, (old.name, old.parsed, old.reader))
    data = MAGIC + old.fingerprint + b"\x04e1"
    assert decode(data) == {"type": "Thing", "event_id": "e1", "note": "-"}


# --- properties -----------------------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=64))
def test_random_bytes_raise_only_codec_error(data: bytes) -> None:
    with contextlib.suppress(CodecError):
        decode(data)


@settings(max_examples=500, deadline=None)
@given(st.sampled_from(sorted(BY_FINGERPRINT)), st.binary(max_size=200))
def test_random_bodies_behind_a_known_header_raise_only_codec_error(fp: bytes, body: bytes) -> None:
    try:
        event = decode(MAGIC + fp + body)
    except CodecError:
        return
    assert event is not None and event["type"] == BY_FINGERPRINT[fp].name


@settings(max_examples=200, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from([*ERASURE_REQUESTED, "extra"]),
        st.one_of(st.text(), st.integers(), st.none(), st.booleans(), st.floats()),
    )
)
def test_encoding_anything_raises_only_codec_error(event: dict[str, Any]) -> None:
    with contextlib.suppress(CodecError):
        encode({**event, "type": "ErasureRequested"})
