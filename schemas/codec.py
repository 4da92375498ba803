"""Event dicts to Kafka message values and back: Avro single-object encoding.

Wire framing of every non-null value on every lifecycle topic::

    C3 01 | 8-byte CRC-64-AVRO fingerprint of the writer schema (little-endian) | Avro binary body

Any Avro library can read it: the fingerprint names the writer schema, whose parsing canonical
form is pinned in ``schemas``. The body is the plain Avro binary encoding of the record, nothing
around it. A tombstone is a Kafka record whose value is null, never an Avro-encoded null, so
``None`` passes through both ways (kafka-python hands a tombstone's ``None`` to serializers).

An event dict holds exactly the record's Avro field names plus ``"type"``, the record name
without namespace. Messages written with a superseded schema version are read into the current
one, so consumers only ever see current-shape dicts.

``CodecError`` messages name the topic, partition, offset and what is wrong; never the payload,
which is personal data.
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from typing import Any

from fastavro import schemaless_reader, schemaless_writer
from fastavro.validation import validate as _avro_valid

from schemas import BY_FINGERPRINT, BY_NAME, Schema
from schemas.contract import Where, is_plain_name

MAGIC = b"\xc3\x01"
HEADER_SIZE = len(MAGIC) + 8


class CodecError(ValueError):
    """A value cannot be encoded or decoded; says where (``where``, when it came from a topic)
    and why, never what it held."""

    def __init__(self, reason: str, *, where: Where | None = None):
        self.reason = reason
        self.where = where
        super().__init__(f"{where}: {reason}" if where is not None else reason)


# What encode needs per record type, computed once: header bytes, the keys it accepts, and the
# integer fields, which fastavro would fill from a bool or (truncating) a float without a word.
_INT_BITS = {"int": 31, "long": 63}
_WRITERS: dict[str, tuple[bytes, dict[str, Any], frozenset[str], tuple[tuple[str, str], ...]]] = {
    name: (
        MAGIC + s.fingerprint,
        s.parsed,
        frozenset(s.field_names) | {"type"},
        tuple((f["name"], f["type"]) for f in s.fields if f["type"] in ("int", "long")),
    )
    for name, s in BY_NAME.items()
}
# By fingerprint: record name, writer schema, and the reader schema when the writer is superseded.
_READERS: dict[bytes, tuple[str, dict[str, Any], dict[str, Any] | None]] = {
    fp: (s.name, s.parsed, s.reader) for fp, s in BY_FINGERPRINT.items()
}


def _label(name: object) -> str:
    """A key or type name fit for an error message: only plain identifiers are echoed."""
    return repr(name) if is_plain_name(name) else "(unprintable)"


def _what_is_wrong(schema: Schema, event: Mapping[str, Any]) -> str:
    """Name the first field fastavro refused, by checking each one on its own."""
    for f in schema.fields:
        name = f["name"]
        if name not in event:
            if "default" not in f:
                return f"missing field {name!r}"
            continue
        try:
            ok = _avro_valid(event[name], f["type"], field=name, raise_errors=False, strict=True)
        except Exception:  # noqa: BLE001 - a value so odd the validator itself trips over it
            ok = False
        if not ok:
            return f"field {name!r} is not a valid {_type_label(f['type'])}"
        if not _utf8_ok(event[name]):
            return f"field {name!r} holds text that is not valid Unicode (a lone surrogate)"
    return "record does not match its schema"


def _utf8_ok(value: Any) -> bool:
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return False
        return True
    if isinstance(value, Mapping):
        return all(_utf8_ok(k) and _utf8_ok(v) for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return all(_utf8_ok(v) for v in value)
    return True


def _type_label(avro_type: Any) -> str:
    if isinstance(avro_type, str):
        return avro_type
    if isinstance(avro_type, list):
        return " or ".join(_type_label(t) for t in avro_type)
    kind = avro_type.get("type", "?")
    if kind == "map":
        return f"map of {_type_label(avro_type['values'])}"
    if kind == "array":
        return f"array of {_type_label(avro_type['items'])}"
    return str(avro_type.get("name", kind))


def encode(event: Mapping[str, Any] | None) -> bytes | None:
    """Frame an event dict for Kafka; its ``"type"`` picks the schema. ``None`` stays ``None``."""
    if event is None:
        return None
    kind: Any = event.get("type")
    try:
        header, parsed, allowed, integers = _WRITERS[kind]
    except (KeyError, TypeError):  # TypeError: an unhashable "type"
        what = "no 'type'" if kind is None else f"unknown record type {_label(kind)}"
        raise CodecError(f"cannot encode: {what}") from None
    extra = event.keys() - allowed
    if extra:
        # Silently dropping a key would lose data someone meant to keep.
        raise CodecError(f"cannot encode {kind}: unexpected field {_label(min(map(str, extra)))}")
    for name, avro_type in integers:
        value = event.get(name)
        if value is None:
            continue  # missing: fastavro's own check below names it
        bits = _INT_BITS[avro_type]
        if isinstance(value, bool) or not isinstance(value, int) or not -(2**bits) <= value < 2**bits:
            raise CodecError(f"cannot encode {kind}: field {name!r} is not a valid {avro_type}")
    out = io.BytesIO()
    out.write(header)
    try:
        schemaless_writer(out, parsed, event)
    except Exception:  # noqa: BLE001 - fastavro raises TypeError, ValueError, OverflowError, AttributeError...
        reason = _what_is_wrong(BY_NAME[kind], event)
        raise CodecError(f"cannot encode {kind}: {reason}") from None
    return out.getvalue()


def decode(data: bytes | bytearray | memoryview | None, where: Where | None = None) -> dict[str, Any] | None:
    """Read one framed value back into an event dict; ``None`` (a tombstone) stays ``None``.
    ``where``: the message it was read from, which an error then names."""
    if data is None:
        return None
    if not isinstance(data, bytes):
        data = bytes(data)

    def fail(reason: str) -> CodecError:
        return CodecError(reason, where=where)

    if len(data) < HEADER_SIZE:
        raise fail(f"{len(data)} bytes is shorter than the {HEADER_SIZE}-byte single-object header")
    if data[:2] != MAGIC:
        raise fail("bad magic: not Avro single-object encoding (C3 01)")
    fp = data[2:HEADER_SIZE]
    try:
        name, writer, reader = _READERS[fp]
    except KeyError:
        raise fail(f"unknown schema fingerprint {fp.hex()}") from None
    body = io.BytesIO(data)
    body.seek(HEADER_SIZE)
    try:
        event: dict[str, Any] = schemaless_reader(body, writer, reader)  # type: ignore[assignment]  # a record schema reads as a dict
    except Exception as exc:  # noqa: BLE001 - random bytes: cut short, bad union index, invalid UTF-8...
        # fastavro's C reader may say IndexError rather than EOFError when a varint is cut off.
        if isinstance(exc, EOFError) or body.tell() >= len(data):
            raise fail(f"truncated {name} body") from None
        # The exception's text may quote payload bytes; its class name cannot.
        raise fail(f"{name} body is not valid Avro ({type(exc).__name__})") from None
    rest = len(data) - body.tell()
    if rest:
        raise fail(f"{rest} trailing bytes after the {name} body")
    event["type"] = name
    return event


__all__ = ["HEADER_SIZE", "MAGIC", "CodecError", "Where", "decode", "encode"]
