"""The event contract: what an upstream event must look like before anything stores it.

Checked twice with the same code: by ``lifecycle publish`` on each JSON line, and by the guard
on each decoded message (an upstream system may bypass the command line). The Avro schema
gives the fields and their types; this module adds what Avro cannot say: ids are non-empty
opaque tokens, enumerations are closed, times are UTC, and ``subject_id`` is not contact data
(a compacted topic's key outlives the tombstone that erased its value).

Only ``schemas.UPSTREAM_EVENTS`` pass: decisions are the pipeline's to take, never an upstream
system's. ``occurred_at`` arrives in JSON as ISO-8601 UTC (``2026-01-05T10:00:00Z`` or
``+00:00``) and leaves as ``int`` epoch milliseconds, the form the fold compares.

A ``ContractError`` says which field and why, never the field's value: values are personal
data, and error messages end up in logs and on ``lifecycle.rejected``.
"""

from __future__ import annotations

import copy
import re
import unicodedata
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple

import orjson

from schemas import BY_NAME, UPSTREAM_EVENTS

# The closed sets of the contract, each written once: the policy builds on the same tuples.
CATEGORIES = ("contact", "billing", "employment", "analytics", "third_party")
LEGAL_BASES = ("consent", "contract", "legitimate_interest", "legal_obligation")
RELATIONSHIP_KINDS = ("client", "vendor", "partner", "applicant")
ENUMS: Mapping[str, frozenset[str]] = {
    "category": frozenset(CATEGORIES),
    "legal_basis": frozenset(LEGAL_BASES),
    "kind": frozenset(RELATIONSHIP_KINDS),
}

MAX_ID = 256
"""Ids are keys of compacted topics and state tables; anything longer is not an id."""
MAX_TEXT = 65_536
MAX_FIELDS = 1_000
MAX_FIELD_NAME = 256
MAX_TIME_MS = 253_402_300_799_999  # 9999-12-31T23:59:59.999Z, the last instant datetime knows
KEY_SEPARATOR = "/"
"""Joins ids into the keys of ``lifecycle.records`` and of data keys; no id may hold it."""
STAMPED = frozenset({"received_at", "digest", "unchanged"})
"""Fields the worker stamps on an event as it takes it in: an upstream line may not set them,
and what an upstream message sets there is overwritten. Not part of an event's content (a
redelivery arrives later, and is as unchanged as the first copy was)."""

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)
_PLAIN_NAME = re.compile(r"(?!(?:\D*\d){7})[A-Za-z_][A-Za-z0-9_.\-]{0,63}")


def is_plain_name(name: object) -> bool:
    """A plain identifier with few digits: a name, not a number someone typed into a key. Only
    such names are repeated in an error, a dead letter or a log line, since a map key may be
    data itself (the contract, the codec and the guard all ask this one question)."""
    return isinstance(name, str) and _PLAIN_NAME.fullmatch(name) is not None


_EMAIL = re.compile(r"[^@\s]@[^@\s]|%40[^%]*\.", re.IGNORECASE)
_PHONE = re.compile(r"(?:tel:)?\s*\+?[0-9()\-./\s]{7,}", re.IGNORECASE)


class Where(NamedTuple):
    """The message an error or a dead letter is about: named by its place, never its content."""

    topic: str
    partition: int
    offset: int

    def __str__(self) -> str:
        return f"{self.topic}[{self.partition}]@{self.offset}"


class ContractError(ValueError):
    """An event breaks the contract. ``code`` is a stable reason code, ``field`` the field,
    ``where`` the message it came in (None for a line of ``lifecycle publish``)."""

    def __init__(self, reason: str, *, code: str = "contract_violation", field: str = "", where: Where | None = None) -> None:
        self.reason = reason
        self.code = code
        self.field = field
        self.where = where
        super().__init__(f"{where}: {reason}" if where is not None else reason)


