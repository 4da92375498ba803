"""The lifecycle fold, rule by rule, with time moved by hand.

DESIGN's rules table -> the tests that exercise each row:

| retention without a relationship       -> test_rule_retention_without_relationship_*           |
| retention with a contract              -> test_rule_retention_with_contract_*                   |
| unsubscribe                            -> test_rule_unsubscribe_*                               |
| consent                                -> test_rule_consent_*                                   |
| erasure                                -> test_rule_erasure_*                                   |
| access / portability                   -> test_rule_access_portability_*                        |
| rectification / restriction / objection-> test_rule_rectification_*, test_rule_restriction_*,   |
|                                           test_rule_objection_*                                 |
| deadlines                              -> test_rule_deadlines_*                                 |
| forbidden data                         -> test_rule_forbidden_data_* (the guard refuses using   |
|                                           the policy; the fold never sees such fields)         |
| no profiling, no sale                  -> test_rule_no_profiling_no_sale_*                      |
| processors and transfers               -> test_rule_processors_*                                |
| purpose limitation downstream          -> test_promise_purpose_limitation_* (and test_messages) |

The rules a privacy officer signs off beyond DESIGN's table (direct marketing as one thing,
purpose x category x basis, retention by relationship purpose, objection and restriction as
the law reads, deadlines, a versioned policy, the access export) -> test_promises.py, one
``test_promise_<promise>_*`` group each.

The fold's own contract (idempotency, decisions read back, determinism, JSON state, events
after erasure) -> test_fold_*; purity: test_purity.py.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import orjson
import pytest
from support.fold import (
    CONSUMERS,
    DAY,
    HOUR,
    T0,
    Subject,
    consent_changes,
    decisions,
    ms,
    only,
    tombstoned,
    upserted,
)

from processors import envelope
from processors.fold import (
    ConsentChange,
    RecordChange,
    apply,
    consent_view,
    export,
    next_deadline,
    redelivered,
    upgrade,
)
from processors.policy import Policy
from streams.settings import load_policy


@pytest.fixture(scope="module")
def policy() -> Policy:
    return load_policy()


# ======================================================================================
# retention without a relationship
# ======================================================================================


@pytest.mark.parametrize(
    ("category", "purpose", "when", "expired"),
    [
        ("contact", "inquiry", "2025-01-14T10:00:00", False),  # 12 months minus a day: kept
        ("contact", "inquiry", "2025-01-15T09:59:59.999", False),  # the last millisecond
        ("contact", "inquiry", "2025-01-15T10:00:00", True),  # exactly 12 months: gone
        ("contact", "inquiry", "2025-01-16T10:00:00", True),  # 12 months plus a day: expired
        ("analytics", "analytics_cookies", "2025-01-14T10:00:00", False),
        ("analytics", "analytics_cookies", "2025-01-16T10:00:00", True),
        ("employment", "recruitment", "2025-01-16T10:00:00", True),
        ("third_party", "crm", "2025-01-16T10:00:00", True),
    ],
)
def test_rule_retention_without_relationship_expires_12_months_after_collection(
    policy: Policy, category: str, purpose: str, when: str, expired: bool
) -> None:
    s = Subject(policy)
    if policy.purposes[purpose].consent_only:
        s.consent(T0 - HOUR, purpose)
    s.collect(T0, "r-1", category=category, purpose=purpose)
    assert s.records["r-1"]["retention_deadline"] == ms("2025-01-15T10:00:00")
    outs = s.tick(ms(when))
    if expired:
        assert tombstoned(outs) == ["r-1"] and "r-1" not in s.records
        d = only(outs, "RetentionExpired")
        assert d["record_id"] == "r-1"
        assert d["deadline"] == ms("2025-01-15T10:00:00")
        assert d["reason"] == "no_relationship"
        assert d["occurred_at"] == ms(when)  # a timer decision carries the time it was taken
        assert d["caused_by"] == "timer" and d["source"] == "lifecycle"
    else:
        assert outs == [] and "r-1" in s.records


def test_rule_retention_without_relationship_clock_restarts_on_recollection(policy: Policy) -> None:
    s = Subject(policy)
    s.collect(T0, "r-1")
    s.collect(T0 + 100 * DAY, "r-1", fields={"email": "new@example.org"})
    assert s.tick(ms("2025-01-16T10:00:00")) == []
    assert s.records["r-1"]["fields"] == {"email": "new@example.org"}


def test_rule_retention_without_relationship_suspended_when_a_relationship_starts(policy: Policy) -> None:
    s = Subject(policy)
    s.collect(T0, "r-1")
    outs = s.send("RelationshipStarted", T0 + 30 * DAY, relationship_id="rel-1", kind="client")
    assert upserted(outs)["r-1"]["retention_deadline"] is None
    assert s.tick(T0 + 3000 * DAY) == []
    assert next_deadline(s.state) is None


def test_rule_retention_without_relationship_overdue_record_still_expires_if_relationship_starts_late(
    policy: Policy,
) -> None:
    s = Subject(policy)
    s.collect(T0, "r-1")
    late = ms("2025-02-01T00:00:00")  # the deadline passed, the timer had not run yet
    assert s.send("RelationshipStarted", late, relationship_id="rel-1", kind="client") == []
    assert tombstoned(s.tick(late + HOUR)) == ["r-1"]


# ======================================================================================
# retention with a contract
# ======================================================================================


def test_rule_retention_with_contract_kept_while_the_relationship_lasts(policy: Policy) -> None:
    s = Subject(policy)
    s.send("RelationshipStarted", T0 - DAY, relationship_id="rel-1", kind="client")
    s.collect(T0, "r-bill", category="billing", purpose="invoicing")
    s.collect(T0, "r-contact", purpose="service_delivery")
    assert s.records["r-bill"]["retention_deadline"] is None
    assert s.records["r-contact"]["retention_deadline"] is None
    assert s.tick(T0 + 10 * 365 * DAY) == []


@pytest.mark.parametrize(
    ("when", "expired"),
    [
        ("2032-06-29T12:00:00", False),  # 6 years minus a day after the end
        ("2032-07-01T12:00:00", True),  # 6 years plus a day
    ],
)
def test_rule_retention_with_contract_billing_kept_6_years_after_the_relationship_ends(
    policy: Policy, when: str, expired: bool
) -> None:
    s = Subject(policy)
    s.send("RelationshipStarted", T0, relationship_id="rel-1", kind="client")
    s.collect(T0 + DAY, "r-bill", category="billing", purpose="invoicing", fields={"billing_address": "1 Road", "vat_id": "GB1"})
    end = ms("2026-06-30T12:00:00")
    outs = s.send("RelationshipEnded", end, relationship_id="rel-1", kind="client")
    assert upserted(outs)["r-bill"]["retention_deadline"] == ms("2032-06-30T12:00:00")
    outs = s.tick(ms(when))
    if expired:
        d = only(outs, "RetentionExpired")
        assert (d["record_id"], d["reason"], d["deadline"]) == ("r-bill", "post_contract", ms("2032-06-30T12:00:00"))
    else:
        assert outs == []


def test_rule_retention_with_contract_other_categories_get_a_grace_period_never_shorter_than_12_months(
    policy: Policy,
) -> None:
    s = Subject(policy)
    s.send("RelationshipStarted", T0, relationship_id="rel-1", kind="client")
    s.collect(T0, "r-old", purpose="service_delivery")
    end = ms("2026-01-15T10:00:00")  # two years later
    s.collect(end - DAY, "r-new", purpose="service_delivery")
    outs = s.send("RelationshipEnded", end, relationship_id="rel-1", kind="client")
    deadlines = {rid: v["retention_deadline"] for rid, v in upserted(outs).items()}
    grace = policy.post_relationship_grace_months
    assert deadlines["r-old"] == ms(f"2026-{1 + grace:02d}-15T10:00:00")  # end + grace
    assert deadlines["r-new"] == ms("2027-01-14T10:00:00")  # collection + 12 months is later
    outs = s.tick(deadlines["r-old"])
    assert only(outs, "RetentionExpired")["reason"] == "post_contract"


def test_rule_retention_with_contract_clock_starts_only_when_no_other_relationship_is_active(policy: Policy) -> None:
    s = Subject(policy)
    s.send("RelationshipStarted", T0, relationship_id="rel-1", kind="client")
    s.send("RelationshipStarted", T0, relationship_id="rel-2", kind="vendor")  # invoices both ways
    s.collect(T0 + DAY, "r-bill", category="billing", purpose="invoicing")
    assert s.send("RelationshipEnded", T0 + 10 * DAY, relationship_id="rel-1", kind="client") == []
    assert s.records["r-bill"]["retention_deadline"] is None
    outs = s.send("RelationshipEnded", T0 + 20 * DAY, relationship_id="rel-2", kind="vendor")
    assert upserted(outs)["r-bill"]["retention_deadline"] == policy.post_contract_deadline(T0 + 20 * DAY)


def test_rule_retention_with_contract_invoice_without_relationship_kept_6_years_from_its_date(policy: Policy) -> None:
    s = Subject(policy)
    s.collect(T0, "r-bill", category="billing", purpose="invoicing")
    assert s.records["r-bill"]["retention_deadline"] == ms("2030-01-15T10:00:00")
    assert s.tick(ms("2025-06-01T00:00:00")) == []
    assert only(s.tick(ms("2030-01-15T10:00:00")), "RetentionExpired")["reason"] == "obligation_ended"


# ======================================================================================
# unsubscribe
# ======================================================================================


def test_rule_unsubscribe_withdraws_the_channels_marketing_consent_and_deletes_nothing(policy: Policy) -> None:
    s = Subject(policy)
    s.consent(T0, "newsletter")
    s.consent(T0, "marketing_email")
    s.consent(T0, "analytics_cookies")
    s.collect(T0 + 1, "r-news", purpose="newsletter", fields={"email": "ada@example.org"})
    outs = s.send("Unsubscribed", T0 + DAY, channel="email")
    (snap,) = consent_changes(outs)
    assert snap["purposes"]["newsletter"]["status"] == "withdrawn"
    assert snap["purposes"]["marketing_email"]["status"] == "withdrawn"
    assert snap["purposes"]["analytics_cookies"]["status"] == "granted"  # another channel
    assert snap["purposes"]["newsletter"]["source"] == "test"
    assert set(snap["stopped"]) == {"newsletter", "marketing_email", "crm"}  # every email marketing
    assert "r-news" in s.records and upserted(outs)["r-news"]["restricted"] is True  # nothing deleted


def test_rule_unsubscribe_from_a_channel_no_purpose_uses_is_refused(policy: Policy) -> None:
    s = Subject(policy)
    d = only(s.send("Unsubscribed", T0, channel="carrier_pigeon"), "RequestRejected")
    assert d["reason"] == "unknown_channel"


# ======================================================================================
# consent
# ======================================================================================


def test_rule_consent_per_purpose_with_legal_basis_and_provenance(policy: Policy) -> None:
    s = Subject(policy)
    outs = s.send("ConsentGiven", T0, purpose="newsletter", source="web-form")
    (snap,) = consent_changes(outs)
    assert snap == {
        "subject_id": "s-1",
        "purposes": {
            "newsletter": {
                "status": "granted",
                "legal_basis": "consent",
                "at": T0,
                "event_id": "s-1-e1",
                "source": "web-form",
                "meaning": policy.purposes["newsletter"].meaning,
            }
        },
        "stopped": {},
        "updated_at": T0,
        "caused_by": "s-1-e1",
    }
    assert consent_view(s.state) == snap


def test_rule_consent_withdrawable_at_any_time_with_history(policy: Policy) -> None:
    s = Subject(policy)
    s.consent(T0, "newsletter")
    outs = s.send("ConsentWithdrawn", T0 + DAY, purpose="newsletter")
    assert consent_changes(outs)[0]["purposes"]["newsletter"]["status"] == "withdrawn"
    s.consent(T0 + 2 * DAY, "newsletter")
    history = export(s.state, policy)["consent_history"]
    assert [(h["purpose"], h["status"], h["at"]) for h in history] == [
        ("newsletter", "granted", T0),
        ("newsletter", "withdrawn", T0 + DAY),
        ("newsletter", "granted", T0 + 2 * DAY),
    ]


@pytest.mark.parametrize(
    ("setup", "reason"),
    [
        ([], "no_consent"),
        ([("ConsentGiven", "marketing_email")], "no_consent"),  # another purpose
        ([("ConsentGiven", "newsletter"), ("ConsentWithdrawn", "newsletter")], "no_consent"),
        ([("ConsentGiven", "newsletter")], None),
    ],
)
def test_rule_consent_required_before_collecting_for_a_consent_purpose(
    policy: Policy, setup: list[tuple[str, str]], reason: str | None
) -> None:
    s = Subject(policy)
    for i, (typ, purpose) in enumerate(setup):
        s.send(typ, T0 + i, purpose=purpose)
    outs = s.collect(T0 + DAY, "r-1", purpose="newsletter")
    if reason is None:
        assert list(upserted(outs)) == ["r-1"]
    else:
        d = only(outs, "RequestRejected")
        assert (d["reason"], d["record_id"], d["request_id"]) == (reason, "r-1", "")
        assert d["occurred_at"] == T0 + DAY
        assert "r-1" not in s.records and not upserted(outs)


@pytest.mark.parametrize(
    ("purpose", "category", "basis", "reason"),
    [
        ("inquiry", "contact", "legal_obligation", "legal_basis_mismatch"),  # would dodge erasure
        ("newsletter", "contact", "legitimate_interest", "legal_basis_mismatch"),  # would dodge consent
        ("no_such_purpose", "contact", "consent", "unknown_purpose"),
        ("inquiry", "secrets", "legitimate_interest", "unknown_category"),
    ],
)
def test_rule_consent_collection_must_claim_the_policys_basis(
    policy: Policy, purpose: str, category: str, basis: str, reason: str
) -> None:
    s = Subject(policy)
    s.consent(T0, "newsletter")
    outs = s.collect(T0 + 1, "r-1", purpose=purpose, category=category, basis=basis)
    assert only(outs, "RequestRejected")["reason"] == reason


# ======================================================================================
# erasure
# ======================================================================================


def test_rule_erasure_waits_for_identity_verification(policy: Policy) -> None:
    s = Subject(policy)
    s.collect(T0, "r-1")
    assert s.request("ErasureRequested", T0 + DAY, verify=False) == []
    assert "r-1" in s.records
    outs = s.send("IdentityVerified", T0 + 2 * DAY, request_id="q-1", method="id_document")
    assert tombstoned(outs) == ["r-1"]
    d = only(outs, "ErasureExecuted")
    assert d == {
        "type": "ErasureExecuted",
        "event_id": f"{s.log[-1]['event_id']}/ErasureExecuted/q-1",
        "subject_id": "s-1",
        "occurred_at": T0 + 2 * DAY,
        "source": "lifecycle",
        "caused_by": d["caused_by"],
        "request_id": "q-1",
        "erased": ["r-1"],
        "retained": {},
        "keys_destroyed": [],  # plaintext fields here: no data key involved
        "policy": policy.version,  # the edition it was decided under, for the auditor
    }
    assert d["caused_by"] == s.log[-1]["event_id"]  # the verification triggered it


def test_rule_erasure_verification_may_come_first(policy: Policy) -> None:
    s = Subject(policy)
    s.collect(T0, "r-1")
    assert s.send("IdentityVerified", T0 + DAY, request_id="q-1", method="email_link") == []
    outs = s.request("ErasureRequested", T0 + 2 * DAY, verify=False)
    assert tombstoned(outs) == ["r-1"]
    assert only(outs, "ErasureExecuted")["occurred_at"] == T0 + 2 * DAY


def test_rule_erasure_erases_everything_keeps_no_personal_data_and_says_so(policy: Policy) -> None:
    s = Subject(policy)
    s.consent(T0, "newsletter")
    s.collect(T0, "r-1", fields={"email": "ada@example.org", "name": "Ada Lovelace"})
    s.collect(T0, "r-2", purpose="newsletter", fields={"email": "ada@example.org"})
    outs = s.request("ErasureRequested", T0 + DAY)
    assert tombstoned(outs) == ["r-1", "r-2"]
    assert consent_changes(outs) == [None]  # consent snapshot tombstoned
    assert s.records == {} and s.state["consent"] is None
    text = orjson.dumps(s.state).decode()
    assert "ada@example.org" not in text and "Ada Lovelace" not in text
    assert s.state["status"] == "erased"
    assert s.state["erasures"] == [{"request_id": "q-1", "at": T0 + DAY + HOUR, "caused_by": s.log[-1]["event_id"]}]
    assert consent_view(s.state) is None


def test_rule_erasure_keeps_obligation_records_restricted_until_the_obligation_ends(policy: Policy) -> None:
    s = Subject(policy)
    s.collect(T0, "r-contact")
    s.collect(T0, "r-bill", category="billing", purpose="invoicing", fields={"billing_address": "1 Road"})
    outs = s.request("ErasureRequested", T0 + DAY)
    assert tombstoned(outs) == ["r-contact"]
    kept = upserted(outs)["r-bill"]
    assert kept["restricted"] is True and kept["fields"] == {"billing_address": "1 Road"}
    d = only(outs, "ErasureExecuted")
    assert d["erased"] == ["r-contact"] and d["retained"] == {"r-bill": "legal_obligation"}
    assert only(s.ack_all(T0 + 2 * DAY), "ErasureCompleted")["request_id"] == "q-1"
    # the obligation (6 years from the invoice, no relationship) ends: now it goes
    assert s.tick(ms("2030-01-14T10:00:00")) == []
    outs = s.tick(ms("2030-01-15T10:00:00"))
    assert tombstoned(outs) == ["r-bill"]
    assert only(outs, "RetentionExpired")["reason"] == "obligation_ended"


def test_rule_erasure_keeps_the_records_of_an_obligation_purpose_whatever_their_basis(policy: Policy) -> None:
    s = Subject(policy)
    s.send("RelationshipStarted", T0, relationship_id="rel-1", kind="client")
    s.collect(T0, "r-inv", category="billing", purpose="invoicing", basis="contract")  # an invoice of a contract
    outs = s.request("ErasureRequested", T0 + DAY)
    assert only(outs, "ErasureExecuted")["retained"] == {"r-inv": "legal_obligation"}
    outs = s.send("RelationshipEnded", T0 + 10 * DAY, relationship_id="rel-1", kind="client")
    assert upserted(outs)["r-inv"]["retention_deadline"] == policy.post_contract_deadline(T0 + 10 * DAY)
    assert upserted(outs)["r-inv"]["restricted"] is True


def test_rule_erasure_keeps_records_under_legal_hold_until_released(policy: Policy) -> None:
    s = Subject(policy)
    s.collect(T0, "r-1")
    s.collect(T0, "r-bill", category="billing", purpose="invoicing")
    s.send("LegalHoldPlaced", T0 + DAY, hold_id="h-1", reason="litigation")
    outs = s.request("ErasureRequested", T0 + 2 * DAY)
    d = only(outs, "ErasureExecuted")
    assert d["erased"] == [] and d["retained"] == {"r-1": "legal_hold:h-1", "r-bill": "legal_obligation"}
    assert all(v["restricted"] for v in upserted(outs).values())
    s.ack_all(T0 + 3 * DAY)
    assert s.tick(T0 + 5000 * DAY) == []  # nothing expires under a hold
    outs = s.send("LegalHoldReleased", T0 + 30 * DAY, hold_id="h-1", reason="settled")
    assert tombstoned(outs) == ["r-1"]
    d = only(outs, "RetentionExpired")
    assert (d["record_id"], d["reason"], d["occurred_at"]) == ("r-1", "hold_released", T0 + 30 * DAY)
    assert "r-bill" in s.records and s.state["retained"] == {"r-bill": "legal_obligation"}


def test_rule_erasure_of_an_erased_subject_is_answered_not_repeated(policy: Policy) -> None:
    s = Subject(policy)
    s.collect(T0, "r-1")
    s.request("ErasureRequested", T0 + DAY, "q-1")
    outs = s.request("ErasureRequested", T0 + 2 * DAY, "q-2")
    d = only(outs, "RequestRejected")
    assert (d["request_id"], d["reason"]) == ("q-2", "subject_erased")
    assert s.state["requests"]["q-2"]["status"] == "rejected"
    missed = decisions(s.tick(T0 + 400 * DAY), "DeadlineMissed")
    assert {d["request_id"] for d in missed} == {"q-1"}  # only q-1 waits for acknowledgements


def sealed(key_id: str) -> dict[str, str]:
    """A field map as the guard seals it (one envelope under ``key_id``)."""
    return {"email": envelope.build(key_id, b"\x00" * 28)}


def test_rule_erasure_covers_data_collected_before_it_but_delivered_after(policy: Policy) -> None:
    s = Subject(policy)
    s.collect(T0, "r-1")
    s.request("ErasureRequested", T0 + DAY)  # runs at T0 + DAY + HOUR (the verification)
    outs = s.collect(T0 + HOUR, "r-late", fields=sealed("s-1/late"))  # collected before, arrives after
    d = only(outs, "RequestRejected")
    assert (d["reason"], d["request_id"], d["record_id"]) == ("covered_by_erasure", "q-1", "r-late")
    assert d["keys_destroyed"] == ["s-1/late"] and not upserted(outs)
    assert "r-late" not in s.records and s.state["keys"] == {}
    assert s.state["requests"]["q-1"]["status"] == "executed"  # the erasure still stands
    (erasure,) = export(s.state, policy)["erasures"]
    assert erasure["late_arrivals"] == ["r-late"] and erasure["at"] == T0 + DAY + HOUR


def test_rule_erasure_keeps_a_late_record_an_obligation_would_have_kept(policy: Policy) -> None:
    s = Subject(policy)
    s.collect(T0, "r-1")
    s.request("ErasureRequested", T0 + DAY)
    outs = s.collect(T0, "r-bill", category="billing", purpose="invoicing")  # an invoice, late
    rec = upserted(outs)["r-bill"]
    assert rec["restricted"] and s.state["retained"] == {"r-bill": "legal_obligation"}
    assert not decisions(outs)


def test_rule_erasure_data_collected_after_it_is_a_new_life(policy: Policy) -> None:
    s = Subject(policy)
    s.collect(T0, "r-1")
    s.request("ErasureRequested", T0 + DAY)
    outs = s.collect(T0 + 2 * DAY, "r-1")
    assert upserted(outs)["r-1"]["restricted"] is False and s.state["status"] == "active"


def test_rule_erasure_that_sent_nothing_downstream_completes_without_acknowledgements(policy: Policy) -> None:
    s = Subject(policy)
    s.send("RelationshipStarted", T0, relationship_id="rel-1", kind="client")  # known, but no data
    outs = s.request("ErasureRequested", T0 + DAY)
    executed, completed = only(outs, "ErasureExecuted"), only(outs, "ErasureCompleted")
    assert executed["erased"] == [] and completed["consumers"] == []
    assert s.state["requests"]["q-1"]["status"] == "completed"
    assert decisions(s.tick(T0 + 400 * DAY), "DeadlineMissed") == []  # nobody is blamed
    assert next_deadline(s.state) is None


def test_rule_erasure_export_names_the_consumers_still_awaited(policy: Policy) -> None:
    s = Subject(policy)
    s.collect(T0, "r-1")
    s.consent(T0, "newsletter")  # the snapshot goes to the mailer, the inquiry to the CRM mirror
    s.request("ErasureRequested", T0 + DAY)
    s.ack(T0 + 2 * DAY, "mailer", request_id="q-1")
    (req,) = export(s.state, policy)["requests"]
    assert req["acknowledged_by"] == ["mailer"] and req["awaiting"] == ["crm-mirror"]
    s.ack_all(T0 + 3 * DAY)
    (req,) = export(s.state, policy)["requests"]
    assert req["status"] == "completed" and req["awaiting"] == []


# ======================================================================================
# access / portability
# ======================================================================================


@pytest.mark.parametrize(("typ", "request_type"), [("AccessRequested", "access"), ("PortabilityRequested", "portability")])
def test_rule_access_portability_fulfilled_after_verification_with_a_json_export(
    policy: Policy, typ: str, request_type: str
) -> None:
    s = Subject(policy)
    s.consent(T0, "newsletter")
    s.collect(T0, "r-1", fields={"email": "ada@example.org"})
    assert s.request(typ, T0 + DAY, verify=False) == []
    outs = s.send("IdentityVerified", T0 + DAY + HOUR, request_id="q-1", method="email_link")
    d = only(outs, "RequestFulfilled")
    assert (d["request_id"], d["request_type"]) == ("q-1", request_type)
    data = export(s.state, policy)
    assert orjson.loads(orjson.dumps(data)) == data  # machine-readable JSON as is
    (rec,) = data["records"]
    assert rec["record_id"] == "r-1" and rec["fields"] == {"email": "ada@example.org"}
    assert rec["purpose"] == "inquiry" and rec["legal_basis"] == "legitimate_interest" and rec["category"] == "contact"
    assert rec["retention_deadline"] == policy.no_relationship_deadline(T0)
    assert data["consent"]["purposes"]["newsletter"]["status"] == "granted"
    assert data["consent_history"][0]["purpose"] == "newsletter"
    (req,) = data["requests"]
    assert req["status"] == "fulfilled" and req["verified"] and req["type"] == request_type


def test_rule_access_portability_after_erasure_is_an_empty_export(policy: Policy) -> None:
    s = Subject(policy)
    s.collect(T0, "r-1")
    s.request("ErasureRequested", T0 + DAY, "q-1")
    outs = s.request("AccessRequested", T0 + 2 * DAY, "q-2")
    assert only(outs, "RequestFulfilled")["request_type"] == "access"
    data = export(s.state, policy)
    assert data["records"] == [] and data["consent"] is None and data["status"] == "erased"


# ======================================================================================
# rectification / restriction / objection
# ======================================================================================


def test_rule_rectification_updates_the_record_after_verification(policy: Policy) -> None:
    s = Subject(policy)
    s.collect(T0, "r-1", fields={"email": "old@example.org", "name": "Ada"})
    outs = s.request("RectificationRequested", T0 + DAY, record_id="r-1", fields={"email": "new@example.org"})
    value = upserted(outs)["r-1"]
    assert value["fields"] == {"email": "new@example.org", "name": "Ada"}
    assert value["updated_at"] == T0 + DAY + HOUR
    assert only(outs, "RequestFulfilled")["request_type"] == "rectification"
    assert "fields" not in s.state["requests"]["q-1"]  # the correction is not kept twice


def test_rule_rectification_of_an_unknown_record_is_rejected(policy: Policy) -> None:
    s = Subject(policy)
    outs = s.request("RectificationRequested", T0, record_id="r-x", fields={"name": "X"})
    d = only(outs, "RequestRejected")
    assert (d["reason"], d["request_id"], d["record_id"]) == ("unknown_record", "q-1", "r-x")


@pytest.mark.parametrize(("typ", "reason"), [("RestrictionRequested", "restriction"), ("ObjectionRaised", "objection")])
def test_rule_restriction_objection_stop_the_purpose_downstream(policy: Policy, typ: str, reason: str) -> None:
    s = Subject(policy)
    s.collect(T0, "r-1", purpose="inquiry")
    s.collect(T0, "r-2", purpose="crm")
    outs = s.request(typ, T0 + DAY, purpose="inquiry")
    (snap,) = consent_changes(outs)
    assert snap["stopped"] == {"inquiry": {"reason": reason, "at": T0 + DAY + HOUR, "request_id": "q-1"}}
    assert upserted(outs) == {"r-1": {**s.records["r-1"]}} and s.records["r-1"]["restricted"] is True
    assert s.records["r-2"]["restricted"] is False
    if typ == "ObjectionRaised":  # a legitimate interest: stopped while the controller weighs it
        assert decisions(outs, "RequestFulfilled") == []
        outs = s.send("ObjectionDecided", T0 + 2 * DAY, request_id="q-1", upheld=True, notice="no grounds")
    d = only(outs, "RequestFulfilled")
    assert d["request_type"] == reason
    # a stopped purpose collects nothing more
    assert only(s.collect(T0 + 2 * DAY, "r-3", purpose="inquiry"), "RequestRejected")["reason"] == "purpose_stopped"


def test_rule_restriction_of_an_unknown_purpose_is_rejected(policy: Policy) -> None:
    s = Subject(policy)
    outs = s.request("RestrictionRequested", T0, purpose="astrology")
    assert only(outs, "RequestRejected")["reason"] == "unknown_purpose"


def test_rule_objection_alias_uses_same_rules(policy: Policy) -> None:
    s = Subject(policy)
    outs = s.request("ObjectionRaised", T0, purpose="analytics_cookies")
    assert consent_changes(outs)[0]["stopped"]["analytics_cookies"]["reason"] == "objection"


# ======================================================================================
# deadlines
# ======================================================================================


@pytest.mark.parametrize(
    "typ",
    [
        "AccessRequested",
        "PortabilityRequested",
        "ErasureRequested",
        "RectificationRequested",
        "RestrictionRequested",
        "ObjectionRaised",
    ],
)
def test_rule_deadlines_every_request_missed_once_after_one_month(policy: Policy, typ: str) -> None:
    # a policy that waits for a verification as long as it takes (no verification_wait_days)
    s = Subject(dataclasses.replace(policy, verification_wait_days=None))
    extra: dict[str, Any] = {}
    if typ == "RectificationRequested":
        extra = {"record_id": "r-1", "fields": {"name": "X"}}
    elif typ in ("RestrictionRequested", "ObjectionRaised"):
        extra = {"purpose": "inquiry"}  # of marketing, they need no verification, so are answered at once
    s.request(typ, T0, verify=False, **extra)
    deadline = ms("2024-02-15T10:00:00")
    assert next_deadline(s.state) == deadline
    assert s.tick(deadline - DAY) == []
    outs = s.tick(deadline + DAY)
    d = only(outs, "DeadlineMissed")
    assert (d["request_id"], d["deadline"], d["consumer"], d["occurred_at"]) == ("q-1", deadline, "", deadline + DAY)
    assert s.tick(deadline + 2 * DAY) == []  # once
    assert next_deadline(s.state) is None


def test_rule_deadlines_extended_once_by_two_months_with_a_recorded_notice(policy: Policy) -> None:
    s = Subject(dataclasses.replace(policy, verification_wait_days=None))
    s.request("AccessRequested", T0, verify=False)
    assert s.send("DeadlineExtended", T0 + 10 * DAY, request_id="q-1", notice="complex request") == []
    assert s.state["requests"]["q-1"]["extended"]["notice"] == "complex request"
    # three months would be 91 days; the US state laws the policy names allow 90 at most
    assert s.tick(ms("2024-04-14T09:59:59.999")) == []
    assert only(s.tick(ms("2024-04-14T10:00:00")), "DeadlineMissed")["deadline"] == T0 + 90 * DAY
    d = only(s.send("DeadlineExtended", T0 + 11 * DAY, request_id="q-1", notice="again"), "RequestRejected")
    assert d["reason"] == "already_extended"


@pytest.mark.parametrize(
    ("setup", "at", "reason"),
    [
        ("none", T0, "unknown_request"),
        ("late", ms("2024-02-16T00:00:00"), "deadline_passed"),
        ("answered", T0 + DAY, "request_closed"),
    ],
)
def test_rule_deadlines_extension_refused(policy: Policy, setup: str, at: int, reason: str) -> None:
    s = Subject(policy)
    if setup != "none":
        s.request("AccessRequested", T0, verify=setup == "answered")
    d = only(s.send("DeadlineExtended", at, request_id="q-1", notice="n"), "RequestRejected")
    assert d["reason"] == reason


def test_rule_deadlines_answered_request_is_never_missed(policy: Policy) -> None:
    s = Subject(policy)
    s.request("AccessRequested", T0)
    assert s.tick(T0 + 100 * DAY) == []


# ======================================================================================
# forbidden data, no profiling, no sale
# ======================================================================================


@pytest.mark.parametrize(
    "field", ["health", "religion", "ethnicity", "political_opinion", "sexual_orientation", "card_number", "iban"]
)
def test_rule_forbidden_data_field_names_map_into_forbidden_subtrees(policy: Policy, field: str) -> None:
    category = policy.forbidden_field_category(field)
    assert category is not None and policy.is_forbidden_category(category)


@pytest.mark.parametrize("purpose", ["profiling", "lead_scoring", "data_sale"])
def test_rule_no_profiling_no_sale_collection_and_consent_refused(policy: Policy, purpose: str) -> None:
    s = Subject(policy)
    outs = s.collect(T0, "r-1", purpose=purpose, basis="consent")
    assert only(outs, "RequestRejected")["reason"] == "forbidden_purpose"
    assert s.records == {}
    outs = s.consent(T0, purpose)
    d = only(outs, "RequestRejected")
    assert d["reason"] == "forbidden_purpose" and d["event_id"] == f"{s.log[-1]['event_id']}/RequestRejected/{purpose}"
    assert s.state["consent"] is None


# ======================================================================================
# processors and transfers
# ======================================================================================


def erased_subject(policy: Policy) -> Subject:
    """An erased subject whose data went to two consumers: an inquiry to the CRM mirror, a
    newsletter address and its consent to the mailer (ats and warehouse got nothing)."""
    s = Subject(policy)
    s.collect(T0, "r-1")
    s.consent(T0, "newsletter")
    s.collect(T0, "r-2", purpose="newsletter", category="contact")
    s.request("ErasureRequested", T0 + DAY)
    return s


RECIPIENTS = ["crm-mirror", "mailer"]


def test_rule_processors_erasure_complete_only_when_every_recipient_acknowledged(policy: Policy) -> None:
    s = erased_subject(policy)
    assert s.ack(T0 + 2 * DAY, "crm-mirror", request_id="q-1") == []
    assert s.ack(T0 + 2 * DAY, "ats", request_id="q-1") == []  # never sent anything: not awaited
    assert s.ack(T0 + 2 * DAY, "someone-else", request_id="q-1") == []  # not registered
    outs = s.ack(T0 + 3 * DAY, "mailer", request_id="q-1")
    d = only(outs, "ErasureCompleted")
    assert (d["request_id"], d["consumers"], d["occurred_at"]) == ("q-1", RECIPIENTS, T0 + 3 * DAY)
    assert s.ack(T0 + 4 * DAY, "mailer", request_id="q-1") == []  # once
    assert s.tick(T0 + 100 * DAY) == []


def test_promise_purpose_limitation_an_erasure_awaits_only_the_consumers_sent_the_data(policy: Policy) -> None:
    s = Subject(policy)
    s.collect(T0, "r-1", purpose="recruitment", category="employment")
    outs = s.request("ErasureRequested", T0 + DAY)
    assert only(outs, "ErasureExecuted")["erased"] == ["r-1"]
    (tomb,) = [o for o in outs if isinstance(o, RecordChange)]
    assert tomb.value is None and tomb.consumers == ("ats",)  # the tombstone goes where the CV went
    d = only(s.ack(T0 + 2 * DAY, "ats", request_id="q-1"), "ErasureCompleted")
    assert d["consumers"] == ["ats"]


def test_promise_purpose_limitation_each_change_names_only_the_consumers_of_its_purpose(policy: Policy) -> None:
    s = Subject(policy)
    (cv,) = s.collect(T0, "r-1", purpose="recruitment", category="employment")
    assert isinstance(cv, RecordChange) and cv.consumers == ("ats",)  # the mailer never gets a CV
    (snap,) = [o for o in s.consent(T0, "newsletter") if isinstance(o, ConsentChange)]
    assert snap.consumers == ("mailer",)
    (bill,) = s.collect(T0, "r-2", purpose="invoicing", category="billing")
    assert isinstance(bill, RecordChange) and bill.consumers == ("crm-mirror",)


def test_rule_processors_record_acknowledgements_count_when_they_cover_every_erased_record(policy: Policy) -> None:
    s = erased_subject(policy)
    s.ack(T0 + 2 * DAY, "mailer", request_id="q-1")
    assert s.ack(T0 + 2 * DAY, "crm-mirror", record_id="r-2") == []  # erased, but sent to the mailer only
    assert s.ack(T0 + 2 * DAY, "crm-mirror", record_id="r-3") == []  # no such record
    assert only(s.ack(T0 + 2 * DAY, "crm-mirror", record_id="r-1"), "ErasureCompleted")["consumers"] == RECIPIENTS


def test_rule_processors_each_consumer_acknowledges_by_record_only_what_it_was_sent(policy: Policy) -> None:
    s = erased_subject(policy)  # r-1 went to the CRM mirror, r-2 to the mailer
    assert s.ack(T0 + 2 * DAY, "mailer", record_id="r-2") == []  # the mailer is done, the mirror is not
    assert s.state["requests"]["q-1"]["acks"].keys() == {"mailer"}
    assert only(s.ack(T0 + 2 * DAY, "crm-mirror", record_id="r-1"), "ErasureCompleted")["consumers"] == RECIPIENTS


def test_rule_processors_a_consumer_sent_only_the_consent_acknowledges_its_deletion_without_ids(policy: Policy) -> None:
    """A reconcile of a consent feed acknowledges a subject's consent copy gone, naming no
    request and no record: it completes the part of a consumer that was sent nothing else."""
    s = Subject(policy)
    s.consent(T0, "newsletter")  # the mailer holds the consent, and nothing else of the subject
    s.request("ErasureRequested", T0 + DAY)
    assert s.state["requests"]["q-1"]["consumers"] == ["mailer"]
    assert s.ack(T0 + 2 * DAY, "crm-mirror") == []  # sent nothing: not awaited, changes nothing
    d = only(s.ack(T0 + 2 * DAY, "mailer"), "ErasureCompleted")
    assert (d["request_id"], d["consumers"]) == ("q-1", ["mailer"])
    assert s.ack(T0 + 3 * DAY, "mailer") == []  # once


def test_rule_processors_a_consumer_sent_records_is_not_done_by_its_consent_deletion(policy: Policy) -> None:
    s = erased_subject(policy)  # the mailer was sent r-2 and the consent
    s.ack(T0 + 2 * DAY, "crm-mirror", request_id="q-1")
    assert s.ack(T0 + 2 * DAY, "mailer") == []  # the consent copy is gone, r-2 not acknowledged yet
    assert "mailer" not in s.state["requests"]["q-1"]["acks"]
    assert only(s.ack(T0 + 2 * DAY, "mailer", record_id="r-2"), "ErasureCompleted")["consumers"] == RECIPIENTS


def test_rule_processors_missing_acknowledgement_by_the_deadline_is_missed_once_per_consumer(policy: Policy) -> None:
    s = erased_subject(policy)
    s.ack(T0 + 2 * DAY, "mailer", request_id="q-1")
    deadline = ms("2024-02-16T10:00:00")  # one month after the request was received
    assert next_deadline(s.state) == deadline
    assert s.tick(deadline - 1) == []
    outs = s.tick(deadline)
    assert [(d["consumer"], d["deadline"]) for d in decisions(outs, "DeadlineMissed")] == [("crm-mirror", deadline)]
    assert s.tick(deadline + DAY) == []
    assert next_deadline(s.state) is None
    # late acknowledgements still complete the erasure
    assert decisions(s.ack(deadline + 2 * DAY, "crm-mirror", request_id="q-1"), "ErasureCompleted")


def test_rule_processors_consumers_are_registered_with_role_and_region(policy: Policy) -> None:
    assert [c.name for c in policy.consumers] == CONSUMERS
    assert all(c.role in ("processor", "controller") and c.region for c in policy.consumers)


# ======================================================================================
# the fold's own contract
# ======================================================================================


def test_fold_tells_a_redelivery_from_a_conflicting_one_by_digest(policy: Policy) -> None:
    s = Subject(policy)
    first = {**s.event("ConsentGiven", T0, purpose="newsletter"), "digest": "d1"}
    assert redelivered(s.state, first["event_id"], "d1") is None
    s.apply(first)
    assert redelivered(s.state, first["event_id"], "d1") == "same"
    assert redelivered(s.state, first["event_id"], "d2") == "different"
    assert redelivered(s.state, first["event_id"], None) == "same"  # cannot tell: taken as the same
    unstamped = s.event("ConsentGiven", T0, purpose="newsletter")
    s.apply(unstamped)
    assert redelivered(s.state, unstamped["event_id"], "anything") == "same"


def test_fold_duplicate_event_id_changes_nothing_and_outputs_nothing(policy: Policy) -> None:
    s = Subject(policy)
    first = s.event(
        "DataCollected",
        T0,
        record_id="r-1",
        category="contact",
        purpose="inquiry",
        legal_basis="legitimate_interest",
        fields={"email": "a@x"},
    )
    assert upserted(s.apply(first))
    before = orjson.dumps(s.state)
    again = {**first, "fields": {"email": "changed@x"}}
    assert s.apply(again) == []
    assert orjson.dumps(s.state) == before


def test_fold_own_decisions_read_back_are_no_ops(policy: Policy) -> None:
    s = Subject(policy)
    s.collect(T0, "r-1")
    outs = s.request("ErasureRequested", T0 + DAY) + s.tick(T0 + 400 * DAY)
    produced = decisions(outs)
    assert {d["type"] for d in produced} == {"ErasureExecuted", "DeadlineMissed"}
    before = orjson.dumps(s.state)
    for d in produced:
        assert s.apply(d) == []
    assert orjson.dumps(s.state) == before


def test_fold_unseen_decisions_from_the_log_are_taken_as_already_taken(policy: Policy) -> None:
    # the live fold expired r-1 on its timer; a replay without that tick reads the decision
    live = Subject(policy)
    live.collect(T0, "r-1")
    live.collect(T0 + 200 * DAY, "r-2")
    recorded = decisions(live.tick(ms("2025-01-20T00:00:00")))
    replay = Subject(policy)
    for event in live.log[:-1]:
        replay.apply(event)
    outs = [o for d in recorded for o in replay.apply(d)]
    assert tombstoned(outs) == ["r-1"] and decisions(outs) == []
    assert replay.state == live.state
    assert replay.tick(ms("2025-01-20T00:00:00")) == []


def test_fold_unseen_erasure_decision_is_applied_with_its_recorded_lists(policy: Policy) -> None:
    s = Subject(policy)
    s.collect(T0, "r-1")
    s.collect(T0, "r-bill", category="billing", purpose="invoicing")
    s.request("ErasureRequested", T0 + DAY, verify=False)
    recorded = {
        "type": "ErasureExecuted",
        "event_id": "elsewhere/ErasureExecuted/q-1",
        "subject_id": "s-1",
        "occurred_at": T0 + 2 * DAY,
        "source": "lifecycle",
        "caused_by": "elsewhere",
        "request_id": "q-1",
        "erased": ["r-1"],
        "retained": {"r-bill": "legal_obligation"},
    }
    outs = s.apply(recorded)
    assert tombstoned(outs) == ["r-1"] and upserted(outs)["r-bill"]["restricted"] is True
    assert decisions(outs) == [] and s.state["status"] == "erased"
    assert s.send("IdentityVerified", T0 + 3 * DAY, request_id="q-1", method="m") == []  # already answered


def test_fold_decision_ids_are_deterministic_and_stamped_with_the_cause(policy: Policy) -> None:
    def run() -> list[dict]:
        s = Subject(policy)
        s.collect(T0, "r-1")
        return decisions(
            s.request("ErasureRequested", T0 + DAY) + s.tick(T0 + 400 * DAY) + s.collect(T0, "r-2", purpose="newsletter")
        )

    first, second = run(), run()
    assert first == second
    ids = [d["event_id"] for d in first]
    assert len(set(ids)) == len(ids)
    assert ids[0] == "s-1-e3/ErasureExecuted/q-1"
    assert ids[1].startswith("s-1/timer/DeadlineMissed/q-1/")


def test_fold_state_round_trips_through_orjson_unchanged(policy: Policy) -> None:
    s = Subject(policy)
    s.consent(T0, "newsletter")
    s.collect(T0, "r-1", purpose="newsletter")
    s.collect(T0, "r-bill", category="billing", purpose="invoicing")
    s.send("RelationshipStarted", T0, relationship_id="rel-1", kind="client")
    s.send("RelationshipEnded", T0 + DAY, relationship_id="rel-1", kind="client")
    s.send("LegalHoldPlaced", T0 + DAY, hold_id="h-1", reason="audit")
    s.request("RestrictionRequested", T0 + DAY, "q-0", purpose="newsletter")
    s.request("ErasureRequested", T0 + 2 * DAY)
    s.send("DeadlineExtended", T0 + 3 * DAY, request_id="q-1", notice="n")
    s.ack(T0 + 3 * DAY, "mailer", record_id="r-1")
    assert orjson.loads(orjson.dumps(s.state)) == s.state
    # and a state read back from JSON folds on exactly like the original
    copy = orjson.loads(orjson.dumps(s.state))
    tick = {"type": "Tick", "subject_id": "s-1"}
    assert apply(copy, tick, T0 + 9000 * DAY, policy)[1] == s.tick(T0 + 9000 * DAY)
    assert copy == s.state


def test_fold_upgrades_a_state_an_older_worker_persisted_so_an_erasure_awaits_every_consumer(policy: Policy) -> None:
    """An older worker sent everything to every consumer on one feed: each may hold the data,
    so none may be left out of the erasure, and a stop shown in its snapshot keeps holding."""
    s = Subject(policy)
    s.collect(T0, "r-1")
    s.consent(T0, "newsletter")
    s.request("ObjectionRaised", T0 + DAY, "q-0", purpose="analytics_cookies")
    old = orjson.loads(orjson.dumps(s.state))
    stops = old.pop("stops")
    del old["optouts"], old["sent"]
    state = upgrade(old, policy)
    assert state["stops"] == orjson.loads(orjson.dumps(stops))
    assert state["sent"] == {"r-1": CONSUMERS, "": CONSUMERS}
    s.state = state
    assert decisions(s.request("ErasureRequested", T0 + 2 * DAY), "ErasureExecuted")
    assert state["requests"]["q-1"]["consumers"] == CONSUMERS
    assert upgrade(state, policy) is state and state["sent"] == {}  # a current state is left alone


def test_fold_events_after_erasure_start_a_new_life_that_needs_consent_again(policy: Policy) -> None:
    s = Subject(policy)
    s.consent(T0, "newsletter")
    s.collect(T0, "r-1", purpose="newsletter")
    s.request("ErasureRequested", T0 + DAY)
    outs = s.collect(T0 + 2 * DAY, "r-2", purpose="newsletter")
    assert only(outs, "RequestRejected")["reason"] == "opted_out"  # the old consent is gone, the erasure suppresses
    assert s.state["status"] == "erased"
    s.consent(T0 + 3 * DAY, "newsletter")
    assert upserted(s.collect(T0 + 3 * DAY, "r-2", purpose="newsletter"))
    assert s.state["status"] == "active" and len(s.state["erasures"]) == 1
    # the new life can be erased in turn
    outs = s.request("ErasureRequested", T0 + 4 * DAY, "q-2")
    assert only(outs, "ErasureExecuted")["erased"] == ["r-2"]


def test_fold_requests_for_unknown_or_erased_subjects_never_crash(policy: Policy) -> None:
    s = Subject(policy)
    for i, typ in enumerate(["AccessRequested", "PortabilityRequested", "ErasureRequested"]):
        s.request(typ, T0 + i, f"q-{i}")
    s.request("RectificationRequested", T0, "q-r", record_id="r-9", fields={"name": "x"})
    s.request("ObjectionRaised", T0, "q-o", purpose="crm")
    s.send("LegalHoldReleased", T0, hold_id="h-x", reason="?")
    s.send("RelationshipEnded", T0, relationship_id="rel-x", kind="vendor")
    s.ack(T0, "mailer", request_id="q-unknown")
    s.ack(T0, "mailer")
    s.send("SomethingNew", T0)
    statuses = {rid: r["status"] for rid, r in s.state["requests"].items()}
    # the erasure of a subject nothing was held about sent nothing downstream: complete at once
    assert statuses == {"q-0": "fulfilled", "q-1": "fulfilled", "q-2": "completed", "q-r": "rejected", "q-o": "fulfilled"}


def test_fold_duplicate_request_id_is_rejected(policy: Policy) -> None:
    s = Subject(policy)
    s.request("AccessRequested", T0)
    assert only(s.request("AccessRequested", T0 + 1, verify=False), "RequestRejected")["reason"] == "duplicate_request"


def test_fold_next_deadline_is_the_earliest_decision_a_tick_could_take(policy: Policy) -> None:
    s = Subject(policy)
    assert next_deadline(s.state) is None
    s.collect(T0, "r-1")
    assert next_deadline(s.state) == policy.no_relationship_deadline(T0)
    s.request("AccessRequested", T0 + DAY, verify=False)
    assert next_deadline(s.state) == policy.verification_deadline(T0 + DAY)  # denied then if unverified
    s.send("LegalHoldPlaced", T0 + 2 * DAY, hold_id="h", reason="r")
    s.send("IdentityVerified", T0 + 2 * DAY, request_id="q-1", method="m")
    assert next_deadline(s.state) is None  # held records do not expire


def test_fold_outputs_are_in_a_deterministic_order(policy: Policy) -> None:
    s = Subject(policy)
    for rid in ["r-c", "r-a", "r-b"]:
        s.collect(T0, rid)
    outs = s.tick(T0 + 400 * DAY)
    assert [o.record_id for o in outs if isinstance(o, RecordChange)] == ["r-a", "r-b", "r-c"]


def test_fold_outputs_stay_valid_after_later_events(policy: Policy) -> None:
    s = Subject(policy)
    (first,) = s.collect(T0, "r-1")
    s.send("RelationshipStarted", T0 + DAY, relationship_id="rel", kind="client")
    assert first.value["retention_deadline"] == policy.no_relationship_deadline(T0)
    assert s.records["r-1"]["retention_deadline"] is None
