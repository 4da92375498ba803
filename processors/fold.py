"""The lifecycle fold: one subject's history in, state and decisions out, nothing else.

Why a pure function: the same code runs live (events from Kafka, Ticks from the retention
timer) and in the auditor's replay, so every decision can be re-derived from the log and
compared with the one recorded. The fold therefore reads no clock, no environment and no
randomness; the only notion of time is the ``occurred_at`` of the event (or ``now`` for a
Tick, which the timer stamps onto the decisions it causes, so a replay can use it as its
clock).

Why the state is mutated in place: the worker folds hundreds of thousands of events a second
and a copy per event would dominate the cost. ``apply`` updates the ``state`` dict it is given
and returns that same dict; the caller owns it and must copy it first if it wants to keep the
old version. Record values and consent snapshots inside the state are never changed in place,
though: a change stores a new dict. That is what lets an output carry the very dict the state
holds without a copy, and stay valid after later events. Treat outputs as read-only.

The state is a plain JSON document (str keys, lists, ints, no sets or tuples) that
round-trips through orjson unchanged, because the worker keeps it in a table.

Choices the design left open, made here:
- a collection must claim one of the legal bases the policy lists for its purpose, for one of
  the categories it lists (``legal_basis_mismatch``, ``category_not_allowed``): claiming
  ``legal_obligation`` would make marketing data survive erasure, claiming
  ``legitimate_interest`` would bypass consent; whether a record is kept under an obligation
  follows from its purpose alone, never from its category label, which anyone can set;
- a collection for a purpose the subject restricted or objected to is refused
  (``purpose_stopped``); a later ``ConsentGiven`` lifts an objection to a consent purpose,
  being the subject's newest word on it, never a restriction;
- direct marketing is one thing: ``Unsubscribed`` stops every direct-marketing purpose of its
  channel, an objection to any of them stops all of them on every channel (art. 21(3)), both
  whatever the purposes' legal basis, both at once and without identity verification (they
  only ever stop processing), and both recorded even when nothing was consented to; a
  collection for such a purpose is then refused (``opted_out``) until the subject consents to
  that purpose after the opt-out (a channel no purpose uses is refused: ``unknown_channel``);
- for consent and opt-outs the later ``occurred_at`` wins, not the later arrival; at the same
  instant, the withdrawal or the opt-out;
- an erasure stops all direct marketing until a consent newer than it, and keeps the opt-outs
  (channels and times, no personal value): a consent older than the erasure is covered by it
  (``covered_by_erasure``), so the next import cannot re-subscribe the person;
- an erasure request for a subject already erased (nothing collected since) is answered with
  ``RequestRejected`` reason ``subject_erased``: nothing was sent downstream, so there is
  nothing for consumers to acknowledge;
- a record whose deadline passed before a relationship started keeps that deadline (the
  timer merely had not run yet);
- a legal hold keeps the records it covers (those it names, those of the categories it names,
  or all of the subject's when it names neither) past their deadline and through an erasure;
  when it is released, overdue records no other hold covers, and records an erasure kept only
  for it, go at once (``hold_released``);
- a relationship keeps only the records of the purposes its kind serves (``[relationships]``),
  and a kind with ``max_months`` ends by itself that long after it started;
- a collection the worker stamped ``unchanged`` (the record is held with exactly these fields,
  purpose, category and basis: a nightly sync) changes nothing, so its clock does not restart;
- acknowledgements from consumers the policy does not register are ignored;
- an erasure that sent nothing downstream (no record held, no consent) is complete at once:
  there is nothing for a consumer to acknowledge, so none is waited for or blamed;
- data collected before an erasure ran but delivered after it is covered by that erasure
  (``covered_by_erasure``, its key destroyed), unless an obligation or a hold would have kept it
  (``_arrived_late``);
- an erasure awaits the acknowledgements of the consumers that were sent the subject's data
  (each record goes only to the consumers of its purpose), never fewer; a state an older worker
  persisted counts every consumer as having had everything (``upgrade``);
- an objection to what a contract or the law requires is refused with a reason
  (``objection_not_applicable``), so the next invoice is still issued and kept; one to a
  legitimate interest stops the purpose at once and waits for the controller's
  ``ObjectionDecided`` (the burden of compelling grounds is the controller's, art. 21(1));
  one to a consent purpose is a withdrawal, answered at once;
- a restriction asked for a legal claim (``keep_for_claims``) keeps its records past their
  deadline until ``RestrictionLifted``, which carries the notice the person was given (art.
  18(3)); any other restriction only stops processing, never retention;
- a request whose identity is not verified within the policy's wait is denied
  (``RequestDenied``, ``identity_not_verified``) rather than left to miss its deadline, and a
  rectification's new values go with it;
- a new policy (``adopt``) applies a shorter retention to data already held but never a
  longer one, and marks for renewal each consent given to a purpose whose meaning changed; the
  renewal is dated at the adoption, so no older consent arriving late can stand for the new
  meaning.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

from processors.envelope import keys_of
from processors.policy import DAY_MS, Policy, Purpose, add_months, civil_date, month_table
from processors.state import (
    ConsentEntry,
    ConsentSnapshot,
    Erasure,
    Event,
    OptOut,
    RecordValue,
    Request,
    State,
    Stop,
    StoppedEntry,
)
from schemas import DECISION_EVENTS, PIPELINE_EVENTS

SOURCE = "lifecycle"
TIMER = "timer"

DECISION_TYPES = frozenset(DECISION_EVENTS)
"""The decision events (``schemas.DECISION_EVENTS``): the fold's own, read back as taken."""
CHAINED_TYPES = DECISION_TYPES | frozenset(PIPELINE_EVENTS)
"""What the hash chain of a log partition links: the decisions and the pipeline's own entries
(``PolicyAdopted``), everything the pipeline writes there itself."""
TIMER_DECISIONS = ("RetentionExpired", "DeadlineMissed", "RequestDenied")
"""The decisions a Tick can take (and so the ones whose ``caused_by`` may say ``timer@...``)."""

#: upstream request event type -> the request type recorded in state and in RequestFulfilled
REQUEST_TYPES = {
    "AccessRequested": "access",
    "PortabilityRequested": "portability",
    "ErasureRequested": "erasure",
    "RectificationRequested": "rectification",
    "RestrictionRequested": "restriction",
    "ObjectionRaised": "objection",
}

# request status: pending -> fulfilled | rejected | executed (erasure) -> completed (erasure)
_OPEN = "pending"


# --------------------------------------------------------------------------------------
# outputs
# --------------------------------------------------------------------------------------


class RecordChange(NamedTuple):
    """Upsert (value) or tombstone (None) for ``lifecycle.records`` key ``subject_id/record_id``.

    ``consumers`` are the recipients: for an upsert the consumers that serve the record's
    purpose, for a tombstone those that were sent the record (purpose limitation, art. 5(1)(b):
    each consumer's feed carries only what it is there for)."""

    subject_id: str
    record_id: str
    value: RecordValue | None
    consumers: tuple[str, ...]


class ConsentChange(NamedTuple):
    """Upsert (value) or tombstone (None) for ``lifecycle.consent`` key ``subject_id``.

    ``consumers``: every consumer that serves a purpose the snapshot names, or was sent an
    earlier snapshot of the subject (each gets the snapshot cut to its own purposes)."""

    subject_id: str
    value: ConsentSnapshot | None
    consumers: tuple[str, ...]


class Decision(NamedTuple):
    """A decision event, to be appended to ``lifecycle.events`` (and read back as a no-op)."""

    event: Event


Output = RecordChange | ConsentChange | Decision

# Named tuples rather than frozen dataclasses: immutable all the same, and built in a third
# of the time (a dataclass's __init__ sets each field through object.__setattr__), which
# matters on the fold's hot path. The fold builds them with tuple.__new__ directly, which
# skips the generated __new__'s argument parsing as well.
_new = tuple.__new__


def _sent_record(state: State, rec: RecordValue, policy: Policy) -> RecordChange:
    """An upsert of ``rec`` to the consumers of its purpose, who are remembered as having it
    (the ones its tombstone must reach and whose acknowledgement an erasure awaits)."""
    rid = rec["record_id"]
    consumers = policy.consumers_of.get(rec["purpose"], ())
    sent = state["sent"]
    had = sent.get(rid)
    if had is None:
        sent[rid] = list(consumers)
    elif any(c not in had for c in consumers):  # a policy change added a recipient
        sent[rid] = sorted({*had, *consumers})
    return _new(RecordChange, (state["subject_id"], rid, rec, consumers))


