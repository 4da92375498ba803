"""The event contract for upstream JSON lines and decoded messages."""

from __future__ import annotations

import contextlib
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas import BY_NAME, DECISION_EVENTS, UPSTREAM_EVENTS
from schemas.codec import decode, encode
from schemas.contract import ContractError, looks_like_contact_data, parse_line, validate

WHEN = "2026-01-05T10:00:00Z"
WHEN_MS = 1767607200000
COMMON = {"event_id": "evt-1", "subject_id": "subj-7f3a", "occurred_at": WHEN, "source": "web_form"}

# One valid line per upstream type: the contract's whole table in one place.
VALID: dict[str, dict[str, Any]] = {
    "DataCollected": {
        "record_id": "rec-1",
        "category": "contact",
        "purpose": "inquiry",
        "legal_basis": "consent",
        "fields": {"email": "ada@example.com", "name": "Ada"},
    },
    "ConsentGiven": {"purpose": "newsletter"},
    "ConsentWithdrawn": {"purpose": "newsletter"},
    "Unsubscribed": {"channel": "email"},
    "RelationshipStarted": {"relationship_id": "rel-1", "kind": "client"},
    "RelationshipEnded": {"relationship_id": "rel-1", "kind": "applicant"},
    "IdentityVerified": {"request_id": "req-1", "method": "email_link"},
    "ErasureRequested": {"request_id": "req-1"},
    "AccessRequested": {"request_id": "req-1"},
    "PortabilityRequested": {"request_id": "req-1"},
    "RectificationRequested": {
        "request_id": "req-1",
        "record_id": "rec-1",
        "fields": {"name": "Ada L."},
    },
    "RestrictionRequested": {"request_id": "req-1", "purpose": "analytics_cookies"},
    "ObjectionRaised": {"request_id": "req-1", "purpose": "marketing_email"},
    "LegalHoldPlaced": {"hold_id": "hold-1", "reason": "case 2026/17"},
    "LegalHoldReleased": {"hold_id": "hold-1", "reason": "case closed"},
    "DeadlineExtended": {"request_id": "req-1", "notice": "notice-2026-01"},
    "ErasureAcknowledged": {"consumer": "mailer", "request_id": "req-1"},
    "RestrictionLifted": {"request_id": "req-1", "notice": "notice-2026-02"},
    "ObjectionDecided": {"request_id": "req-1", "upheld": True, "notice": "answer-2026-03"},
}


def line(type_name: str, /, **changes: Any) -> bytes:
    obj = {"type": type_name, **COMMON, **VALID[type_name], **changes}
    return orjson.dumps({k: v for k, v in obj.items() if v is not DROP})


DROP = object()


def refused(raw: bytes | str | dict[str, Any]) -> ContractError:
    with pytest.raises(ContractError) as caught:
        validate(raw) if isinstance(raw, dict) else parse_line(raw)
    return caught.value


def test_the_table_covers_every_upstream_type_and_nothing_else() -> None:
    assert set(VALID) == set(UPSTREAM_EVENTS)


@pytest.mark.parametrize("kind", sorted(VALID))
def test_a_valid_line_becomes_an_event_dict_the_codec_writes(kind: str) -> None:
    event = parse_line(line(kind))
    assert event["type"] == kind
    assert event["occurred_at"] == WHEN_MS
    assert set(event) == {"type", *BY_NAME[kind].field_names}
    assert decode(encode(event)) == event
    assert validate(event) == event  # the guard validates the decoded form again


def test_defaults_are_filled_in() -> None:
    event = parse_line(line("ErasureAcknowledged"))
    assert event["record_id"] == ""


def test_str_and_bytes_lines_and_a_trailing_newline() -> None:
    raw = line("ConsentGiven")
    assert parse_line(raw) == parse_line(raw.decode()) == parse_line(raw + b"\n")


