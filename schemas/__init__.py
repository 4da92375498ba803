"""The Avro schemas of every record on lifecycle's topics, parsed once per process.

One ``<Name>.avsc`` per record type sits beside this module, namespace ``lifecycle``. A record
that uses another (``ConsentSnapshot`` holds ``PurposeConsent``) names it by its full name, and
fastavro's ``load_schema`` injects the definition, so every parsed schema is self-contained: its
parsing canonical form, and so its CRC-64-AVRO fingerprint, is the one any Avro library computes
from the same file. The codec puts that fingerprint on the wire, which is why it is pinned in a
test.

Evolving a record: add fields with defaults only, and keep the previous file as
``<Name>.v<N>.avsc``. A superseded version is registered by fingerprint only; messages written
with it are read into the current schema by Avro schema resolution. Without it, every message
already in the forever-kept ``lifecycle.events`` would carry a fingerprint nobody knows.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from importlib.resources import files
from importlib.resources.abc import Traversable
from pathlib import Path
from types import MappingProxyType
from typing import Any

from fastavro.repository.base import AbstractSchemaRepository, SchemaRepositoryError
from fastavro.schema import fingerprint as _fingerprint
from fastavro.schema import load_schema, to_parsing_canonical_form

NAMESPACE = "lifecycle"

#: What upstream systems and downstream consumers may publish (the event contract).
UPSTREAM_EVENTS: tuple[str, ...] = (
    "DataCollected",
    "ConsentGiven",
    "ConsentWithdrawn",
    "Unsubscribed",
    "RelationshipStarted",
    "RelationshipEnded",
    "IdentityVerified",
    "ErasureRequested",
    "AccessRequested",
    "PortabilityRequested",
    "RectificationRequested",
    "RestrictionRequested",
    "ObjectionRaised",
    "LegalHoldPlaced",
    "LegalHoldReleased",
    "DeadlineExtended",
    "ErasureAcknowledged",
    "RestrictionLifted",
    "ObjectionDecided",
)
#: What only the pipeline writes to ``lifecycle.events``; they carry ``caused_by`` and ``chain``.
DECISION_EVENTS: tuple[str, ...] = (
    "RetentionExpired",
    "ErasureExecuted",
    "RequestRejected",
    "RequestFulfilled",
    "DeadlineMissed",
    "ErasureCompleted",
    "RequestDenied",
)
#: What the pipeline writes to ``lifecycle.events`` besides decisions, chained with them: the
#: policy coming into force in a partition.
PIPELINE_EVENTS: tuple[str, ...] = ("PolicyAdopted",)
#: Values of the state and side topics (records, consent, rejected, keys).
STATE_RECORDS: tuple[str, ...] = ("Record", "ConsentSnapshot", "Rejection", "WrappedKey")
#: Named parts of other records; never a message on their own.
SUB_RECORDS: tuple[str, ...] = ("PurposeConsent", "StoppedPurpose")

_SUPERSEDED = re.compile(r"^(?P<name>[A-Za-z_][A-Za-z0-9_]*)\.v(?P<version>[0-9]+)$")


class SchemaLoadError(RuntimeError):
    """A shipped ``.avsc`` file is missing, malformed or inconsistent: a packaging bug."""


@dataclass(frozen=True, eq=False)
class Schema:
    """One parsed record schema together with what the wire and the contract need from it."""

    name: str
    """Record name without namespace, the event dict's ``"type"`` (``"DataCollected"``)."""
    parsed: dict[str, Any] = field(repr=False)
    """fastavro's parsed, self-contained schema (as writer)."""
    canonical: str = field(repr=False)
    """Parsing canonical form; what the fingerprint is computed over."""
    fingerprint: bytes
    """CRC-64-AVRO, the 8 bytes exactly as they appear after ``C3 01`` on the wire."""
    reader: dict[str, Any] | None = field(default=None, repr=False)
    """The current schema to resolve into, when this is a superseded version; else None."""
    version: int | None = None
    """N of a superseded ``<Name>.vN.avsc``; None for the current schema."""

    @property
    def fields(self) -> tuple[dict[str, Any], ...]:
        return tuple(self.parsed["fields"])

    @property
    def field_names(self) -> tuple[str, ...]:
        return tuple(f["name"] for f in self.parsed["fields"])

    @property
    def defaults(self) -> Mapping[str, Any]:
        return MappingProxyType({f["name"]: f["default"] for f in self.parsed["fields"] if "default" in f})

    @property
    def json(self) -> str:
        """Self-contained schema JSON (full names, docs, defaults) for other Avro libraries."""
        return json.dumps(_without_fastavro_keys(self.parsed))