def _sent_consent(state: State, snap: ConsentSnapshot, policy: Policy) -> ConsentChange:
    """A snapshot to every consumer of a purpose it names, and to every earlier recipient."""
    sent = state["sent"]
    had = sent.get("")
    consumers_of = policy.consumers_of
    wanted: set[str] | None = None
    for names in (snap["purposes"], snap["stopped"]):
        for purpose in names:
            for c in consumers_of.get(purpose, ()):
                if had is None or c not in had:
                    if wanted is None:
                        wanted = set(had or ())
                    wanted.add(c)
    if wanted is not None:
        had = sent[""] = sorted(wanted)
    return _new(ConsentChange, (state["subject_id"], snap, tuple(had or ())))


# --------------------------------------------------------------------------------------
# state
# --------------------------------------------------------------------------------------


def new_state(subject_id: str) -> State:
    """The state of a subject nothing is known about yet."""
    return {
        "subject_id": subject_id,
        # "erased": erased, and nothing personal collected since (a new collection or
        # consent starts a new life). The erasures stay listed for good, so that nobody
        # silently re-creates a data key for the old data.
        "status": "active",
        "erasures": [],  # [{request_id, at, caused_by, late}]: late, see _arrived_late
        # event_id -> the digest the guard stamped on it ("" for decisions and unstamped
        # events): upstream and decision ids alike, the idempotency set
        "seen": {},
        "records": {},  # record_id -> record value, exactly as lifecycle.records carries it
        "retained": {},  # record_id -> why an erasure kept it: legal_obligation | legal_hold:<id>
        "consent": None,  # the consent snapshot, exactly as lifecycle.consent carries it
        "consent_history": {},  # purpose -> [entries as in the snapshot], oldest first
        "relationships": {},  # relationship_id -> {kind, started_at, ended_at}
        "holds": {},  # hold_id -> {at, reason, event_id, records, categories}: see _hold_of
        # request_id -> {purpose, reason, at, keep}: the purposes a restriction or an objection
        # stopped; the snapshot's ``stopped`` shows them with the opt-outs (_stopped)
        "stops": {},
        # channel or "*" -> {at, reason, request_id}: the latest opt-out of direct marketing
        # (unsubscribe, objection, erasure). No personal value, and kept through an erasure, so
        # the next import cannot re-subscribe the person (_opt_out)
        "optouts": {},
        "requests": {},  # request_id -> request state (see _on_request)
        "verifications": {},  # request_id -> {at, method, event_id}
        "keys": {},  # data key id -> 1: keys of this subject's events not destroyed yet
        # record_id -> the consumers sent it ("": the consent snapshot): the recipients a
        # tombstone goes to and whose acknowledgement an erasure awaits
        "sent": {},
    }


def _decision(state: State, typ: str, event_id: str, at: int, cause: str, extra: dict[str, Any]) -> Decision:
    ev: Event = {
        "type": typ,
        "event_id": event_id,
        "subject_id": state["subject_id"],
        "occurred_at": at,
        "source": SOURCE,
        "caused_by": cause,
    }
    ev.update(extra)
    state["seen"][event_id] = ""  # reading it back from the log is then a no-op
    return _new(Decision, (ev,))


def _reject(state: State, cause: str, disc: str, at: int, reason: str, request_id: str = "", record_id: str = "") -> Decision:
    return _decision(
        state,
        "RequestRejected",
        f"{cause}/RequestRejected/{disc}",
        at,
        cause,
        {
            "request_id": request_id,
            "record_id": record_id,
            "reason": reason,
            "keys_destroyed": _shred(state) if state["keys"] else [],
        },
    )


def _tombstone(state: State, record_id: str) -> RecordChange:
    del state["records"][record_id]
    state["retained"].pop(record_id, None)
    return _new(RecordChange, (state["subject_id"], record_id, None, tuple(state["sent"].pop(record_id, ()))))


def _shred(state: State) -> list[str]:
    """Destroy every data key of the subject that no live data needs any more.

    Live data is the records held (retained ones included) and the fields of rectifications
    not yet applied. Called by each decision that removes data, so a key goes exactly when
    the last thing it could decrypt is gone, and the decision says which keys went.
    """
    keys = state.get("keys")
    if not keys:
        return []
    live: set[str] = set()
    for rec in state["records"].values():
        live |= keys_of(rec["fields"])
    for req in state["requests"].values():
        if "fields" in req:
            live |= keys_of(req["fields"])
    gone = sorted(k for k in keys if k not in live)
    for k in gone:
        del keys[k]
    return gone


def _replace(state: State, rec: RecordValue, at: int, cause: str, **changes: Any) -> RecordChange:
    new = rec.copy()
    new.update(changes)  # type: ignore[typeddict-item]  # the keyword names are RecordValue's
    new["updated_at"] = at
    new["caused_by"] = cause
    rid = rec["record_id"]
    state["records"][rid] = new
    return _new(RecordChange, (state["subject_id"], rid, new, tuple(state["sent"].get(rid, ()))))


def _set_snapshot(
    state: State, purposes: dict[str, ConsentEntry], stopped: dict[str, StoppedEntry], at: int, cause: str, policy: Policy
) -> ConsentChange:
    snap: ConsentSnapshot = {
        "subject_id": state["subject_id"],
        "purposes": purposes,
        "stopped": stopped,
        "updated_at": at,
        "caused_by": cause,
    }
    state["consent"] = snap
    return _sent_consent(state, snap, policy)


# --------------------------------------------------------------------------------------
# retention
# --------------------------------------------------------------------------------------


def _relationship_end(state: State, purpose: str, policy: Policy) -> tuple[bool, int | None]:
    """(whether a relationship serving ``purpose`` is open, the last end of one that closed).

    Only the relationships whose kind serves the purpose count (``[relationships]``): an open
    vendor relationship keeps none of the vendor's marketing or analytics data. A kind with
    ``max_months`` ends that long after it started, whatever came later or never came: an
    application nobody closed does not keep a CV for ever, and the shorter keep wins.
    """
    open_ = False
    last: int | None = None
    for rel in state["relationships"].values():
        kind = policy.relationships.get(rel["kind"])
        if kind is None or purpose not in kind.purposes:
            continue
        end = rel["ended_at"]
        if kind.max_months is not None and rel["started_at"] is not None:
            cap = add_months(rel["started_at"], kind.max_months)
            if end is None or cap < end:
                end = cap
        if end is None:
            open_ = True
        elif last is None or end > last:
            last = end
    return open_, last


def _deadline(state: State, rec: RecordValue, policy: Policy) -> int | None:
    """When a record expires, given the relationships so far (None while one serving its
    purpose is open)."""
    open_, end = _relationship_end(state, rec["purpose"], policy)
    if open_:
        return None
    collected = rec["collected_at"]
    ended_after = end is not None and end >= collected
    if policy.is_obligation(rec["purpose"]):
        return policy.post_contract_deadline(end if end is not None and ended_after else collected)
    d = policy.no_relationship_deadline(collected)
    if end is not None and ended_after:
        g = policy.grace_deadline(end)
        if g > d:
            return g
    return d


def _expiry_reason(state: State, rec: RecordValue, policy: Policy) -> str:
    if rec["record_id"] in state["retained"]:
        return "obligation_ended"
    _, end = _relationship_end(state, rec["purpose"], policy)
    ended_after = end is not None and end >= rec["collected_at"]
    if policy.is_obligation(rec["purpose"]):
        return "post_contract" if ended_after else "obligation_ended"
    if end is not None and ended_after and policy.grace_deadline(end) > policy.no_relationship_deadline(rec["collected_at"]):
        return "post_contract"
    return "no_relationship"


def _refresh_deadlines(state: State, at: int, cause: str, policy: Policy) -> list[Output]:
    out: list[Output] = []
    records = state["records"]
    for rid in sorted(records):
        rec = records[rid]
        old = rec["retention_deadline"]
        if old is not None and old <= at:
            continue  # already overdue: the timer has simply not run yet
        new = _deadline(state, rec, policy)
        if new != old:
            out.append(_replace(state, rec, at, cause, retention_deadline=new))
    return out


def _expire(state: State, rec: RecordValue, at: int, cause: str, reason: str, out: list[Output]) -> None:
    rid = rec["record_id"]
    deadline = rec["retention_deadline"]
    if cause.startswith(TIMER):
        eid = f"{state['subject_id']}/{TIMER}/RetentionExpired/{rid}/{deadline}"
    else:
        eid = f"{cause}/RetentionExpired/{rid}"
    out.append(_tombstone(state, rid))
    out.append(
        _decision(
            state,
            "RetentionExpired",
            eid,
            at,
            cause,
            {
                "record_id": rid,
                "deadline": deadline if deadline is not None else at,
                "reason": reason,
                "keys_destroyed": _shred(state),
            },
        )
    )