@pytest.mark.parametrize(
    ("text", "ms"),
    [
        ("2026-01-05T10:00:00Z", WHEN_MS),
        ("2026-01-05T10:00:00+00:00", WHEN_MS),
        ("2026-01-05T10:00:00.123Z", WHEN_MS + 123),
        ("2026-01-05T10:00:00.123999+00:00", WHEN_MS + 123),
        ("1970-01-01T00:00:00Z", 0),
    ],
)
def test_occurred_at_is_iso_utc_and_becomes_epoch_ms(text: str, ms: int) -> None:
    assert parse_line(line("ConsentGiven", occurred_at=text))["occurred_at"] == ms


REFUSALS = [
    # (what is wrong, the line, code, field)
    ("not JSON", b'{"type": ', "not_json", ""),
    ("empty line", b"", "not_json", ""),
    ("a list", b"[1, 2]", "not_an_object", ""),
    ("a string", b'"DataCollected"', "not_an_object", ""),
    ("no type", orjson.dumps(COMMON), "missing_field", "type"),
    ("type not a string", orjson.dumps({**COMMON, "type": 3}), "wrong_type", "type"),
    ("unknown type", orjson.dumps({**COMMON, "type": "DataSold"}), "unknown_type", "type"),
    ("a decision", orjson.dumps({**COMMON, "type": "ErasureExecuted"}), "unknown_type", "type"),
    ("a state record", orjson.dumps({**COMMON, "type": "Record"}), "unknown_type", "type"),
    ("missing field", line("DataCollected", purpose=DROP), "missing_field", "purpose"),
    ("missing id", line("ErasureRequested", request_id=DROP), "missing_field", "request_id"),
    ("extra field", line("ConsentGiven", note="x"), "unexpected_field", "note"),
    ("extra weird field", line("ConsentGiven", **{"4111 1111": "x"}), "unexpected_field", ""),
    ("field not a string", line("ConsentGiven", purpose=5), "wrong_type", "purpose"),
    ("null field", line("ConsentGiven", source=None), "wrong_type", "source"),
    ("fields not a map", line("DataCollected", fields=["a"]), "wrong_type", "fields"),
    (
        "fields value not a string",
        line("DataCollected", fields={"age": 41}),
        "wrong_type",
        "fields",
    ),
    ("fields name empty", line("DataCollected", fields={"": "x"}), "empty_field", "fields"),
    ("nothing to rectify", line("RectificationRequested", fields={}), "empty_field", "fields"),
    ("empty event_id", line("ConsentGiven", event_id=""), "empty_field", "event_id"),
    ("blank subject_id", line("ConsentGiven", subject_id="  "), "empty_field", "subject_id"),
    ("empty request_id", line("AccessRequested", request_id=""), "empty_field", "request_id"),
    ("empty record_id", line("DataCollected", record_id=""), "empty_field", "record_id"),
    ("empty hold_id", line("LegalHoldPlaced", hold_id=""), "empty_field", "hold_id"),
    ("empty purpose", line("ConsentGiven", purpose=""), "empty_field", "purpose"),
    ("empty source", line("ConsentGiven", source=""), "empty_field", "source"),
    ("id with a space", line("ConsentGiven", event_id="evt 1"), "invalid_id", "event_id"),
    ("id with a newline", line("ConsentGiven", event_id="evt\n1"), "invalid_id", "event_id"),
    ("id with zero-width", line("ConsentGiven", event_id="evt\u200b1"), "invalid_id", "event_id"),
    # a "/" joins ids into keys: subject "col/x" + record "r" and subject "col" + record "x/r"
    # would be one key on lifecycle.records
    ("subject_id with a slash", line("ConsentGiven", subject_id="col/x"), "invalid_id", "subject_id"),
    ("record_id with a slash", line("DataCollected", record_id="x/r"), "invalid_id", "record_id"),
    ("event_id with a slash", line("ConsentGiven", event_id="e/1"), "invalid_id", "event_id"),
    ("request_id with a slash", line("ErasureRequested", request_id="q/1"), "invalid_id", "request_id"),
    ("hold_id with a slash", line("LegalHoldPlaced", hold_id="h/1"), "invalid_id", "hold_id"),
    ("relationship_id with a slash", line("RelationshipStarted", relationship_id="rel/1"), "invalid_id", "relationship_id"),
    ("ack record_id with a slash", line("ErasureAcknowledged", record_id="x/r"), "invalid_id", "record_id"),
    ("id with a control character", line("ConsentGiven", subject_id="s\x07"), "invalid_id", "subject_id"),
    ("received_at from upstream", line("ConsentGiven", received_at="2026-01-05T10:00:00Z"), "unexpected_field", "received_at"),
    ("digest from upstream", line("ConsentGiven", digest="abc"), "unexpected_field", "digest"),
    ("invalid UTF-8", b'{"type": "ConsentGiven", "purpose": "\xc3"}', "not_utf8", ""),
    ("id too long", line("ConsentGiven", event_id="e" * 257), "too_long", "event_id"),
    ("bad category", line("DataCollected", category="health"), "bad_value", "category"),
    ("bad legal basis", line("DataCollected", legal_basis="because"), "bad_value", "legal_basis"),
    ("bad kind", line("RelationshipStarted", kind="friend"), "bad_value", "kind"),
    ("enum in wrong case", line("RelationshipStarted", kind="Client"), "bad_value", "kind"),
    (
        "naive time",
        line("ConsentGiven", occurred_at="2026-01-05T10:00:00"),
        "naive_time",
        "occurred_at",
    ),
    ("date only", line("ConsentGiven", occurred_at="2026-01-05"), "naive_time", "occurred_at"),
    (
        "not UTC",
        line("ConsentGiven", occurred_at="2026-01-05T10:00:00+01:00"),
        "not_utc",
        "occurred_at",
    ),
    ("not a time", line("ConsentGiven", occurred_at="yesterday"), "bad_time", "occurred_at"),
    (
        "before 1970",
        line("ConsentGiven", occurred_at="1969-12-31T23:59:59Z"),
        "bad_time",
        "occurred_at",
    ),
    (
        "epoch number in JSON",
        line("ConsentGiven", occurred_at=WHEN_MS),
        "wrong_type",
        "occurred_at",
    ),
    (
        "ack without a reference",
        line("ErasureAcknowledged", request_id=DROP),
        "missing_field",
        "request_id",
    ),
    (
        "ack with empty references",
        line("ErasureAcknowledged", request_id="", record_id=""),
        "missing_field",
        "request_id",
    ),
]


