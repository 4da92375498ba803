"""Fold outputs as Kafka messages: the one place that says which topic, key, value and headers
each output of the fold becomes.

- a ``RecordChange`` goes to ``lifecycle.records`` under ``<subject_id>/<record_id>``
  (``schemas.contract.record_key``), its value a ``Record`` with the fields in plaintext (a
  downstream copy holds the data itself; the log holds it sealed), or None: a tombstone;
- a ``ConsentChange`` goes to ``lifecycle.consent`` under the subject, a ``ConsentSnapshot`` or
  a tombstone;
- a ``Decision`` goes to ``lifecycle.events`` under the subject, with its ``chain``: the hash of
  the previous decision of the partition as written (``processors.chain``).

Beside the complete feeds, each consumer has its own, ``lifecycle.records.<consumer>`` and
``lifecycle.consent.<consumer>`` (``feed``): a record goes to the feeds of the consumers that
serve its purpose (the change's ``consumers``), a snapshot to each recipient cut down to the
purposes it serves. That is purpose limitation a broker can enforce: each consumer's
principal is granted its own feeds only, so the mailer cannot read a CV even by mistake.

Tombstones that an erasure caused carry a ``request_id`` header naming it, so a consumer's
acknowledgement of a deletion is matched to the request it completes. The worker sends what
this returns; the bench and the tests compute with it what the worker must have sent
(``downstream_of``), and the audit encodes the decisions it re-derives with it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, NamedTuple

from processors import fold as lifecycle
from processors.chain import link
from processors.guard import screen
from processors.policy import Policy
from processors.state import State
from schemas.codec import encode
from schemas.contract import ContractError, record_key, validate

RECORDS, CONSENT, EVENTS = "records", "consent", "events"
"""The short names of the topics outputs go to (``Settings.topic`` gives the full ones)."""

Headers = list[tuple[str, bytes]]
OpenFields = Callable[[Mapping[str, str]], Mapping[str, str]]


class Message(NamedTuple):
    """One message to send: ``topic`` is a short name (``RECORDS``, ``CONSENT``, ``EVENTS``)."""

    topic: str
    key: bytes
    value: bytes | None
    headers: Headers | None = None


def _plain(fields: Mapping[str, str]) -> Mapping[str, str]:
    return fields


def feed(topic: str, consumer: str) -> str:
    """The short name of one consumer's own feed of ``RECORDS`` or ``CONSENT``."""
    return f"{topic}.{consumer}"


@lru_cache(maxsize=8)
def _purposes_of(policy: Policy) -> dict[str, frozenset[str]]:
    return {c.name: frozenset(c.purposes) for c in policy.consumers}


def consent_for(snapshot: Mapping[str, Any], purposes: frozenset[str]) -> dict[str, Any]:
    """A consent snapshot as a consumer serving ``purposes`` may see it: only those purposes."""
    return {
        **snapshot,
        "purposes": {k: v for k, v in snapshot["purposes"].items() if k in purposes},
        "stopped": {k: v for k, v in snapshot["stopped"].items() if k in purposes},
    }


def decision_value(event: Mapping[str, Any], previous: bytes) -> bytes:
    """A decision as written to the log: Avro, chained to ``previous`` (the partition's last
    decision as written, ``processors.chain.GENESIS`` for the first)."""
    value = encode({**event, "chain": link(previous)})
    assert value is not None  # a decision is never a tombstone
    return value


def to_messages(
    outputs: Iterable[lifecycle.Output], head: bytes, policy: Policy, open_fields: OpenFields = _plain
) -> tuple[list[Message], bytes]:
    """The messages of one fold step, in the fold's order, and the partition's new chain head.

    ``head`` is the last decision of the subject's partition as written; ``policy`` says which
    purposes each consumer's consent feed shows; ``open_fields`` turns a record's sealed fields
    into plaintext (the worker's keystore; the identity where the fold was given plaintext, as
    in tests).
    """
    outputs = list(outputs)
    erasure = next(
        (o.event["request_id"] for o in outputs if isinstance(o, lifecycle.Decision) and o.event["type"] == "ErasureExecuted"),
        None,
    )
    headers: Headers | None = [("request_id", erasure.encode())] if erasure else None
    out: list[Message] = []
    for o in outputs:
        if isinstance(o, lifecycle.Decision):
            value = decision_value(o.event, head)
            head = value
            out.append(Message(EVENTS, o.event["subject_id"].encode(), value))
        elif isinstance(o, lifecycle.RecordChange):
            key = record_key(o.subject_id, o.record_id)
            if o.value is None:
                out.append(Message(RECORDS, key, None, headers))
                out.extend(Message(feed(RECORDS, c), key, None, headers) for c in o.consumers)
            else:
                record = encode({"type": "Record", **o.value, "fields": dict(open_fields(o.value["fields"]))})
                out.append(Message(RECORDS, key, record))
                out.extend(Message(feed(RECORDS, c), key, record) for c in o.consumers)
        else:
            key = o.subject_id.encode()
            if o.value is None:
                out.append(Message(CONSENT, key, None, headers))
                out.extend(Message(feed(CONSENT, c), key, None, headers) for c in o.consumers)
            else:
                snap = {"type": "ConsentSnapshot", **o.value}
                out.append(Message(CONSENT, key, encode(snap)))
                if o.consumers:
                    purposes = _purposes_of(policy)
                    for c in o.consumers:
                        out.append(Message(feed(CONSENT, c), key, encode(consent_for(snap, purposes.get(c, frozenset())))))
    return out, head


@dataclass
class Downstream:
    """What the pipeline must leave downstream for a history: the last value of every key of
    ``lifecycle.records`` and ``lifecycle.consent`` (None: a tombstone) as encoded on the wire,
    and every decision, by id, without its chain."""

    records: dict[bytes, bytes | None] = field(default_factory=dict)
    consent: dict[bytes, bytes | None] = field(default_factory=dict)
    feeds: dict[str, dict[bytes, bytes | None]] = field(default_factory=dict)  # "records.mailer" -> ...
    decisions: dict[str, dict[str, Any]] = field(default_factory=dict)
    states: dict[str, State] = field(default_factory=dict)


def downstream_of(events: Iterable[Mapping[str, Any]], policy: Policy) -> Downstream:
    """The pure pipeline: each upstream event validated and screened (what the guard refuses
    goes nowhere), folded into its subject with ``now = occurred_at`` (what the worker passes),
    and mapped with ``to_messages``. The oracle of the bench's correctness check and the tests."""
    result = Downstream()
    for raw in events:
        try:
            event = validate(raw)
        except ContractError:
            continue
        if screen(event, policy) is not None:
            continue
        sid = event["subject_id"]
        state = result.states.setdefault(sid, lifecycle.new_state(sid))
        _, outputs = lifecycle.apply(state, event, event["occurred_at"], policy)
        messages, _ = to_messages(outputs, b"", policy)
        for m in messages:
            if m.topic == RECORDS:
                result.records[m.key] = m.value
            elif m.topic == CONSENT:
                result.consent[m.key] = m.value
            elif m.topic != EVENTS:
                result.feeds.setdefault(m.topic, {})[m.key] = m.value
        for o in outputs:
            if isinstance(o, lifecycle.Decision):
                result.decisions[o.event["event_id"]] = dict(o.event)
    return result


__all__ = [
    "CONSENT",
    "EVENTS",
    "RECORDS",
    "Downstream",
    "Message",
    "consent_for",
    "decision_value",
    "downstream_of",
    "feed",
    "to_messages",
]