def _kept_for_claims(state: State, rec: RecordValue) -> bool:
    """Whether a restriction the subject asked for a legal claim keeps ``rec`` past its deadline
    (art. 18(1)(c)): it lasts until the restriction is lifted (RestrictionLifted)."""
    purpose = rec["purpose"]
    return any(stop.get("keep") and stop["purpose"] == purpose for stop in state["stops"].values())


def _drop_pending(state: State, req: Request) -> list[str]:
    """A request closed unanswered keeps nothing: a rectification's new values go, and the keys
    only they needed."""
    if req.pop("fields", None) is None:
        return []
    return _shred(state)


def _hold_of(state: State, rec: RecordValue) -> str | None:
    """The legal hold that covers a record (the least id, when several do), or None.

    A hold names the records or the categories it covers; one that names neither covers all
    of the subject's records, as a hold on a whole person does. Only what a hold covers is
    kept past its deadline or an erasure: a dispute over an invoice keeps no newsletter data.
    """
    best: str | None = None
    for hid, hold in state["holds"].items():
        records, categories = hold.get("records") or (), hold.get("categories") or ()
        if (not records and not categories) or rec["record_id"] in records or rec["category"] in categories:
            if best is None or hid < best:
                best = hid
    return best


def _obligation_runs(rec: RecordValue, at: int, policy: Policy) -> bool:
    if not policy.is_obligation(rec["purpose"]):
        return False
    d = rec["retention_deadline"]
    return d is None or d > at


# --------------------------------------------------------------------------------------
# upstream handlers: (state, event, policy) -> outputs
# --------------------------------------------------------------------------------------


def _on_collected(state: State, ev: Event, policy: Policy) -> list[Output]:
    # the hot path: most events are collections, so the common case is written out inline
    purpose = ev["purpose"]
    category = ev["category"]
    basis = ev["legal_basis"]
    p = policy.purposes.get(purpose)
    reason = None
    snap = state["consent"]
    if p is None:
        reason = "unknown_purpose"
    elif p.forbidden is not None:
        reason = "forbidden_purpose"
    elif category not in policy.categories:
        reason = "unknown_category"
    elif category not in p.categories:
        reason = "category_not_allowed"
    elif basis not in p.legal_bases:
        reason = "legal_basis_mismatch"
    elif p.direct_marketing and state["optouts"] and _opt_out(state, p, snap["purposes"] if snap else None) is not None:
        reason = "opted_out"
    elif snap is not None and purpose in snap["stopped"]:
        reason = "purpose_stopped"
    elif basis == "consent":
        entry = snap["purposes"].get(purpose) if snap is not None else None
        if entry is None or entry["status"] not in _CONSENTED:
            reason = "no_consent"
        elif entry["status"] == RENEWAL or entry.get("meaning", p.meaning) not in ("", p.meaning):
            reason = "consent_needs_renewal"
    rid = ev["record_id"]
    at = ev["occurred_at"]
    fields = ev["fields"]
    for value in fields.values():  # sealed by the guard (every value, or none): track its key
        if value[:5] == "enc1:":
            state["keys"].update(dict.fromkeys(keys_of(fields), 1))
        break
    if reason is not None:
        return [_reject(state, ev["event_id"], rid, at, reason, record_id=rid)]
    if ev.get("unchanged") and republished(state, ev) is not None:
        return []  # re-published as held: no new collection, so no new clock

    sid = state["subject_id"]
    rec: RecordValue = {
        "subject_id": sid,
        "record_id": rid,
        "category": category,
        "purpose": purpose,
        "legal_basis": basis,
        "fields": fields,  # kept, not copied: events are immutable once applied
        "collected_at": at,
        "retention_deadline": None,
        "restricted": False,
        "updated_at": at,
        "caused_by": ev["event_id"],
        "source": ev["source"],
        "origin": ev.get("origin", ""),
        "policy": policy.version,
    }
    if state["relationships"]:
        rec["retention_deadline"] = _deadline(state, rec, policy)
    else:
        if p.obligation:  # type: ignore[union-attr]  # a refusal above returned when p is None
            rec["retention_deadline"] = add_months(at, 12 * policy.post_contract_years)
        else:
            table = month_table(policy.no_relationship_months)
            day = at // DAY_MS
            later = table.get(day)
            if later is None:
                rec["retention_deadline"] = add_months(at, policy.no_relationship_months)
            else:
                rec["retention_deadline"] = at + (later - day) * DAY_MS
    if state["erasures"]:
        covering = _covering_erasure(state, at)
        if covering is not None:
            return _arrived_late(state, ev, rec, covering, policy)
    state["records"][rid] = rec
    if state["retained"]:
        state["retained"].pop(rid, None)  # a fresh collection is new data, not the retained copy
    state["status"] = "active"
    return [_sent_record(state, rec, policy)]


def adoption(policy: Policy, partition: int, after: int, at: int, rules: str) -> Event:
    """The ``PolicyAdopted`` entry the worker writes to a log partition before folding anything
    under a policy the partition has not had: the log alone then tells which rules each later
    decision followed (``rules``: the version of the code that applies them)."""
    return {
        "type": "PolicyAdopted",
        "event_id": f"policy/{policy.version}/{partition}/{after}",
        "subject_id": "",
        "occurred_at": at,
        "source": SOURCE,
        "caused_by": "",
        "version": policy.version,
        "name": f"{policy.name} {policy.edition}".strip(),
        "text": policy.text,
        "rules": rules,
    }


RENEWAL = "renewal_needed"
"""A consent given to a purpose whose meaning has changed since (policy 7): no collection for
it until a new ``ConsentGiven``."""
_CONSENTED = ("granted", RENEWAL)


def adopt(state: State, policy: Policy, at: int, cause: str) -> list[Output]:
    """A new policy takes effect for this subject. A record whose retention the new policy makes
    shorter is kept the shorter time; a longer one does not extend what was promised when the
    data was collected. Each consent given to a purpose whose meaning the policy has changed
    (or dropped) now needs renewing. The snapshot says so downstream, so
    the mailer stops at once; the renewal entry is dated now, so that no consent older than the
    change, arriving late, can stand for the new meaning. A consent recorded before meanings
    were tracked (no ``meaning``) is taken as given to the first policy that names one.

    ``cause``: the event id of the ``PolicyAdopted`` on the log, which the auditor folds at the
    same place."""
    out: list[Output] = []
    records = state["records"]
    for rid in sorted(records):
        rec = records[rid]
        old = rec["retention_deadline"]
        if rid in state["retained"] or (old is not None and old <= at):
            continue  # kept under an erasure's rule, or overdue already: the timer decides
        new = _deadline(state, rec, policy)
        if new is not None and (old is None or new < old):
            out.append(_replace(state, rec, at, cause, retention_deadline=new))
    snap = state["consent"]
    if snap is None:
        return out
    purposes = snap["purposes"]
    changed: dict[str, ConsentEntry] = {}
    for name, entry in purposes.items():
        if entry["status"] != "granted":
            continue
        p = policy.purposes.get(name)
        meaning = entry.get("meaning", "")
        if p is None or (meaning and meaning != p.meaning):
            renewal: ConsentEntry = {**entry, "status": RENEWAL, "at": at, "event_id": cause, "source": SOURCE}
            changed[name] = renewal
    if not changed:
        return out
    for name, entry in changed.items():
        _remember(state, name, entry)
    return out + _publish(state, {**purposes, **changed}, at, cause, policy)


def republished(state: State, ev: Event) -> RecordValue | None:
    """The held record a collection names, when it is held for the same purpose, category and
    basis (and not merely kept after an erasure): the record the collection re-publishes, if
    its fields are the same too, which only the worker can tell (it holds the keys) and stamps
    as ``unchanged``."""
    held = state["records"].get(ev["record_id"])
    if (
        held is None
        or held["purpose"] != ev["purpose"]
        or held["category"] != ev["category"]
        or held["legal_basis"] != ev["legal_basis"]
        or ev["record_id"] in state["retained"]
    ):
        return None
    return held


def _covering_erasure(state: State, collected_at: int) -> Erasure | None:
    """The executed erasure that covers data collected at ``collected_at``, if any: the latest
    one, when the data was collected before it (by the erasure's time, which is when the
    subject's identity was verified for it, so a backfilled history decides as it did then)."""
    latest = max(state["erasures"], key=lambda e: e["at"])
    return latest if collected_at < latest["at"] else None