@pytest.mark.parametrize(("what", "raw", "code", "field"), REFUSALS, ids=[r[0] for r in REFUSALS])
def test_refusals(what: str, raw: bytes, code: str, field: str) -> None:
    error = refused(raw)
    assert (error.code, error.field) == (code, field)
    if field:
        assert repr(field) in str(error)  # the human reason names the field
    assert str(error) == error.reason


CONTACT_IDS = [
    "ada@example.com",
    "ADA@EXAMPLE.COM",
    "ada\uff20example.com",  # FULLWIDTH COMMERCIAL AT
    "ada\u200b@example.com",
    "ada%40example.com",
    "mailto:ada@example.com",
    "+49 170 1234567",
    "+491701234567",
    "0049-170-1234567",
    "01701234567",
    "(030) 1234-5678",
    "tel:+4930123456",
    "".join(chr(ord(d) + 0xFEE0) for d in "491701234567"),  # fullwidth digits
]
OPAQUE_IDS = [
    "subj-7f3a",
    "c0ffee00-1234-4abc-8def-0123456789ab",
    "42",
    "customer_000123",
    "u:98f1",
    "2f9c3a1e6b7d4c0a8e5f",
    "abc.def-ghi",
]


@pytest.mark.parametrize("subject_id", CONTACT_IDS)
def test_a_subject_id_that_is_contact_data_is_refused(subject_id: str) -> None:
    assert looks_like_contact_data(subject_id)
    error = refused(line("ConsentGiven", subject_id=subject_id))
    assert (error.code, error.field) == ("subject_id_is_contact_data", "subject_id")


