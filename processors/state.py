"""The shape of a subject's state and of the fold's outputs, as types.

Why types and not a comment: the state is a plain JSON document (the worker keeps it in a
table, orjson round-trips it unchanged), read and written by a dozen handlers; a misspelt key
or a field a handler forgot would otherwise surface as a wrong decision months later. These
TypedDicts are what mypy holds every handler of ``processors.fold`` to. At run time they are
plain dicts, so nothing here costs the fold a microsecond.
"""

from __future__ import annotations

from typing import Any, NotRequired, TypedDict

Event = dict[str, Any]
"""An event as the fold takes it: validated by ``schemas.contract`` (or a decision read back,
or a Tick), keyed by the Avro field names plus ``"type"``."""


class RecordValue(TypedDict):
    """A record exactly as ``lifecycle.records`` carries it (the ``Record`` schema)."""

    subject_id: str
    record_id: str
    category: str
    purpose: str
    legal_basis: str
    fields: dict[str, str]  # sealed in the state and the log, plaintext downstream
    collected_at: int
    retention_deadline: int | None  # None while a relationship keeps it
    restricted: bool
    updated_at: int
    caused_by: str
    source: str  # the system that collected it, for the access export (art. 15(1)(g))
    origin: str  # where third-party data came from, empty when the subject gave it (art. 14)
    policy: str  # the version of the policy it was collected under (Policy.version)


class ConsentEntry(TypedDict):
    """One purpose's consent, as the snapshot and the history hold it (``PurposeConsent``)."""

    status: str  # granted | withdrawn
    legal_basis: str | None
    at: int
    event_id: str
    source: str
    meaning: NotRequired[str]  # the purpose's meaning it was said to (Purpose.meaning)


class StoppedEntry(TypedDict):
    """A purpose stopped by a restriction or an objection (``StoppedPurpose``)."""

    reason: str  # restriction | objection
    at: int
    request_id: str


class Stop(TypedDict):
    """A purpose a restriction or an objection stopped, by request (state only)."""

    purpose: str
    reason: str  # restriction | objection
    at: int
    keep: NotRequired[bool]  # restriction for a legal claim: its records outlive their deadline


class OptOut(TypedDict):
    """The latest opt-out of direct marketing on a channel, or on all ("*"); no personal value."""

    at: int
    reason: str  # unsubscribe | objection | erasure
    request_id: str


class ConsentSnapshot(TypedDict):
    """The consent state exactly as ``lifecycle.consent`` carries it (``ConsentSnapshot``)."""

    subject_id: str
    purposes: dict[str, ConsentEntry]
    stopped: dict[str, StoppedEntry]
    updated_at: int
    caused_by: str


class Erasure(TypedDict):
    """An erasure the subject's state went through (kept for good: nothing silently re-creates
    a data key for the old data); ``late``: records collected before it, delivered after it."""

    request_id: str
    at: int
    caused_by: str
    late: NotRequired[list[str]]


class Relationship(TypedDict):
    kind: str
    started_at: int | None  # None: its start predates the log
    ended_at: int | None


class Hold(TypedDict):
    at: int
    reason: str
    event_id: str
    records: NotRequired[list[str]]  # the records it covers; with no categories either: all
    categories: NotRequired[list[str]]


class Verification(TypedDict):
    at: int
    method: str
    event_id: str


class Extension(TypedDict):
    at: int
    notice: str
    event_id: str


class Request(TypedDict):
    """A data-subject request: pending -> fulfilled | rejected | denied | executed (erasure) ->
    completed."""

    type: str  # access | portability | erasure | rectification | restriction | objection
    received_at: int
    deadline: int
    event_id: str
    status: str
    extended: Extension | None
    missed: bool  # DeadlineMissed (consumer "") decided
    answered_at: int | None
    outcome: str | None  # a rejection's reason
    record_id: NotRequired[str]  # rectification
    fields: NotRequired[dict[str, str]]  # rectification, until applied or erased
    purpose: NotRequired[str]  # restriction, objection
    erased: NotRequired[list[str]]  # erasure, once executed
    retained: NotRequired[dict[str, str]]
    consumers: NotRequired[list[str]]  # who must acknowledge, fixed when executed
    acks: NotRequired[dict[str, int]]  # consumer -> when
    record_acks: NotRequired[dict[str, list[str]]]  # consumer -> records acknowledged one by one
    owed: NotRequired[dict[str, list[str]]]  # consumer -> the erased records it was sent
    missed_consumers: NotRequired[list[str]]
    keep: NotRequired[bool]  # restriction: the subject needs the data for a legal claim
    deciding: NotRequired[bool]  # objection: stopped, awaiting the controller's ObjectionDecided
    verify_by: NotRequired[int]  # denied if the subject's identity is not verified by then
    lifted: NotRequired[Extension]  # restriction: when and with which notice it was lifted


class State(TypedDict):
    """Everything the fold knows about one subject."""

    subject_id: str
    # "erased": erased, and nothing personal collected since (a new collection or consent
    # starts a new life)
    status: str
    erasures: list[Erasure]
    # event_id -> the digest the guard stamped on it ("" for decisions and unstamped events):
    # upstream and decision ids alike, the idempotency set
    seen: dict[str, str]
    records: dict[str, RecordValue]
    retained: dict[str, str]  # record_id -> why an erasure kept it: legal_obligation | legal_hold:<id>
    consent: ConsentSnapshot | None
    consent_history: dict[str, list[ConsentEntry]]  # purpose -> entries, oldest first
    relationships: dict[str, Relationship]
    holds: dict[str, Hold]
    stops: dict[str, Stop]  # request_id -> the purpose it stopped
    optouts: dict[str, OptOut]  # channel or "*" -> the latest opt-out; survives erasure
    requests: dict[str, Request]
    verifications: dict[str, Verification]
    keys: dict[str, int]  # data key id -> 1: keys of this subject's events not destroyed yet
    sent: dict[str, list[str]]  # record_id ("" the consent) -> the consumers sent it


__all__ = [
    "ConsentEntry",
    "ConsentSnapshot",
    "Erasure",
    "Event",
    "Extension",
    "Hold",
    "OptOut",
    "RecordValue",
    "Relationship",
    "Request",
    "State",
    "Stop",
    "StoppedEntry",
    "Verification",
]