def _arrived_late(state: State, ev: Event, rec: RecordValue, erasure: Erasure, policy: Policy) -> list[Output]:
    """Data collected before an erasure ran, delivered after it: the erasure covers it.

    Why: the subject asked that everything held about them be erased, and this data was held
    upstream when the erasure ran; that it reached the pipeline late (a queue, a nightly sync)
    cannot bring it back. It is treated exactly as the erasure treated what it found: kept,
    restricted, only while a legal obligation or hold requires it, otherwise refused and its
    data key destroyed. A record collected since (a new life) of the same id is not replaced.
    """
    rid = rec["record_id"]
    late = erasure.setdefault("late", [])
    if rid not in late:
        late.append(rid)
    why = None
    if rid not in state["records"]:
        if _obligation_runs(rec, erasure["at"], policy):
            why = "legal_obligation"
        else:
            hold = _hold_of(state, rec)
            if hold is not None:
                why = f"legal_hold:{hold}"
    if why is None:
        return [
            _reject(
                state, ev["event_id"], rid, ev["occurred_at"], "covered_by_erasure",
                request_id=erasure["request_id"], record_id=rid,
            )
        ]  # fmt: skip
    rec["restricted"] = True
    state["records"][rid] = rec
    state["retained"][rid] = why
    return [_sent_record(state, rec, policy)]


def _newer(entry: ConsentEntry, current: ConsentEntry | None) -> bool:
    """Whether ``entry`` supersedes ``current``: the later ``occurred_at`` wins, whatever the
    order events arrive in (a CRM sync replaying last month's consent must not undo today's
    withdrawal); at the same instant the withdrawal wins, being the protective reading."""
    if current is None or entry["at"] > current["at"]:
        return True
    return entry["at"] == current["at"] and entry["status"] != "granted" and current["status"] == "granted"


def _entry(status: str, p: Purpose, at: int, event_id: str, source: str) -> ConsentEntry:
    return {
        "status": status,
        "legal_basis": p.consent_basis,
        "at": at,
        "event_id": event_id,
        "source": source,
        "meaning": p.meaning,
    }


def _remember(state: State, purpose: str, entry: ConsentEntry) -> None:
    """Every word the subject said on a purpose goes into the history, in arrival order, even one
    a later word already superseded: the history is what they said, the snapshot what holds."""
    trail = state["consent_history"].get(purpose)
    if trail is None:
        state["consent_history"][purpose] = [entry]
    else:
        trail.append(entry)  # the same (never mutated) dict as the snapshot's entry


def _opt_out(state: State, p: Purpose, purposes: Mapping[str, ConsentEntry] | None) -> OptOut | None:
    """The opt-out that stops a direct-marketing purpose, given the consent entries
    ``purposes``, or None.

    The latest opt-out of the purpose's channel or of all direct marketing (``*``: an objection,
    an erasure) stops it, unless the subject consented to this very purpose after it: their
    newest word wins, and only a word about this purpose lifts an opt-out from all of them.
    """
    optouts = state["optouts"]
    o = optouts.get(p.channel or "")
    every = optouts.get("*")
    if every is not None and (o is None or every["at"] > o["at"]):
        o = every
    if o is None:
        return None
    entry = purposes.get(p.name) if purposes else None
    if entry is not None and entry["status"] == "granted" and entry["at"] > o["at"]:
        return None
    return o


def _stop_of(state: State, p: Purpose, purposes: Mapping[str, ConsentEntry] | None) -> StoppedEntry | None:
    """Why ``p`` must not be processed, as the snapshot says it, or None: the latest restriction
    or objection of it, else the opt-out that stops it (``_opt_out``), read with the consent
    entries ``purposes`` about to be published."""
    found: tuple[int, str] | None = None
    for rid, stop in state["stops"].items():
        if stop["purpose"] == p.name and (found is None or (stop["at"], rid) > found):
            found = (stop["at"], rid)
    if found is not None:
        stop = state["stops"][found[1]]
        return {"reason": stop["reason"], "at": stop["at"], "request_id": found[1]}
    if p.direct_marketing and state["optouts"]:
        o = _opt_out(state, p, purposes)
        if o is not None:
            return {"reason": o["reason"], "at": o["at"], "request_id": o["request_id"]}
    return None


def _stopped(state: State, purposes: Mapping[str, ConsentEntry], policy: Policy) -> dict[str, StoppedEntry]:
    """What the snapshot says must not be processed (``_stop_of`` of every purpose)."""
    stops = state["stops"]
    optouts = state["optouts"]
    if not stops and not optouts:
        return {}
    names = {stop["purpose"] for stop in stops.values()}
    if optouts:
        names.update(policy.direct_marketing)
    stopped: dict[str, StoppedEntry] = {}
    for name in sorted(names):
        p = policy.purposes.get(name)
        stop = _stop_of(state, p, purposes) if p is not None else None
        if stop is not None:
            stopped[name] = stop
    return stopped


def _publish(state: State, purposes: dict[str, ConsentEntry], at: int, cause: str, policy: Policy) -> list[Output]:
    """A new consent snapshot, and the ``restricted`` flags of the records whose purpose it
    stops or releases. Nothing when neither the entries nor the stops changed (a stale word)."""
    snap = state["consent"]
    before = snap["stopped"] if snap is not None else {}
    stopped = _stopped(state, purposes, policy) if state["stops"] or state["optouts"] else {}
    if snap is not None and purposes == snap["purposes"] and stopped == before:
        return []
    state["status"] = "active"
    out: list[Output] = [_set_snapshot(state, purposes, stopped, at, cause, policy)]
    for purpose in sorted(before.keys() ^ stopped.keys()):
        out.extend(_restrict_purpose(state, purpose, at, cause))
    return out


def _restrict_purpose(state: State, purpose: str, at: int, cause: str) -> list[Output]:
    """Bring the ``restricted`` flag of the purpose's records in line with the stops."""
    out: list[Output] = []
    snap = state["consent"]
    stopped = snap is not None and purpose in snap["stopped"]
    retained = state["retained"]
    records = state["records"]
    for rid in sorted(records):
        rec = records[rid]
        if rec["purpose"] != purpose:
            continue
        flag = stopped or rid in retained
        if rec["restricted"] != flag:
            out.append(_replace(state, rec, at, cause, restricted=flag))
    return out


def _on_consent(state: State, ev: Event, policy: Policy) -> list[Output]:
    """A consent given or withdrawn: the later ``occurred_at`` wins (``_newer``).

    A consent stated before an erasure ran and delivered after it is covered by the erasure
    like any data (``covered_by_erasure``): a CRM import must not re-subscribe the person. A
    consent newer than an objection to its purpose lifts that objection, being the subject's
    newest word; it never lifts a restriction, which only ``RestrictionLifted`` ends.
    """
    purpose = ev["purpose"]
    p = policy.purposes.get(purpose)
    at = ev["occurred_at"]
    eid = ev["event_id"]
    if p is None or p.forbidden is not None:
        reason = "unknown_purpose" if p is None else "forbidden_purpose"
        return [_reject(state, eid, purpose, at, reason)]
    granted = ev["type"] == "ConsentGiven"
    if granted and state["erasures"]:
        covering = _covering_erasure(state, at)
        if covering is not None:
            return [_reject(state, eid, purpose, at, "covered_by_erasure", request_id=covering["request_id"])]
    entry = _entry("granted" if granted else "withdrawn", p, at, eid, ev["source"])
    _remember(state, purpose, entry)
    snap = state["consent"]
    if not _newer(entry, snap["purposes"].get(purpose) if snap is not None else None):
        return []  # an older word, superseded already: in the history, nothing else changes
    stops = state["stops"]
    if granted and stops and "consent" in p.legal_bases:
        for rid in [r for r, stop in stops.items() if stop["purpose"] == purpose and stop["reason"] == "objection"]:
            if stops[rid]["at"] < at:
                del stops[rid]
    if snap is None:
        return _publish(state, {purpose: entry}, at, eid, policy)
    # the hot path: a subject who said something before. A word on one purpose can change what
    # stops that purpose only, so only its entry of ``stopped`` is looked at again
    purposes = dict(snap["purposes"])
    purposes[purpose] = entry
    before = snap["stopped"]
    stopped = before
    if stops or state["optouts"] or before:
        stop = _stop_of(state, p, purposes)
        if stop != before.get(purpose):
            stopped = dict(before)
            if stop is None:
                del stopped[purpose]
            else:
                stopped[purpose] = stop
    sid = state["subject_id"]
    state["status"] = "active"
    snap = state["consent"] = {"subject_id": sid, "purposes": purposes, "stopped": stopped, "updated_at": at, "caused_by": eid}
    out: list[Output] = [_sent_consent(state, snap, policy)]
    if (purpose in before) != (purpose in stopped):
        out.extend(_restrict_purpose(state, purpose, at, eid))
    return out