@pytest.mark.parametrize("subject_id", OPAQUE_IDS)
def test_an_opaque_subject_id_passes(subject_id: str) -> None:
    assert parse_line(line("ConsentGiven", subject_id=subject_id))["subject_id"] == subject_id


def test_validate_takes_the_decoded_form_and_refuses_what_json_cannot_say() -> None:
    event = parse_line(line("ConsentGiven"))
    assert validate({**event, "occurred_at": WHEN}) == event  # a JSON object not via parse_line
    assert refused({**event, "occurred_at": True}).code == "wrong_type"
    assert refused({**event, "occurred_at": 1.5}).code == "wrong_type"
    assert refused({**event, "occurred_at": -1}).code == "bad_time"
    assert refused({**event, "occurred_at": 2**70}).code == "wrong_type"
    with pytest.raises(ContractError) as caught:
        validate([event])  # type: ignore[arg-type]
    assert caught.value.code == "not_an_object"


def test_validate_returns_a_new_dict() -> None:
    event = parse_line(line("DataCollected"))
    again = validate(event)
    again["fields"]["email"] = "changed"
    assert event["fields"]["email"] == "ada@example.com"


SECRETS = ["ada.lovelace@example.com", "4111 1111 1111 1111", "DE89370400440532013000", "Herpes"]


@pytest.mark.parametrize("secret", SECRETS)
def test_no_refusal_quotes_a_value(secret: str) -> None:
    cases: list[bytes | dict[str, Any]] = [
        line("ConsentGiven", subject_id=secret + "@example.org"),
        line("ConsentGiven", event_id=secret + " x"),
        line("DataCollected", category=secret),
        line("DataCollected", fields={"x": secret, "n": 1}),
        line("ConsentGiven", occurred_at=secret),
        orjson.dumps({**COMMON, "type": secret}),
        line("ConsentGiven", purpose=[secret]),
        line("ConsentGiven")[:-1] + secret.encode(),
    ]
    if not secret.isalpha():  # a key that is a plain word is a name; one with numbers is data
        cases.append(line("ConsentGiven", **{secret: "x"}))
    for raw in cases:
        error = refused(raw)
        for text in (str(error), error.reason, error.field, error.code):
            assert secret not in text
            assert secret.split()[0] not in text


# --- properties -----------------------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(), st.binary()))
def test_random_text_raises_only_contract_error(raw: str | bytes) -> None:
    with contextlib.suppress(ContractError):
        parse_line(raw)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=10,
)


@settings(max_examples=150, deadline=None)
@given(
    st.sampled_from(sorted(VALID) + list(DECISION_EVENTS)),
    st.dictionaries(
        st.sampled_from(
            [
                "event_id",
                "subject_id",
                "occurred_at",
                "source",
                "purpose",
                "request_id",
                "record_id",
                "fields",
                "kind",
                "category",
                "x",
            ]
        ),
        json_values,
        max_size=6,
    ),
)
def test_random_objects_raise_only_contract_error(kind: str, changes: dict[str, Any]) -> None:
    base = {"type": kind, **COMMON, **VALID.get(kind, {})}
    try:
        event = parse_line(orjson.dumps({**base, **changes}))
    except ContractError:
        return
    assert decode(encode(event)) == event  # whatever passes, the codec can write


def test_a_legal_hold_names_records_by_id_and_categories_from_the_closed_set() -> None:
    held = parse_line(line("LegalHoldPlaced", records=["rec-1"], categories=["billing"]))
    assert (held["records"], held["categories"]) == (["rec-1"], ["billing"])
    assert refused(line("LegalHoldPlaced", categories=["invoices"])).code == "bad_value"
    assert refused(line("LegalHoldPlaced", records=["a b"])).code == "invalid_id"


def test_the_worker_stamps_unchanged_and_an_upstream_line_may_not() -> None:
    assert refused(line("DataCollected", unchanged=True)).code == "unexpected_field"
    assert refused(line("ObjectionDecided", upheld="yes")).code == "wrong_type"
