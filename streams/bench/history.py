"""Histories to measure and test with: realistic, interleaved, reproducible from a seed.

``build_history`` is the fold benchmark's mix (about ten events a subject: collections with and
without consent, consent given and withdrawn, relationships, requests, erasures, and the timer's
ticks); ``history`` is the same as upstream systems publish it (no ticks), with one collection in
a hundred carrying a card number that the guard must refuse.

An erasure is acknowledged by the consumers that were sent the subject's data, as their sinks
would (each reads only its own feeds, so another consumer has nothing to acknowledge): an
acknowledgement from anyone else would count for nothing and measure nothing.
"""

from __future__ import annotations

import random

from processors.policy import Policy
from processors.state import Event
from streams.settings import load_policy

_T0 = 1_704_067_200_000  # 2024-01-01T00:00:00Z


_CONSENT_PURPOSES = ("marketing_email", "newsletter", "analytics_cookies")


# (purpose, category, legal basis, fields) for collections that need no consent
_OTHER = (
    ("inquiry", "contact", "legitimate_interest", ("name", "email", "company", "message")),
    ("crm", "contact", "legitimate_interest", ("name", "email", "phone", "company", "job_title")),
    ("crm", "third_party", "legitimate_interest", ("name", "company", "linkedin")),
    ("service_delivery", "contact", "contract", ("name", "email", "phone")),
    ("invoicing", "billing", "legal_obligation", ("name", "billing_address", "vat_id")),
    ("recruitment", "employment", "legitimate_interest", ("name", "email", "cv")),
)


_CONSENT_SHAPES = {
    "marketing_email": ("contact", ("email", "name")),
    "newsletter": ("contact", ("email",)),
    "analytics_cookies": ("analytics", ("ip_address", "browser", "pages_viewed")),
}


def build_history(n_events: int, n_subjects: int, seed: int = 7, policy: Policy | None = None) -> list[Event]:
    """A random but realistic interleaved history of ``n_events`` over ``n_subjects``;
    ``policy`` (by default the packaged one) says which consumers get what."""
    consumers_of = (load_policy() if policy is None else policy).consumers_of
    rng = random.Random(seed)
    subjects = [f"s-{i:06d}" for i in range(n_subjects)]
    granted: dict[str, set[str]] = {s: set() for s in subjects}
    records: dict[str, list[str]] = {s: [] for s in subjects}
    pending: dict[str, list[str]] = {s: [] for s in subjects}
    erasures: dict[str, list[str]] = {s: [] for s in subjects}
    rels: dict[str, int] = dict.fromkeys(subjects, 0)
    sent: dict[str, set[str]] = {s: set() for s in subjects}  # the consumers sent something of the subject
    events: list[Event] = []
    t = _T0
    seq = 0

    def ev(typ: str, sid: str, **extra: object) -> None:
        nonlocal seq
        seq += 1
        base = {"type": typ, "event_id": f"e-{seq:09d}", "subject_id": sid, "occurred_at": t, "source": "web"}
        base.update(extra)
        events.append(base)

    while len(events) < n_events:
        t += rng.randint(1, 120_000)  # a couple of minutes between events, over months
        sid = subjects[rng.randrange(n_subjects)]
        r = rng.random()
        if r < 0.45:
            if rng.random() < 0.55:
                purpose = rng.choice(_CONSENT_PURPOSES)
                category, names = _CONSENT_SHAPES[purpose]
                basis = "consent"
            else:
                purpose, category, basis, names = rng.choice(_OTHER)
            rid = f"r-{seq}"
            records[sid].append(rid)
            fields = {k: f"{k}-{rng.randrange(10**6)}" for k in names}
            sent[sid].update(consumers_of.get(purpose, ()))
            ev("DataCollected", sid, record_id=rid, category=category, purpose=purpose, legal_basis=basis, fields=fields)
        elif r < 0.75:
            purpose = rng.choice(_CONSENT_PURPOSES)
            granted[sid].add(purpose)
            sent[sid].update(consumers_of.get(purpose, ()))  # the consent snapshot goes to them
            ev("ConsentGiven", sid, purpose=purpose)
        elif r < 0.79:
            purpose = rng.choice(_CONSENT_PURPOSES)
            granted[sid].discard(purpose)
            sent[sid].update(consumers_of.get(purpose, ()))
            ev("ConsentWithdrawn", sid, purpose=purpose)
        elif r < 0.81:
            ev("Unsubscribed", sid, channel="email")
        elif r < 0.84:
            if rels[sid] and rng.random() < 0.5:
                ev("RelationshipEnded", sid, relationship_id=f"rel-{sid}-{rels[sid]}", kind="client")
            else:
                rels[sid] += 1
                ev("RelationshipStarted", sid, relationship_id=f"rel-{sid}-{rels[sid]}", kind="client")
        elif r < 0.89:
            kind = rng.choice(("AccessRequested", "ErasureRequested", "RectificationRequested", "RestrictionRequested"))
            req = f"q-{seq}"
            extra: dict[str, object] = {}
            if kind == "RectificationRequested":
                extra = {"record_id": rng.choice(records[sid]) if records[sid] else "r-none", "fields": {"name": "Fixed"}}
            elif kind == "RestrictionRequested":
                extra = {"purpose": rng.choice(_CONSENT_PURPOSES)}
            pending[sid].append(req)
            if kind == "ErasureRequested":
                erasures[sid].append(req)
            ev(kind, sid, request_id=req, **extra)
        elif r < 0.94:
            if pending[sid]:
                ev("IdentityVerified", sid, request_id=pending[sid].pop(0), method="email_link")
            else:
                purpose = rng.choice(_CONSENT_PURPOSES)
                sent[sid].update(consumers_of.get(purpose, ()))
                ev("ConsentGiven", sid, purpose=purpose)
        elif r < 0.97:
            if erasures[sid] and sent[sid]:
                req = erasures[sid][-1]
                ev(
                    "ErasureAcknowledged",
                    sid,
                    consumer=rng.choice(sorted(sent[sid])),
                    request_id=req,
                    record_id="",
                )
            else:
                ev("AccessRequested", sid, request_id=f"q-{seq}")
        elif r < 0.98:
            hold = f"h-{sid}"
            ev(rng.choice(("LegalHoldPlaced", "LegalHoldReleased")), sid, hold_id=hold, reason="litigation")
        else:
            events.append({"type": "Tick", "subject_id": sid, "occurred_at": t})
    return events


CARD = "4111 1111 1111 1111"


def history(n_events: int, n_subjects: int, seed: int, policy: Policy | None = None) -> list[Event]:
    """The realistic mix of the fold benchmark as upstream events (no timer ticks), with one
    collection in a hundred carrying a card number, which the guard must refuse."""
    out = []
    for i, e in enumerate(build_history(n_events, n_subjects, seed, policy)):
        if e["type"] == "Tick":
            continue
        if e["type"] == "DataCollected" and i % 100 == 7:
            e = {**e, "fields": {**e["fields"], "note": f"pay with {CARD}"}}
        out.append(e)
    return out