def _opt_out_everywhere(
    state: State,
    at: int,
    cause: str,
    source: str,
    channel: str | None,
    reason: str,
    request_id: str,
    policy: Policy,
) -> list[Output]:
    """Record an opt-out of direct marketing on ``channel`` (None: on every channel, as an
    objection is) and publish what it stops.

    Recorded whether or not the subject ever consented, so an older consent arriving later
    cannot grant what the opt-out refused; the consent purposes it covers get a withdrawn entry
    unless the subject consented after it. The opt-out itself is a channel and a time, never a
    personal value, and survives an erasure (``_erase``); one older than an erasure changes only
    that suppression, since the erasure already took everything it could stop.
    """
    key = "*" if channel is None else channel
    o = state["optouts"].get(key)
    if o is None or at > o["at"]:
        state["optouts"][key] = {"at": at, "reason": reason, "request_id": request_id}
    if state["erasures"] and _covering_erasure(state, at) is not None:
        return []
    snap = state["consent"]
    purposes = dict(snap["purposes"]) if snap is not None else {}
    names = policy.direct_marketing if channel is None else policy.channels.get(channel, ())
    for name in names:
        p = policy.purposes[name]
        if "consent" not in p.legal_bases:
            continue
        entry = _entry("withdrawn", p, at, cause, source)
        if _newer(entry, purposes.get(name)):
            _remember(state, name, entry)
            purposes[name] = entry
    return _publish(state, purposes, at, cause, policy)


def _on_unsubscribed(state: State, ev: Event, policy: Policy) -> list[Output]:
    """An unsubscribe stops every direct-marketing purpose of its channel, whatever its legal
    basis: a legitimate-interest sales email is marketing email all the same."""
    channel = ev["channel"]
    if not policy.channels.get(channel):
        return [_reject(state, ev["event_id"], channel, ev["occurred_at"], "unknown_channel")]
    return _opt_out_everywhere(state, ev["occurred_at"], ev["event_id"], ev["source"], channel, "unsubscribe", "", policy)


def _on_relationship_started(state: State, ev: Event, policy: Policy) -> list[Output]:
    rels = state["relationships"]
    rel = rels.get(ev["relationship_id"])
    if rel is not None and rel["ended_at"] is None:
        return []
    rels[ev["relationship_id"]] = {"kind": ev["kind"], "started_at": ev["occurred_at"], "ended_at": None}
    return _refresh_deadlines(state, ev["occurred_at"], ev["event_id"], policy)


def _on_relationship_ended(state: State, ev: Event, policy: Policy) -> list[Output]:
    at = ev["occurred_at"]
    rels = state["relationships"]
    rel = rels.get(ev["relationship_id"])
    if rel is not None and rel["ended_at"] is not None:
        return []
    if rel is None:  # its start predates the log; its end still starts the clocks
        rels[ev["relationship_id"]] = {"kind": ev["kind"], "started_at": None, "ended_at": at}
    else:
        rel["ended_at"] = at
    return _refresh_deadlines(state, at, ev["event_id"], policy)


def _on_hold_placed(state: State, ev: Event, policy: Policy) -> list[Output]:
    holds = state["holds"]
    if ev["hold_id"] not in holds:
        holds[ev["hold_id"]] = {
            "at": ev["occurred_at"],
            "reason": ev["reason"],
            "event_id": ev["event_id"],
            "records": list(ev.get("records") or ()),
            "categories": list(ev.get("categories") or ()),
        }
    return []


def _on_hold_released(state: State, ev: Event, policy: Policy) -> list[Output]:
    hid = ev["hold_id"]
    at = ev["occurred_at"]
    eid = ev["event_id"]
    holds = state["holds"]
    if hid not in holds:
        return [_reject(state, eid, hid, at, "unknown_hold")]
    del holds[hid]
    retained = state["retained"]
    records = state["records"]
    out: list[Output] = []
    for rid in sorted(records):
        rec = records[rid]
        other = _hold_of(state, rec)
        if other is not None:
            if retained.get(rid) == f"legal_hold:{hid}":
                retained[rid] = f"legal_hold:{other}"
            continue
        if rid in retained:
            if retained[rid] != f"legal_hold:{hid}":
                continue  # kept for an obligation, not for this hold
            if _obligation_runs(rec, at, policy):
                retained[rid] = "legal_obligation"
            else:
                _expire(state, rec, at, eid, "hold_released", out)
        else:
            d = rec["retention_deadline"]
            if d is not None and d <= at:
                _expire(state, rec, at, eid, "hold_released", out)
    return out


def _on_verified(state: State, ev: Event, policy: Policy) -> list[Output]:
    rid = ev["request_id"]
    verifications = state["verifications"]
    if rid in verifications:
        return []
    verifications[rid] = {"at": ev["occurred_at"], "method": ev["method"], "event_id": ev["event_id"]}
    req = state["requests"].get(rid)
    if req is None or req["status"] != _OPEN:
        return []
    return _fulfil(state, rid, ev["occurred_at"], ev["event_id"], policy)


def _new_request(rtype: str, at: int, eid: str, policy: Policy) -> Request:
    return {
        "type": rtype,
        "received_at": at,
        "deadline": policy.request_deadline(at),
        "event_id": eid,
        "status": _OPEN,
        "extended": None,  # {at, notice, event_id} once extended
        "missed": False,  # DeadlineMissed (consumer "") decided
        "answered_at": None,
        "outcome": None,  # rejection reason
    }


def _on_request(state: State, ev: Event, policy: Policy) -> list[Output]:
    rid = ev["request_id"]
    at = ev["occurred_at"]
    eid = ev["event_id"]
    requests = state["requests"]
    rtype = REQUEST_TYPES[ev["type"]]
    if rtype == "rectification":  # tracked first, so a refusal below destroys them
        state["keys"].update(dict.fromkeys(keys_of(ev["fields"]), 1))
    if rid in requests:
        return [_reject(state, eid, rid, at, "duplicate_request", request_id=rid)]
    req = _new_request(rtype, at, eid, policy)
    if rtype == "rectification":
        req["record_id"] = ev["record_id"]
        req["fields"] = dict(ev["fields"])  # dropped once applied, or if the record is erased
    elif rtype in ("restriction", "objection"):
        req["purpose"] = ev["purpose"]
        if ev.get("keep_for_claims"):
            req["keep"] = True
    requests[rid] = req
    if rtype in ("restriction", "objection"):
        p = policy.purposes.get(ev["purpose"])
        reason = "unknown_purpose" if p is None else None
        if p is not None and rtype == "objection" and not p.objectionable:
            reason = "objection_not_applicable"
        if reason is not None:
            _close(req, "rejected", at, reason)
            return [_reject(state, eid, rid, at, reason, request_id=rid)]
    if rid in state["verifications"] or not _needs_verification(req, policy):
        return _fulfil(state, rid, at, eid, policy)
    verify_by = policy.verification_deadline(at)
    if verify_by is not None:
        req["verify_by"] = verify_by
    return []


def _needs_verification(req: Request, policy: Policy) -> bool:
    """Whether a request waits for the subject's identity to be verified. A restriction of, or an
    objection to, direct marketing does not, nor an objection to a consent purpose: it only ever
    stops processing, so anyone who can write it may, and the processing stops at once instead
    of in a month."""
    if req["type"] not in ("restriction", "objection"):
        return True
    p = policy.purposes.get(req.get("purpose", ""))
    if p is None:
        return True
    return not (p.direct_marketing or (req["type"] == "objection" and not p.objection_weighed))


def _on_extended(state: State, ev: Event, policy: Policy) -> list[Output]:
    rid = ev["request_id"]
    at = ev["occurred_at"]
    eid = ev["event_id"]
    req = state["requests"].get(rid)
    reason = None
    if req is None:
        reason = "unknown_request"
    elif req["extended"] is not None:
        reason = "already_extended"
    elif req["status"] in ("fulfilled", "rejected", "completed"):
        reason = "request_closed"
    elif at >= req["deadline"]:
        reason = "deadline_passed"  # the notice must reach the subject within the first period
    if reason is not None or req is None:
        return [_reject(state, eid, rid, at, reason or "unknown_request", request_id=rid)]
    req["extended"] = {"at": at, "notice": ev["notice"], "event_id": eid}
    req["deadline"] = policy.request_deadline(req["received_at"], extended=True)
    return []