def _label(name: object) -> str:
    """A name fit to appear in a message: plain identifiers only, since a key can be data too."""
    if is_plain_name(name):
        return repr(name)
    return "(a name that is not a plain identifier)"


def _to_ms(text: str, field: str) -> int:
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise ContractError(
            f"field {field!r} is not an ISO-8601 time (like 2026-01-05T10:00:00Z)",
            code="bad_time",
            field=field,
        ) from None
    if when.tzinfo is None or when.utcoffset() is None:
        raise ContractError(f"field {field!r} has no UTC offset; write Z or +00:00", code="naive_time", field=field)
    if when.utcoffset() != timedelta(0):
        raise ContractError(f"field {field!r} must be in UTC (Z or +00:00)", code="not_utc", field=field)
    return (when - _EPOCH) // _MS


def _is_text(value: Any) -> bool:
    return isinstance(value, str)


def _is_long(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and -(2**63) <= value < 2**63


def _is_string_map(value: Any) -> bool:
    return isinstance(value, dict) and all(isinstance(k, str) and isinstance(v, str) for k, v in value.items())


def _is_boolean(value: Any) -> bool:
    return isinstance(value, bool)


def _is_string_list(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(v, str) for v in value)


_CHECKS: dict[str, tuple[Callable[[Any], bool], str]] = {
    "string": (_is_text, "a string"),
    "long": (_is_long, "an integer"),
    "map": (_is_string_map, "an object of strings"),
    "array": (_is_string_list, "a list of strings"),
    "boolean": (_is_boolean, "true or false"),
}


@dataclass(frozen=True)
class _Field:
    name: str
    kind: str  # a key of _CHECKS
    required: bool
    default: Any


def _fields_of(type_name: str) -> tuple[_Field, ...]:
    out = []
    for f in BY_NAME[type_name].fields:
        t = f["type"]
        kind = t if isinstance(t, str) else t.get("type") if isinstance(t, dict) else "union"
        if kind not in _CHECKS:
            raise TypeError(f"{type_name}.{f['name']}: the contract has no check for {t!r}")
        out.append(_Field(f["name"], kind, "default" not in f, f.get("default")))
    return tuple(out)


_SOME_TYPES = ", ".join(UPSTREAM_EVENTS[:3])
_CONTRACT: dict[str, tuple[_Field, ...]] = {t: _fields_of(t) for t in UPSTREAM_EVENTS}
_ALLOWED: dict[str, frozenset[str]] = {t: frozenset(f.name for f in fs) | {"type"} for t, fs in _CONTRACT.items()}


def looks_like_contact_data(text: str) -> bool:
    """An email address or a phone number, also behind fullwidth or invisible characters."""
    folded = text
    if not text.isascii():
        nfkc = unicodedata.normalize("NFKC", text)
        folded = "".join(c for c in nfkc if unicodedata.category(c) != "Cf")
    if _EMAIL.search(folded):
        return True
    if _PHONE.fullmatch(folded):
        digits = sum(c.isdigit() for c in folded)
        return 7 <= digits <= 15
    return False


def _check_id(value: str, field: str) -> None:
    if not value or value.isspace():
        raise ContractError(f"field {field!r} is empty", code="empty_field", field=field)
    if len(value) > MAX_ID:
        raise ContractError(f"field {field!r} is longer than {MAX_ID} characters", code="too_long", field=field)
    if " " in value or not value.isprintable():  # catches every other space and control too
        raise ContractError(
            f"field {field!r} holds whitespace or control characters; ids are opaque tokens",
            code="invalid_id",
            field=field,
        )
    if KEY_SEPARATOR in value:
        raise ContractError(
            f"field {field!r} holds a {KEY_SEPARATOR!r}, which joins ids in the keys of "
            "lifecycle.records and of the data keys: two people's ids could make one key",
            code="invalid_id",
            field=field,
        )


def is_valid_id(value: object) -> bool:
    """Whether ``value`` would pass as an id (``_check_id``): what a dead letter may repeat of
    an event the contract refused for another reason."""
    if not isinstance(value, str):
        return False
    try:
        _check_id(value, "id")
    except ContractError:
        return False
    return True


def record_key(subject_id: str, record_id: str) -> bytes:
    """The Kafka key of a record on ``lifecycle.records``: ``<subject_id>/<record_id>``.

    Unambiguous because no id may hold the separator (``_check_id``): this and
    ``split_record_key`` are the only places the form is written."""
    return f"{subject_id}{KEY_SEPARATOR}{record_id}".encode("utf-8", "surrogatepass")


def split_record_key(key: str) -> tuple[str, str]:
    """``(subject_id, record_id)`` of a ``lifecycle.records`` key (``record_key`` reversed)."""
    subject_id, _, record_id = key.partition(KEY_SEPARATOR)
    return subject_id, record_id


def _check_text(value: str, field: str, required: bool) -> None:
    if required and (not value or value.isspace()):
        raise ContractError(f"field {field!r} is empty", code="empty_field", field=field)
    if len(value) > MAX_TEXT:
        raise ContractError(f"field {field!r} is longer than {MAX_TEXT} characters", code="too_long", field=field)


def _check_fields_map(value: dict[str, str], field: str, type_name: str) -> None:
    if not value and type_name == "RectificationRequested":
        raise ContractError(f"field {field!r} is empty: nothing to rectify", code="empty_field", field=field)
    if len(value) > MAX_FIELDS:
        raise ContractError(f"field {field!r} has more than {MAX_FIELDS} entries", code="too_long", field=field)
    for k, v in value.items():
        if not k or k.isspace():
            raise ContractError(f"field {field!r} has an empty name", code="empty_field", field=field)
        if len(k) > MAX_FIELD_NAME or len(v) > MAX_TEXT:
            raise ContractError(f"field {field!r} has an entry too long", code="too_long", field=field)


def validate(event: Mapping[str, Any], where: Where | None = None) -> dict[str, Any]:
    """Check an upstream event and return it normalised: ``occurred_at`` in epoch ms, defaults
    filled in, keys exactly the Avro field names plus ``"type"``.

    Takes both shapes the pipeline meets: a decoded message (``occurred_at`` an int, ``where``
    the message it came in, which a refusal then names) and a JSON object (``occurred_at``
    ISO-8601 text).
    """
    try:
        return _validated(event)
    except ContractError as exc:
        if where is None:
            raise
        raise ContractError(exc.reason, code=exc.code, field=exc.field, where=where) from None


def _validated(event: Mapping[str, Any]) -> dict[str, Any]:
    if not isinstance(event, Mapping):
        raise ContractError("an event must be a JSON object", code="not_an_object")
    if "type" not in event:
        raise ContractError("field 'type' is missing", code="missing_field", field="type")
    kind = event["type"]
    if not isinstance(kind, str):
        raise ContractError("field 'type' must be a string", code="wrong_type", field="type")
    fields = _CONTRACT.get(kind)
    if fields is None:
        # Echo the type only when it is one of ours (a decision, a state record): any other
        # string is a value like every other, and values are never repeated.
        shown = f"{kind} is" if kind in BY_NAME else "it is"
        raise ContractError(
            f"field 'type': {shown} not an upstream event type ({_SOME_TYPES}, ...)",
            code="unknown_type",
            field="type",
        )
    extra = [k for k in event if k not in _ALLOWED[kind]]
    if extra:
        name = min(extra, key=str)
        shown = name if is_plain_name(name) else ""
        raise ContractError(f"unexpected field {_label(name)} in {kind}", code="unexpected_field", field=shown)
    out: dict[str, Any] = {"type": kind}
    for f in fields:
        name = f.name
        if name not in event:
            if f.required:
                raise ContractError(f"field {name!r} is missing from {kind}", code="missing_field", field=name)
            default = f.default
            # never share a mutable default between events (a deep copy only where one could be)
            out[name] = copy.deepcopy(default) if isinstance(default, (dict, list)) else default
            continue
        value = event[name]
        if f.kind == "long" and isinstance(value, str):
            value = _to_ms(value, name)
        check, what = _CHECKS[f.kind]
        if not check(value):
            raise ContractError(f"field {name!r} must be {what}", code="wrong_type", field=name)
        if f.kind == "string":
            if name == "subject_id" and looks_like_contact_data(value):
                raise ContractError(
                    "field 'subject_id' looks like an email address or phone number; use an "
                    "opaque pseudonymous id, because a tombstone's key outlives its value",
                    code="subject_id_is_contact_data",
                    field=name,
                )
            if name.endswith("_id") and (f.required or value):
                _check_id(value, name)
            else:
                _check_text(value, name, f.required)
            allowed = ENUMS.get(name)
            if allowed is not None and value not in allowed:
                raise ContractError(
                    f"field {name!r} must be one of {', '.join(sorted(allowed))}",
                    code="bad_value",
                    field=name,
                )
        elif f.kind == "long":
            if not 0 <= value <= MAX_TIME_MS:
                raise ContractError(f"field {name!r} is outside 1970..9999", code="bad_time", field=name)
        elif f.kind == "map":
            _check_fields_map(value, name, kind)
            value = dict(value)
        elif f.kind == "array":
            value = list(value)
        out[name] = value
    if kind == "LegalHoldPlaced":
        for i, record_id in enumerate(out["records"]):
            _check_id(record_id, f"records[{i}]")
        for i, category in enumerate(out["categories"]):
            if category not in ENUMS["category"]:
                raise ContractError(
                    f"field 'categories[{i}]' must be one of {', '.join(CATEGORIES)}",
                    code="bad_value",
                    field="categories",
                )
    if kind == "ErasureAcknowledged" and not (out["request_id"] or out["record_id"]):
        raise ContractError(
            "ErasureAcknowledged needs a 'request_id' or a 'record_id'",
            code="missing_field",
            field="request_id",
        )
    return out


def parse_line(line: str | bytes) -> dict[str, Any]:
    """One JSON line of ``lifecycle publish`` to a validated event dict."""
    if isinstance(line, (bytes, bytearray, memoryview)):
        try:
            bytes(line).decode("utf-8")
        except UnicodeDecodeError as exc:
            # orjson reports any invalid UTF-8 at character 0; the byte is what one can look up
            raise ContractError(f"not valid UTF-8 (at byte {exc.start})", code="not_utf8") from None
    try:
        obj = orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        # orjson describes what it choked on; ours keeps to where, which quotes nothing.
        raise ContractError(f"not valid JSON (at character {exc.pos})", code="not_json") from None
    except TypeError:
        raise ContractError("a line must be text or bytes", code="not_json") from None
    if not isinstance(obj, dict):
        raise ContractError("a line must be a JSON object", code="not_an_object")
    stamped = sorted(STAMPED & obj.keys())
    if stamped:
        raise ContractError(
            f"field {stamped[0]!r} is the pipeline's to stamp, not upstream's",
            code="unexpected_field",
            field=stamped[0],
        )
    when = obj.get("occurred_at")
    if when is not None and not isinstance(when, str):
        raise ContractError(
            "field 'occurred_at' must be an ISO-8601 UTC time string",
            code="wrong_type",
            field="occurred_at",
        )
    return validate(obj)


__all__ = [
    "CATEGORIES",
    "KEY_SEPARATOR",
    "LEGAL_BASES",
    "RELATIONSHIP_KINDS",
    "STAMPED",
    "ContractError",
    "Where",
    "is_plain_name",
    "is_valid_id",
    "looks_like_contact_data",
    "parse_line",
    "record_key",
    "split_record_key",
    "validate",
]