class Registry:
    """Schemas by record name (current versions) and by fingerprint (every known version)."""

    def __init__(self, schemas: Iterable[Schema]) -> None:
        by_name: dict[str, Schema] = {}
        by_fp: dict[bytes, Schema] = {}
        for s in schemas:
            if s.version is None:
                if s.name in by_name:
                    raise SchemaLoadError(f"record {s.name} is defined twice")
                by_name[s.name] = s
            if s.fingerprint in by_fp:
                raise SchemaLoadError(f"{s.name} and {by_fp[s.fingerprint].name} have the same fingerprint")
            by_fp[s.fingerprint] = s
        self.by_name: Mapping[str, Schema] = MappingProxyType(by_name)
        self.by_fingerprint: Mapping[bytes, Schema] = MappingProxyType(by_fp)

    def __getitem__(self, name: str) -> Schema:
        return self.by_name[name]

    def __contains__(self, name: object) -> bool:
        return name in self.by_name

    def __iter__(self) -> Iterator[Schema]:
        return iter(self.by_name.values())

    def __len__(self) -> int:
        return len(self.by_name)


class _Directory(AbstractSchemaRepository):
    """Resolves ``lifecycle.PurposeConsent`` to ``PurposeConsent.avsc`` in one directory."""

    def __init__(self, root: Traversable) -> None:
        self.root = root

    def load(self, name: str) -> Any:
        short = name.removeprefix(f"{NAMESPACE}.")
        try:
            return json.loads(self.root.joinpath(f"{short}.avsc").read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise SchemaRepositoryError(f"cannot load schema {short}: {exc}") from exc


def _without_fastavro_keys(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: _without_fastavro_keys(v) for k, v in node.items() if not k.startswith("__")}
    if isinstance(node, list):
        return [_without_fastavro_keys(v) for v in node]
    return node


def _parse(repo: _Directory, stem: str) -> tuple[str, dict[str, Any], str, bytes]:
    # A fresh named_schemas per file: were PurposeConsent already known, load_schema would
    # leave a bare reference in ConsentSnapshot instead of injecting the definition, and the
    # canonical form (so the fingerprint) would no longer be self-contained.
    parsed: dict[str, Any] = load_schema(stem, repo=repo, named_schemas={})  # type: ignore[assignment]  # a record: a dict
    fullname = parsed.get("name", "")
    namespace, _, name = fullname.rpartition(".")
    if parsed.get("type") != "record" or namespace != NAMESPACE:
        raise SchemaLoadError(f"{stem}.avsc: expected a record in namespace {NAMESPACE}")
    canonical = to_parsing_canonical_form(parsed)
    fp = bytes.fromhex(_fingerprint(canonical, "CRC-64-AVRO"))
    return name, parsed, canonical, fp


def load(directory: Traversable | Path | None = None) -> Registry:
    """Parse every ``.avsc`` of a directory (default: this package's) into a registry."""
    root: Traversable = files(__name__) if directory is None else directory
    repo = _Directory(root)
    stems = sorted(p.name[: -len(".avsc")] for p in root.iterdir() if p.name.endswith(".avsc"))
    current: dict[str, Schema] = {}
    superseded: list[tuple[str, int]] = []
    for stem in stems:
        m = _SUPERSEDED.match(stem)
        if m:
            superseded.append((stem, int(m["version"])))
            continue
        try:
            name, parsed, canonical, fp = _parse(repo, stem)
        except SchemaRepositoryError as exc:
            raise SchemaLoadError(str(exc)) from exc
        if name != stem:
            raise SchemaLoadError(f"{stem}.avsc defines record {name}")
        current[name] = Schema(name, parsed, canonical, fp)
    old: list[Schema] = []
    for stem, version in superseded:
        name, parsed, canonical, fp = _parse(repo, stem)
        if name not in current:
            raise SchemaLoadError(f"{stem}.avsc supersedes {name}, which has no current schema")
        if fp == current[name].fingerprint:
            continue  # a copy of the current file; nothing to resolve
        old.append(Schema(name, parsed, canonical, fp, current[name].parsed, version))
    return Registry([*current.values(), *old])


REGISTRY: Registry = load()
BY_NAME: Mapping[str, Schema] = REGISTRY.by_name
BY_FINGERPRINT: Mapping[bytes, Schema] = REGISTRY.by_fingerprint


__all__ = [
    "BY_FINGERPRINT",
    "BY_NAME",
    "DECISION_EVENTS",
    "NAMESPACE",
    "PIPELINE_EVENTS",
    "REGISTRY",
    "STATE_RECORDS",
    "SUB_RECORDS",
    "UPSTREAM_EVENTS",
    "Registry",
    "Schema",
    "SchemaLoadError",
    "load",
]