def _on_ack(state: State, ev: Event, policy: Policy) -> list[Output]:
    """A consumer deleted something of the subject: by request (a tombstone carried its id),
    by record (a reconcile found the record gone from its feed), or, naming neither, the
    subject's consent copy (a reconcile found it gone from the consent feed).

    The last completes the consumer's part of an erasure only when it was sent no record of
    the subject, only the consent: it then held nothing else to delete, and an erasure whose
    consent tombstone a consumer missed would otherwise wait for ever. A consumer that was sent
    records as well is done only when each of them is acknowledged."""
    consumer = ev["consumer"]
    req_id = ev.get("request_id") or ""
    record_id = ev.get("record_id") or ""
    requests = state["requests"]
    out: list[Output] = []
    if req_id:
        req = requests.get(req_id)
        if req is None or req["type"] != "erasure" or req["status"] != "executed":
            return out
        if consumer in req["consumers"] and consumer not in req["acks"]:
            req["acks"][consumer] = ev["occurred_at"]
            _maybe_complete(state, req_id, req, ev, out)
        return out
    if not record_id:
        for rid in sorted(requests):
            req = requests[rid]
            if req["type"] != "erasure" or req["status"] != "executed" or "owed" not in req:
                continue
            if consumer in req["consumers"] and consumer not in req["acks"] and not req["owed"].get(consumer):
                req["acks"][consumer] = ev["occurred_at"]
                _maybe_complete(state, rid, req, ev, out)
        return out
    # a consumer that acknowledged every record an erasure tombstoned acknowledged the erasure
    for rid in sorted(requests):
        req = requests[rid]
        if req["type"] != "erasure" or req["status"] != "executed" or record_id not in req["erased"]:
            continue
        if consumer not in req["consumers"] or consumer in req["acks"]:
            continue
        owed = req["owed"].get(consumer, ()) if "owed" in req else req["erased"]
        if record_id not in owed:
            continue  # a record this consumer was never sent: nothing it could have deleted
        done = req["record_acks"].setdefault(consumer, [])
        if record_id not in done:
            done.append(record_id)
        if set(owed) <= set(done):
            req["acks"][consumer] = ev["occurred_at"]
            del req["record_acks"][consumer]
            _maybe_complete(state, rid, req, ev, out)
    return out


def _maybe_complete(state: State, req_id: str, req: Request, ev: Event, out: list[Output]) -> None:
    if all(c in req["acks"] for c in req["consumers"]):
        _complete(state, req_id, req, ev["occurred_at"], ev["event_id"], out)


def _complete(state: State, req_id: str, req: Request, at: int, cause: str, out: list[Output]) -> None:
    req["status"] = "completed"
    out.append(
        _decision(
            state,
            "ErasureCompleted",
            f"{cause}/ErasureCompleted/{req_id}",
            at,
            cause,
            {"request_id": req_id, "consumers": list(req["consumers"])},
        )
    )


# --------------------------------------------------------------------------------------
# answering requests
# --------------------------------------------------------------------------------------


def _close(req: Request, status: str, at: int, outcome: str | None) -> None:
    req["status"] = status
    req["answered_at"] = at
    req["outcome"] = outcome


def _fulfilled(state: State, rid: str, req: Request, at: int, cause: str, emit: bool) -> list[Output]:
    _close(req, "fulfilled", at, None)
    gone = _shred(state)  # a rectification may have replaced the last value a key decrypted
    if not emit:
        return []
    return [
        _decision(
            state,
            "RequestFulfilled",
            f"{cause}/RequestFulfilled/{rid}",
            at,
            cause,
            {"request_id": rid, "request_type": req["type"], "keys_destroyed": gone},
        )
    ]


def _fulfil(state: State, rid: str, at: int, cause: str, policy: Policy, emit: bool = True) -> list[Output]:
    """Answer a verified request (``emit=False``: apply a recorded answer's effect only)."""
    req = state["requests"][rid]
    rtype = req["type"]
    if rtype in ("access", "portability"):
        return _fulfilled(state, rid, req, at, cause, emit)  # the worker serves export(state, policy)
    if rtype == "erasure":
        if state["status"] == "erased":
            _close(req, "rejected", at, "subject_erased")
            return [_reject(state, cause, rid, at, "subject_erased", request_id=rid)] if emit else []
        erased: list[str] = []
        retained: dict[str, str] = {}
        records = state["records"]
        for rec_id in sorted(records):
            rec = records[rec_id]
            hold = _hold_of(state, rec) if state["holds"] else None
            if _obligation_runs(rec, at, policy):
                retained[rec_id] = "legal_obligation"
            elif hold is not None:
                retained[rec_id] = f"legal_hold:{hold}"
            else:
                erased.append(rec_id)
        return _erase(state, rid, at, cause, erased, retained, policy, emit)
    if rtype == "rectification":
        record_id = req["record_id"]
        fields = req.pop("fields", None) or {}
        held = state["records"].get(record_id)
        if held is None:
            _close(req, "rejected", at, "unknown_record")
            if not emit:
                return []
            return [_reject(state, cause, rid, at, "unknown_record", request_id=rid, record_id=record_id)]
        merged = dict(held["fields"])
        merged.update(fields)
        return [_replace(state, held, at, cause, fields=merged), *_fulfilled(state, rid, req, at, cause, emit)]
    # restriction / objection: stop the purpose downstream
    purpose = req["purpose"]
    p = policy.purposes.get(purpose)
    if rtype == "objection" and p is not None and p.direct_marketing:
        # art. 21(3): an objection to direct marketing is absolute and covers all of it
        out = _opt_out_everywhere(state, at, cause, SOURCE, None, "objection", rid, policy)
        return out + _fulfilled(state, rid, req, at, cause, emit)
    stop: Stop = {"purpose": purpose, "reason": rtype, "at": at}
    if req.get("keep"):
        stop["keep"] = True
    state["stops"][rid] = stop
    out = _republish(state, at, cause, policy)
    if rtype == "objection" and p is not None and p.objection_weighed:
        req["deciding"] = True  # stopped now; answered by the controller's ObjectionDecided
        return out
    return out + _fulfilled(state, rid, req, at, cause, emit)


def _republish(state: State, at: int, cause: str, policy: Policy) -> list[Output]:
    """The snapshot again, with the stops as they now are."""
    snap = state["consent"]
    return _publish(state, dict(snap["purposes"]) if snap is not None else {}, at, cause, policy)


def _on_objection_decided(state: State, ev: Event, policy: Policy) -> list[Output]:
    """The controller's answer to an objection it had to weigh (art. 21(1)). Upheld: the stop
    stays and the request is fulfilled. Not upheld: the subject is told why (the notice, on
    the log) and the purpose is processed again; the refusal says so."""
    rid = ev["request_id"]
    at = ev["occurred_at"]
    eid = ev["event_id"]
    req = state["requests"].get(rid)
    if req is None or req["type"] != "objection":
        return [_reject(state, eid, rid, at, "unknown_request", request_id=rid)]
    if not req.get("deciding"):
        reason = "request_closed" if req["status"] != _OPEN else "not_awaiting_decision"
        return [_reject(state, eid, rid, at, reason, request_id=rid)]
    del req["deciding"]
    if ev["upheld"]:
        return _fulfilled(state, rid, req, at, eid, True)
    _close(req, "rejected", at, "compelling_legitimate_grounds")
    state["stops"].pop(rid, None)
    out = _republish(state, at, eid, policy)
    return [*out, _reject(state, eid, rid, at, "compelling_legitimate_grounds", request_id=rid)]


def _on_restriction_lifted(state: State, ev: Event, policy: Policy) -> list[Output]:
    """Art. 18(3): a restriction ends only by an explicit event, the notice the subject was
    given before. Records it kept past their deadline expire at the next tick."""
    rid = ev["request_id"]
    at = ev["occurred_at"]
    eid = ev["event_id"]
    req = state["requests"].get(rid)
    if req is None or req["type"] != "restriction":
        return [_reject(state, eid, rid, at, "unknown_request", request_id=rid)]
    if rid not in state["stops"]:
        return [_reject(state, eid, rid, at, "not_restricted", request_id=rid)]
    del state["stops"][rid]
    req["lifted"] = {"at": at, "notice": ev["notice"], "event_id": eid}
    return _republish(state, at, eid, policy)


