"""Properties of the fold over random histories (hypothesis).

Why properties on top of the rule tests: the worker and the auditor rely on guarantees that
must hold for *every* history, not just the ones someone thought of: the same log always
gives the same state and decisions, redelivered events and read-back decisions change
nothing, a replay that uses the recorded timer decisions instead of a clock ends where the
live run ended, erasure leaves nothing live that no obligation or hold justifies, and no
record outlives its deadline by more than one timer period.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from processors.fold import Decision, Output, RecordChange, apply, export, new_state, next_deadline
from processors.policy import Policy
from streams.settings import load_policy

POLICY: Policy = load_policy()
SID = "s-prop"
MINUTE = 60_000
HOUR = 60 * MINUTE
DAY = 24 * HOUR
PERIOD = 30 * DAY  # the simulated retention timer's period
T0 = 1_704_067_200_000  # 2024-01-01T00:00:00Z

RECORDS = ["r-0", "r-1", "r-2", "r-3"]
REQUESTS = ["q-0", "q-1", "q-2"]
RELATIONSHIPS = ["rel-0", "rel-1"]  # a client, an applicant (whose application ends by itself)
HOLDS = ["h-0", "h-1", "h-2"]
HOLD_SCOPES: dict[str, dict[str, list[str]]] = {"h-0": {}, "h-1": {"records": ["r-0"]}, "h-2": {"categories": ["billing"]}}
KINDS = {"rel-0": "client", "rel-1": "applicant"}
CONSUMERS = ["crm-mirror", "mailer", "warehouse", "stranger"]
COLLECTIONS = [  # (purpose, category, legal basis), mostly what the policy allows
    ("newsletter", "contact", "consent"),
    ("marketing_email", "contact", "consent"),
    ("analytics_cookies", "analytics", "consent"),
    ("inquiry", "contact", "legitimate_interest"),
    ("crm", "third_party", "legitimate_interest"),
    ("recruitment", "employment", "legitimate_interest"),
    ("service_delivery", "contact", "contract"),
    ("invoicing", "billing", "legal_obligation"),
    ("invoicing", "billing", "contract"),
    ("invoicing", "contact", "legal_obligation"),
    ("profiling", "contact", "consent"),
    ("inquiry", "contact", "legal_obligation"),
]
CONSENT_PURPOSES = ["newsletter", "marketing_email", "analytics_cookies", "crm", "data_sale"]
REQUEST_TYPES = [
    "AccessRequested",
    "PortabilityRequested",
    "ErasureRequested",
    "ErasureRequested",
    "RectificationRequested",
    "RestrictionRequested",
    "ObjectionRaised",
]
# mostly short gaps (requests get answered in time), some long ones (retention runs out)
GAPS = [0, MINUTE, MINUTE, HOUR, HOUR, DAY, DAY, 10 * DAY, 40 * DAY, 200 * DAY, 400 * DAY, 800 * DAY]

collect = st.tuples(st.just("collect"), st.sampled_from(RECORDS), st.sampled_from(COLLECTIONS))
relationship = st.tuples(
    st.just("relationship"), st.sampled_from(["RelationshipStarted", "RelationshipEnded"]), st.sampled_from(RELATIONSHIPS)
)
step = st.one_of(  # repeated branches weigh more
    collect,
    collect,
    collect,
    st.tuples(st.just("consent"), st.sampled_from(CONSENT_PURPOSES)),
    st.tuples(st.just("withdraw"), st.sampled_from(CONSENT_PURPOSES)),
    st.tuples(st.just("unsubscribe"), st.sampled_from(["email", "sms"])),
    relationship,
    relationship,
    st.tuples(st.just("hold"), st.sampled_from(["LegalHoldPlaced", "LegalHoldReleased"]), st.sampled_from(HOLDS)),
    st.tuples(
        st.just("request"), st.sampled_from(REQUEST_TYPES), st.sampled_from(REQUESTS), st.sampled_from(RECORDS), st.booleans()
    ),
    st.tuples(st.just("request"), st.just("ErasureRequested"), st.sampled_from(REQUESTS), st.just(""), st.just(True)),
    st.tuples(st.just("verify"), st.sampled_from(REQUESTS)),
    st.tuples(st.just("extend"), st.sampled_from(REQUESTS)),
    st.tuples(st.just("ack"), st.sampled_from(CONSUMERS), st.sampled_from(REQUESTS + RECORDS)),
    st.tuples(st.just("ack_all"), st.sampled_from(REQUESTS)),
)
histories = st.lists(st.tuples(st.sampled_from(GAPS), step), min_size=3, max_size=40)


def build(history: list[tuple[int, tuple]]) -> list[dict]:
    """Upstream events for the steps, with Ticks every PERIOD between them (and after the last)."""
    events: list[dict] = []
    next_tick = T0 + PERIOD

    def emit(ev: dict) -> None:
        nonlocal next_tick
        while next_tick <= ev["occurred_at"]:
            events.append({"type": "Tick", "subject_id": SID, "occurred_at": next_tick})
            next_tick += PERIOD
        events.append(ev)

    t = T0
    for n, (gap, (kind, *args)) in enumerate(history):
        t += gap
        base: dict[str, Any] = {"event_id": f"e-{n}", "subject_id": SID, "occurred_at": t, "source": "prop"}
        then: list[dict] = []  # events of the same step, a minute later
        if kind == "collect":
            record, (purpose, category, basis) = args
            ev = {
                "type": "DataCollected",
                "record_id": record,
                "category": category,
                "purpose": purpose,
                "legal_basis": basis,
                "fields": {"email": f"{record}-{n}@example.org"},
            }
        elif kind == "consent":
            ev = {"type": "ConsentGiven", "purpose": args[0]}
        elif kind == "withdraw":
            ev = {"type": "ConsentWithdrawn", "purpose": args[0]}
        elif kind == "unsubscribe":
            ev = {"type": "Unsubscribed", "channel": args[0]}
        elif kind == "relationship":
            ev = {"type": args[0], "relationship_id": args[1], "kind": KINDS[args[1]]}
        elif kind == "hold":
            ev = {"type": args[0], "hold_id": args[1], "reason": "litigation", **HOLD_SCOPES[args[1]]}
        elif kind == "request":
            typ, rid, record, verified = args
            ev = {"type": typ, "request_id": rid}
            if verified:
                then.append({"type": "IdentityVerified", "request_id": rid, "method": "email_link"})
            if typ == "RectificationRequested":
                ev.update(record_id=record, fields={"name": f"fixed-{n}"})
            elif typ in ("RestrictionRequested", "ObjectionRaised"):
                ev["purpose"] = "newsletter" if n % 2 else "crm"
        elif kind == "verify":
            ev = {"type": "IdentityVerified", "request_id": args[0], "method": "email_link"}
        elif kind == "extend":
            ev = {"type": "DeadlineExtended", "request_id": args[0], "notice": "complex"}
        elif kind == "ack_all":
            ev = {"type": "ErasureAcknowledged", "consumer": CONSUMERS[0], "request_id": args[0], "record_id": ""}
            then += [{**ev, "consumer": c} for c in CONSUMERS[1:]]
        else:
            consumer, target = args
            on_request = target.startswith("q-")
            ev = {
                "type": "ErasureAcknowledged",
                "consumer": consumer,
                "request_id": target if on_request else "",
                "record_id": "" if on_request else target,
            }
        emit({**base, **ev})
        if then:
            t += MINUTE
            for k, more in enumerate(then, 1):
                emit({**base, "event_id": f"e-{n}.{k}", "occurred_at": t, **more})
    for _ in range(3):
        emit({"type": "Tick", "subject_id": SID, "occurred_at": next_tick})
        next_tick += PERIOD
    return events


def held(state: dict, rec: dict) -> bool:
    """Whether a legal hold covers the record: one naming it, its category, or nothing at all."""
    return any(
        (not h.get("records") and not h.get("categories"))
        or rec["record_id"] in h.get("records", ())
        or rec["category"] in h.get("categories", ())
        for h in state["holds"].values()
    )


def now_of(event: dict) -> int:
    return event["occurred_at"]


def fold(events: list[dict], state: dict | None = None) -> tuple[dict, list[list[Output]]]:
    state = new_state(SID) if state is None else state
    outputs = []
    for ev in events:
        state, outs = apply(state, ev, now_of(ev), POLICY)
        outputs.append(outs)
    return state, outputs


def decisions(outs: list[Output]) -> Iterator[dict]:
    return (o.event for o in outs if isinstance(o, Decision))


common = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@common
@given(histories)
def test_folding_is_deterministic(history: list) -> None:
    events = build(history)
    a, out_a = fold(events)
    b, out_b = fold(events)
    assert orjson.dumps(a) == orjson.dumps(b)  # same state, same key order
    assert out_a == out_b
    assert orjson.loads(orjson.dumps(a)) == a  # a plain JSON document
    orjson.dumps(export(a, POLICY))


@common
@given(histories)
def test_replaying_the_history_twice_changes_nothing_and_decides_nothing(history: list) -> None:
    events = build(history)
    state, _ = fold(events)
    before = orjson.loads(orjson.dumps(state))
    state, again = fold(events, state)
    assert all(outs == [] for outs in again)
    assert state == before


@common
@given(histories, st.data())
def test_duplicated_events_change_nothing(history: list, data: st.DataObject) -> None:
    events = build(history)
    upstream = [i for i, e in enumerate(events) if e["type"] != "Tick"]
    noisy = list(events)
    for _ in range(data.draw(st.integers(0, 5))):
        original = events[data.draw(st.sampled_from(upstream))]
        at = next(k for k, e in enumerate(noisy) if e is original)  # earlier copies shift it
        j = data.draw(st.integers(at + 1, len(noisy)))  # a redelivery comes after the original
        noisy.insert(j, dict(original))
    clean_state, clean_out = fold(events)
    noisy_state, noisy_out = fold(noisy)
    assert noisy_state == clean_state
    assert [o for outs in noisy_out for o in outs] == [o for outs in clean_out for o in outs]


@common
@given(histories)
def test_decisions_read_back_from_the_log_are_no_ops(history: list) -> None:
    events = build(history)
    plain, _ = fold(events)
    state = new_state(SID)
    for ev in events:
        state, outs = apply(state, ev, now_of(ev), POLICY)
        for d in decisions(outs):  # the worker appends them to the log, the fold reads them back
            state, back = apply(state, d, now_of(d), POLICY)
            assert back == []
    assert state == plain


@common
@given(histories)
def test_a_replay_without_a_clock_ends_where_the_live_run_ended(history: list) -> None:
    """The auditor replays the log: upstream events and the recorded decisions, no Ticks."""
    events = build(history)
    live, outputs = fold(events)
    log: list[dict] = []
    for ev, outs in zip(events, outputs, strict=True):
        if ev["type"] != "Tick":
            log.append(ev)
        log.extend(decisions(outs))
    replay, _ = fold(log)
    assert replay == live


@common
@given(histories)
def test_after_an_executed_erasure_only_obligations_and_holds_keep_records_live(history: list) -> None:
    state = new_state(SID)
    for ev in build(history):
        before = dict(state["records"])
        state, outs = apply(state, ev, now_of(ev), POLICY)
        for d in decisions(outs):
            if d["type"] != "ErasureExecuted":
                continue
            at = d["occurred_at"]
            live = state["records"]
            assert set(live) == set(d["retained"]), "a record survived erasure without a reason"
            assert state["consent"] is None and state["status"] == "erased"
            for rid, why in d["retained"].items():
                rec = live[rid]
                assert rec["restricted"] is True
                if why == "legal_obligation":
                    assert POLICY.is_obligation(rec["purpose"])
                    assert rec["retention_deadline"] is None or rec["retention_deadline"] > at
                else:
                    assert why.removeprefix("legal_hold:") in state["holds"]
            text = orjson.dumps(state).decode()
            for rid in d["erased"]:
                assert before[rid]["fields"]["email"] not in text, "erased personal data left in the state"


@common
@given(histories)
def test_no_record_outlives_its_deadline_by_more_than_one_timer_period(history: list) -> None:
    state = new_state(SID)
    for ev in build(history):
        due = next_deadline(state)
        state, outs = apply(state, ev, now_of(ev), POLICY)
        if ev["type"] != "Tick":
            continue
        now = ev["occurred_at"]
        if due is None or due > now:
            assert outs == [], "the timer index would have skipped a Tick that decides something"
        for rec in state["records"].values():
            if held(state, rec):
                continue
            d = rec["retention_deadline"]
            assert d is None or d > now, f"{rec['record_id']} outlived its deadline"
        for o in outs:
            if isinstance(o, RecordChange) and o.value is None:
                assert o.record_id not in state["records"]