def _erase(
    state: State,
    rid: str,
    at: int,
    cause: str,
    erased: list[str],
    retained: dict[str, str],
    policy: Policy,
    emit: bool,
) -> list[Output]:
    out: list[Output] = []
    records = state["records"]
    for rec_id in sorted(erased):
        if rec_id in records:
            out.append(_tombstone(state, rec_id))
    for rec_id in sorted(retained):
        rec = records.get(rec_id)
        if rec is None:
            continue
        state["retained"][rec_id] = retained[rec_id]
        out.append(_replace(state, rec, at, cause, restricted=True))
    if state["consent"] is not None:
        state["consent"] = None
        out.append(_new(ConsentChange, (state["subject_id"], None, tuple(state["sent"].pop("", ())))))
    state["consent_history"] = {}
    state["stops"] = {}
    # the suppression that survives: the erasure stops all direct marketing until the subject
    # consents to a purpose again, after it (a re-import must not re-subscribe them)
    every = state["optouts"].get("*")
    if every is None or at >= every["at"]:
        state["optouts"]["*"] = {"at": at, "reason": "erasure", "request_id": rid}
    erased_set = set(erased)
    for other in state["requests"].values():
        if other.get("record_id") in erased_set:
            other.pop("fields", None)  # a pending rectification must not keep erased data
    state["status"] = "erased"
    state["erasures"].append({"request_id": rid, "at": at, "caused_by": cause})
    req = state["requests"].get(rid)
    if req is None:  # a recorded erasure whose request this state never saw: take it as given
        req = state["requests"][rid] = _new_request("erasure", at, cause, policy)
    _close(req, "executed", at, None)
    req["erased"] = sorted(erased)
    req["retained"] = dict(sorted(retained.items()))
    # who must acknowledge, fixed now: the consumers the deletions went to (those that were sent
    # the subject's data); nobody when nothing went downstream, as there is nothing to delete
    recipients: set[str] = set()
    owed: dict[str, list[str]] = {}  # consumer -> the erased records it was sent
    for o in out:
        if o.value is None:  # type: ignore[union-attr]  # only changes so far, no decision
            recipients.update(o.consumers)  # type: ignore[union-attr]
            if type(o) is RecordChange:
                for c in o.consumers:
                    owed.setdefault(c, []).append(o.record_id)
    req["consumers"] = sorted(recipients)
    req["owed"] = owed
    tombstoned = bool(recipients)
    req["acks"] = {}  # consumer -> at
    req["record_acks"] = {}  # consumer -> [record_id] acknowledged one by one
    req["missed_consumers"] = []
    if not emit:
        _shred(state)  # a recorded erasure: its keys are gone, so this state no longer holds them
    else:
        out.append(
            _decision(
                state,
                "ErasureExecuted",
                f"{cause}/ErasureExecuted/{rid}",
                at,
                cause,
                {
                    "request_id": rid,
                    "erased": sorted(erased),
                    "retained": dict(sorted(retained.items())),
                    "keys_destroyed": _shred(state),
                },
            )
        )
        if not tombstoned:
            _complete(state, rid, req, at, cause, out)
    return out


# --------------------------------------------------------------------------------------
# decisions read back from the log
# --------------------------------------------------------------------------------------


def _on_decision(state: State, ev: Event, policy: Policy) -> list[Output]:
    """A decision this fold did not take itself (yet): take it as already taken."""
    typ = ev["type"]
    at = ev["occurred_at"]
    cause = ev.get("caused_by") or ev["event_id"]
    requests = state["requests"]
    if typ == "RetentionExpired":
        if ev["record_id"] in state["records"]:
            out: list[Output] = [_tombstone(state, ev["record_id"])]
            _shred(state)
            return out
        return []
    if typ == "ErasureExecuted":
        known = requests.get(ev["request_id"])
        if known is not None and known["status"] != _OPEN:
            return []
        erased, retained = list(ev["erased"]), dict(ev["retained"])
        return _erase(state, ev["request_id"], at, cause, erased, retained, policy, False)
    req = requests.get(ev.get("request_id") or "")
    if req is None:
        return []
    if typ == "RequestRejected":
        if req["status"] == _OPEN:
            _close(req, "rejected", at, ev["reason"])
            req.pop("deciding", None)
            if state["stops"].pop(ev["request_id"], None) is not None:  # an objection not upheld
                return _republish(state, at, cause, policy)
        return []
    if typ == "RequestDenied":
        if req["status"] == _OPEN:
            _close(req, "denied", at, ev["reason"])
            _drop_pending(state, req)
        return []
    if typ == "RequestFulfilled":
        if req.pop("deciding", None):  # an objection upheld: the stop is in place already
            _close(req, "fulfilled", at, None)
            return []
        if req["status"] == _OPEN:
            return _fulfil(state, ev["request_id"], at, cause, policy, emit=False)
        return []
    if typ == "DeadlineMissed":
        consumer = ev.get("consumer") or ""
        if not consumer:
            req["missed"] = True
        elif "missed_consumers" in req and consumer not in req["missed_consumers"]:
            req["missed_consumers"].append(consumer)
        return []
    if typ == "ErasureCompleted" and req["status"] == "executed":
        req["status"] = "completed"
    return []


# --------------------------------------------------------------------------------------
# the timer
# --------------------------------------------------------------------------------------


def _tick(state: State, now: int, policy: Policy, cause: str = TIMER) -> list[Output]:
    out: list[Output] = []
    records = state["records"]
    if records:
        due = [rid for rid, rec in records.items() if rec["retention_deadline"] is not None and rec["retention_deadline"] <= now]
        if due and state["holds"]:
            due = [rid for rid in due if _hold_of(state, records[rid]) is None]
        if due and state["stops"]:
            due = [rid for rid in due if not _kept_for_claims(state, records[rid])]
        for rid in sorted(due):
            rec = records[rid]
            _expire(state, rec, now, cause, _expiry_reason(state, rec, policy), out)
    requests = state["requests"]
    sid = state["subject_id"]
    for rid in sorted(requests):
        req = requests[rid]
        status = req["status"]
        verify_by = req.get("verify_by")
        if status == _OPEN and verify_by is not None and now >= verify_by and rid not in state["verifications"]:
            _close(req, "denied", now, "identity_not_verified")
            out.append(
                _decision(
                    state,
                    "RequestDenied",
                    f"{sid}/{TIMER}/RequestDenied/{rid}",
                    now,
                    cause,
                    {"request_id": rid, "reason": "identity_not_verified", "keys_destroyed": _drop_pending(state, req)},
                )
            )
            continue
        if now < req["deadline"]:
            continue
        if status == _OPEN and not req["missed"]:
            req["missed"] = True
            out.append(
                _decision(
                    state,
                    "DeadlineMissed",
                    f"{sid}/{TIMER}/DeadlineMissed/{rid}/",
                    now,
                    cause,
                    {"request_id": rid, "deadline": req["deadline"], "consumer": ""},
                )
            )
        elif status == "executed":
            for c in req["consumers"]:
                if c in req["acks"] or c in req["missed_consumers"]:
                    continue
                req["missed_consumers"].append(c)
                out.append(
                    _decision(
                        state,
                        "DeadlineMissed",
                        f"{sid}/{TIMER}/DeadlineMissed/{rid}/{c}",
                        now,
                        cause,
                        {"request_id": rid, "deadline": req["deadline"], "consumer": c},
                    )
                )
    return out


# --------------------------------------------------------------------------------------
# public API
# --------------------------------------------------------------------------------------

_HANDLERS: dict[str, Callable[[State, Event, Policy], list[Output]]] = {
    "DataCollected": _on_collected,
    "ConsentGiven": _on_consent,
    "ConsentWithdrawn": _on_consent,
    "Unsubscribed": _on_unsubscribed,
    "RelationshipStarted": _on_relationship_started,
    "RelationshipEnded": _on_relationship_ended,
    "IdentityVerified": _on_verified,
    "LegalHoldPlaced": _on_hold_placed,
    "LegalHoldReleased": _on_hold_released,
    "DeadlineExtended": _on_extended,
    "ObjectionDecided": _on_objection_decided,
    "RestrictionLifted": _on_restriction_lifted,
    "ErasureAcknowledged": _on_ack,
    **dict.fromkeys(REQUEST_TYPES, _on_request),
    **dict.fromkeys(DECISION_TYPES, _on_decision),
}


def apply(state: State, event: Event, now: int, policy: Policy) -> tuple[State, list[Output]]:
    """Fold one event into the subject's state IN PLACE; returns that same state and the outputs.

    ``now`` is read only for a ``Tick`` (the timer's clock, stamped onto the decisions it
    causes; a Tick's optional ``after``, the offset of the last log entry folded before it,
    becomes their ``caused_by`` as ``timer@<after>``, so a replay applies it at that point); every other decision carries the ``occurred_at`` of the event that caused it, so
    the worker may pass ``now=event["occurred_at"]``. An event whose ``event_id`` was seen
    before (including the fold's own decisions read back from the log) changes nothing.
    Unknown event types are remembered as seen and otherwise ignored, so that a newer
    producer cannot crash an older fold.
    """
    typ = event["type"]
    if typ == "Tick":
        after = event.get("after")
        return state, _stamped(_tick(state, now, policy, TIMER if after is None else f"{TIMER}@{after}"), policy)
    eid = event["event_id"]
    seen = state["seen"]
    if eid in seen:
        return state, []
    seen[eid] = event.get("digest") or ""
    handler = _HANDLERS.get(typ)
    if handler is None:
        return state, []
    return state, _stamped(handler(state, event, policy), policy)


def _stamped(out: list[Output], policy: Policy) -> list[Output]:
    """Every decision names the policy version it was taken under, so that an auditor replays
    it with that policy, and a privacy officer can tell which edition a deletion followed."""
    for o in out:
        if type(o) is Decision:
            o.event["policy"] = policy.version
    return out


def upgrade(state: dict[str, Any], policy: Policy) -> State:
    """A state as persisted, completed IN PLACE with what this fold keeps if an older worker
    wrote it.

    The older pipeline sent every record and snapshot to every consumer on one feed, so each
    consumer counts as having the subject's data (an erasure awaits all of them, never fewer);
    the purposes its snapshot shows stopped become the stops they were. A current state is
    returned untouched, at the cost of one lookup."""
    if "sent" not in state:
        snap = state["consent"]
        if "stops" not in state:
            state["stops"] = {
                entry["request_id"]: {"purpose": purpose, "reason": entry["reason"], "at": entry["at"]}
                for purpose, entry in (snap["stopped"] if snap is not None else {}).items()
                if entry.get("request_id")
            }
        state.setdefault("optouts", {})
        every = list(policy.consumer_names)
        sent = {rid: every.copy() for rid in state["records"]}
        if snap is not None:
            sent[""] = every
        state["sent"] = sent
    return state  # type: ignore[return-value]  # now complete: a State


def seen(state: State, event_id: str) -> bool:
    """Whether an event of this id was folded into the state (upstream events and decisions)."""
    return event_id in state["seen"]


def redelivered(state: State, event_id: str, digest: str | None) -> str | None:
    """Whether an upstream event was folded before: None (never), ``"same"``, or ``"different"``
    when the first copy's digest and ``digest`` disagree.

    ``digest`` None means the caller cannot tell (the event's data key was destroyed since):
    then it counts as the same, since folding it again could only bring erased data back. A
    first copy folded without a digest (before digests were stamped) counts as the same too.
    """
    first = state["seen"].get(event_id)
    if first is None:
        return None
    if digest is None or not first or first == digest:
        return "same"
    return "different"


def next_deadline(state: State) -> int | None:
    """The earliest time a Tick could decide something, for the timer's index (None: never)."""
    best: int | None = None
    holds = state["holds"]
    stops = state["stops"]
    for rec in state["records"].values():
        d = rec["retention_deadline"]
        if (
            d is not None
            and (best is None or d < best)
            and not (holds and _hold_of(state, rec) is not None)
            and not (stops and _kept_for_claims(state, rec))
        ):
            best = d
    verifications = state["verifications"]
    for rid, req in state["requests"].items():
        status = req["status"]
        verify_by = req.get("verify_by")
        if status == _OPEN and verify_by is not None and rid not in verifications:
            if best is None or verify_by < best:
                best = verify_by
        if (status == _OPEN and not req["missed"]) or (
            status == "executed" and any(c not in req["acks"] and c not in req["missed_consumers"] for c in req["consumers"])
        ):
            d = req["deadline"]
            if best is None or d < best:
                best = d
    return best


def consent_view(state: State) -> ConsentSnapshot | None:
    """The consent snapshot as ``lifecycle.consent`` carries it, or None (never given, or erased)."""
    snap = state["consent"]
    if snap is None:
        return None
    return {**snap, "purposes": dict(snap["purposes"]), "stopped": dict(snap["stopped"])}


def _date(ms: int) -> str:
    y, m, d = civil_date(ms)
    return f"{y:04d}-{m:02d}-{d:02d}"


def retention_rule(state: State, rec: RecordValue, policy: Policy) -> str:
    """How long a record is kept and why, in words a person can read (art. 15(1)(d))."""
    rid = rec["record_id"]
    deadline = rec["retention_deadline"]
    until = f", until {_date(deadline)}" if deadline is not None else ""
    why = state["retained"].get(rid)
    if why is not None:
        if why.startswith("legal_hold:"):
            return f"kept after your erasure request under a legal hold ({why[11:]}), until it is released"
        return f"kept after your erasure request because the law requires it (tax records){until}"
    hold = _hold_of(state, rec) if state["holds"] else None
    if hold is not None:
        return f"kept under a legal hold ({hold}) until it is released"
    if state["stops"] and _kept_for_claims(state, rec):
        return "kept, restricted, for the legal claim you asked it kept for, until the restriction is lifted"
    open_, end = _relationship_end(state, rec["purpose"], policy)
    if open_:
        return "kept while our business relationship lasts, then as the rules below say"
    if policy.is_obligation(rec["purpose"]):
        return (
            f"kept {policy.post_contract_years} years for tax law, from the end of the relationship or the record's date{until}"
        )
    if (
        end is not None
        and end >= rec["collected_at"]
        and deadline is not None
        and deadline > policy.no_relationship_deadline(rec["collected_at"])
    ):
        return f"kept {policy.post_relationship_grace_months} months after our relationship ended{until}"
    return f"kept {policy.no_relationship_months} months from collection, as no business relationship followed{until}"


def _recipients(state: State, rec: RecordValue, policy: Policy) -> list[dict[str, Any]]:
    """Who was sent the record, with role, region and transfer safeguard (art. 15(1)(c), (2))."""
    names = state["sent"].get(rec["record_id"])
    wanted = set(names) if names is not None else set(policy.consumers_of.get(rec["purpose"], ()))
    return [
        {"consumer": c.name, "description": c.description, "role": c.role, "region": c.region, "transfer": c.transfer}
        for c in policy.consumers
        if c.name in wanted
    ]


def export(state: State, policy: Policy) -> dict[str, Any]:
    """Everything held about the subject, as the access / portability answer (plain JSON): per
    record its source (and origin, for data we did not get from the person), its recipients and
    the retention rule in words, as art. 15 lists them; the opt-outs kept on record, too."""
    retained = state["retained"]
    records = []
    for rid, rec in sorted(state["records"].items()):
        p = policy.purposes.get(rec["purpose"])
        records.append(
            {
                "record_id": rid,
                "category": rec["category"],
                "purpose": rec["purpose"],
                "purpose_description": p.description if p is not None else "",
                "legal_basis": rec["legal_basis"],
                "fields": dict(rec["fields"]),
                "source": rec.get("source", ""),
                "origin": rec.get("origin", ""),
                "collected_at": rec["collected_at"],
                "retention_deadline": rec["retention_deadline"],
                "retention_rule": retention_rule(state, rec, policy),
                "recipients": _recipients(state, rec, policy),
                "restricted": rec["restricted"],
                "retained_because": retained.get(rid),
                "updated_at": rec["updated_at"],
                "policy": rec.get("policy", ""),
            }
        )
    requests = []
    for rid, req in sorted(state["requests"].items()):
        item = {
            "request_id": rid,
            "type": req["type"],
            "received_at": req["received_at"],
            "deadline": req["deadline"],
            "status": req["status"],
            "verified": rid in state["verifications"],
            "extended": req["extended"] is not None,
            "deadline_missed": req["missed"],
            "answered_at": req["answered_at"],
            "outcome": req["outcome"],
        }
        for key in ("purpose", "record_id"):
            if key in req:
                item[key] = req[key]
        if "erased" in req:
            item["erased"] = list(req["erased"])
            item["retained"] = dict(req["retained"])
            item["acknowledged_by"] = sorted(req["acks"])
            item["awaiting"] = sorted(c for c in req["consumers"] if c not in req["acks"])
        requests.append(item)
    return {
        "subject_id": state["subject_id"],
        "status": state["status"],
        # each erasure with ``late_arrivals``: records collected before it ran but delivered
        # after it, which it covered (refused, or kept restricted under an obligation or hold)
        "erasures": [
            {
                "request_id": e["request_id"],
                "at": e["at"],
                "caused_by": e["caused_by"],
                "late_arrivals": list(e.get("late", ())),
            }
            for e in state["erasures"]
        ],
        "records": records,
        "consent": consent_view(state),
        "consent_history": sorted(
            ({"purpose": purpose, **entry} for purpose, trail in state["consent_history"].items() for entry in trail),
            key=lambda h: (h["at"], h["event_id"], h["purpose"]),
        ),
        "relationships": [{"relationship_id": k, **v} for k, v in sorted(state["relationships"].items())],
        "requests": requests,
        # what the pipeline keeps so as never to market to the person again (no personal value)
        "opt_outs": [{"channel": ch, **o} for ch, o in sorted(state["optouts"].items())],
        "policy": policy.version,
    }
