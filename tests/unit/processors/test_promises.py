"""The promises a privacy officer signs off, each case run through the real fold.

Read as a privacy lawyer would, the first rules were careful where the design was explicit and
loose where it left a choice open. Each test here is one such case, named for the promise it
keeps; where a rule is about order, a property test folds every arrival order.

| promise                                          | tests                                         |
| ------------------------------------------------ | --------------------------------------------- |
| purpose x category x basis                       | test_promise_purpose_*                        |
| retention by the purposes a relationship serves  | test_promise_retention_*                      |
| direct marketing is one thing                    | test_promise_direct_marketing_*               |
| objection and restriction as the law reads       | test_promise_objection_*, _restriction_*      |
| deadlines                                        | test_promise_deadline_*                       |
| a versioned policy                               | test_promise_policy_version_*                 |
| the access export per art. 15                    | test_promise_export_*                         |
| purpose-limited downstream                       | test_promise_downstream_*                     |
"""

from __future__ import annotations

import copy
import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support.fold import DAY, T0, Subject, decisions, only, tombstoned, upserted

from processors.fold import adopt, apply, export, next_deadline
from processors.policy import Policy, add_months, parse_policy
from streams.settings import load_policy


@pytest.fixture(scope="module")
def policy() -> Policy:
    return load_policy()


def refusal(outs: list, reason: str | None = None) -> str:
    (d,) = decisions(outs, "RequestRejected")
    assert reason is None or d["reason"] == reason, d["reason"]
    return str(d["reason"])


# ======================================================================================
# purpose x category x basis
# ======================================================================================


def test_promise_purpose_obligation_follows_the_purpose_not_the_category_label(policy: Policy) -> None:
    """A newsletter record filed as ``billing`` is no tax record: it is refused, not kept six
    years and through an erasure as a legal obligation."""
    s = Subject(policy)
    s.consent(T0 - DAY, "newsletter")
    refusal(s.collect(T0, "r-news", category="billing", purpose="newsletter"), "category_not_allowed")
    assert "r-news" not in s.records
    s.collect(T0, "r-inv", category="billing", purpose="invoicing", basis="contract")
    executed = only(s.request("ErasureRequested", T0 + DAY), "ErasureExecuted")
    assert executed["retained"] == {"r-inv": "legal_obligation"}


@pytest.mark.parametrize(
    ("purpose", "category", "basis", "consent"),
    [
        ("invoicing", "billing", "contract", False),  # collected for the contract, kept under tax law
        ("invoicing", "billing", "legal_obligation", False),
        ("inquiry", "contact", "contract", False),  # a quote or a demo the person asked for
        ("recruitment", "employment", "consent", True),  # a CV kept in the talent pool
        ("service_delivery", "contact", "legitimate_interest", False),  # a client's employee
    ],
)
def test_promise_purpose_accepts_each_legal_basis_the_policy_lists(
    policy: Policy, purpose: str, category: str, basis: str, consent: bool
) -> None:
    s = Subject(policy)
    if consent:
        s.consent(T0 - DAY, purpose)
    outs = s.collect(T0, "r-1", category=category, purpose=purpose, basis=basis)
    assert decisions(outs) == [] and upserted(outs)["r-1"]["legal_basis"] == basis


@pytest.mark.parametrize(
    ("purpose", "category", "basis", "reason"),
    [
        ("marketing_email", "contact", "legitimate_interest", "legal_basis_mismatch"),  # a consent purpose
        ("newsletter", "contact", "contract", "legal_basis_mismatch"),
        ("analytics_cookies", "analytics", "legitimate_interest", "legal_basis_mismatch"),
        ("crm", "contact", "legal_obligation", "legal_basis_mismatch"),  # would survive an erasure
        ("recruitment", "employment", "consent", "no_consent"),  # the talent pool needs the consent given
        ("service_delivery", "employment", "contract", "category_not_allowed"),
        ("inquiry", "billing", "legitimate_interest", "category_not_allowed"),
    ],
)
def test_promise_purpose_refuses_a_basis_or_category_it_does_not_list(
    policy: Policy, purpose: str, category: str, basis: str, reason: str
) -> None:
    s = Subject(policy)
    refusal(s.collect(T0, "r-1", category=category, purpose=purpose, basis=basis), reason)
    assert s.records == {}


# ======================================================================================
# retention by the purposes a relationship serves
# ======================================================================================


def test_promise_retention_an_open_vendor_relationship_keeps_no_marketing_or_analytics_data(policy: Policy) -> None:
    s = Subject(policy)
    s.consent(T0 - DAY, "newsletter")
    s.consent(T0 - DAY, "analytics_cookies")
    s.collect(T0, "r-news", purpose="newsletter")
    s.collect(T0, "r-web", category="analytics", purpose="analytics_cookies", fields={"ip_address": "192.0.2.1"})
    s.send("RelationshipStarted", T0 + DAY, relationship_id="rel-v", kind="vendor")
    deadline = policy.no_relationship_deadline(T0)
    assert {rid: r["retention_deadline"] for rid, r in s.records.items()} == {"r-news": deadline, "r-web": deadline}
    assert sorted(tombstoned(s.tick(deadline))) == ["r-news", "r-web"]


def test_promise_retention_a_client_relationship_keeps_its_own_purposes_only(policy: Policy) -> None:
    s = Subject(policy)
    s.consent(T0 - DAY, "newsletter")
    s.send("RelationshipStarted", T0, relationship_id="rel-c", kind="client")
    s.collect(T0, "r-svc", purpose="service_delivery")
    s.collect(T0, "r-inv", category="billing", purpose="invoicing", fields={"vat_id": "DE123"})
    s.collect(T0, "r-news", purpose="newsletter")
    assert s.records["r-svc"]["retention_deadline"] is None and s.records["r-inv"]["retention_deadline"] is None
    assert s.records["r-news"]["retention_deadline"] == policy.no_relationship_deadline(T0)
    assert tombstoned(s.tick(policy.no_relationship_deadline(T0))) == ["r-news"]  # the client stays one


def test_promise_retention_applicant_data_expires_though_the_application_was_never_closed(policy: Policy) -> None:
    s = Subject(policy)
    s.send("RelationshipStarted", T0, relationship_id="app-1", kind="applicant")
    s.collect(T0, "r-cv", category="employment", purpose="recruitment", fields={"cv": "ten years of Kafka"})
    ends = policy.relationships["applicant"].max_months
    assert ends == 6
    deadline = max(policy.no_relationship_deadline(T0), policy.grace_deadline(add_months(T0, 6)))
    assert s.records["r-cv"]["retention_deadline"] == deadline  # no RelationshipEnded ever came
    outs = s.tick(deadline)
    assert tombstoned(outs) == ["r-cv"]


def test_promise_retention_republishing_a_record_unchanged_does_not_restart_its_clock(policy: Policy) -> None:
    """A nightly CRM sync re-publishes every contact as it is; the worker stamps such a
    collection ``unchanged``, and the record keeps the deadline of its real collection."""
    s = Subject(policy)
    s.collect(T0, "r-1", purpose="crm")
    first = s.records["r-1"]["retention_deadline"]
    for night in range(1, 200):
        assert s.send(
            "DataCollected", T0 + night * DAY, record_id="r-1", category="contact", purpose="crm",
            legal_basis="legitimate_interest", fields={"email": "ada@example.org", "name": "Ada"}, unchanged=True,
        ) == []  # fmt: skip
    assert s.records["r-1"]["retention_deadline"] == first
    assert tombstoned(s.tick(first)) == ["r-1"]
    # a changed record is a new collection: its clock starts again
    s.collect(T0 + 400 * DAY, "r-2", purpose="crm")
    outs = s.collect(T0 + 500 * DAY, "r-2", purpose="crm", fields={"email": "ada@new.example.org"})
    assert upserted(outs)["r-2"]["retention_deadline"] == policy.no_relationship_deadline(T0 + 500 * DAY)


def test_promise_retention_a_legal_hold_keeps_only_the_records_it_names(policy: Policy) -> None:
    s = Subject(policy)
    s.collect(T0, "r-inv-1", category="billing", purpose="invoicing", basis="contract", fields={"vat_id": "DE1"})
    s.collect(T0, "r-crm", purpose="crm")
    s.collect(T0, "r-ask", purpose="inquiry")
    s.send("LegalHoldPlaced", T0 + DAY, hold_id="h-dispute", reason="case 2024/7", records=["r-ask"])
    s.send("LegalHoldPlaced", T0 + DAY, hold_id="h-tax", reason="audit 2024", categories=["billing"])
    assert tombstoned(s.tick(policy.no_relationship_deadline(T0))) == ["r-crm"]  # no hold names it
    executed = only(s.request("ErasureRequested", T0 + 400 * DAY), "ErasureExecuted")
    assert executed["retained"] == {"r-ask": "legal_hold:h-dispute", "r-inv-1": "legal_obligation"}
    outs = s.send("LegalHoldReleased", T0 + 401 * DAY, hold_id="h-dispute", reason="settled")
    assert tombstoned(outs) == ["r-ask"] and "r-inv-1" in s.records


# ======================================================================================
# direct marketing is one thing
# ======================================================================================


def email_marketing_subject(policy: Policy) -> Subject:
    s = Subject(policy)
    s.consent(T0, "newsletter")
    s.consent(T0, "marketing_email")
    s.collect(T0, "r-news", purpose="newsletter")
    s.collect(T0, "r-sales", purpose="crm")  # legitimate interest: no consent was ever asked
    s.collect(T0, "r-ask", purpose="inquiry")
    return s


def test_promise_direct_marketing_an_objection_to_one_purpose_stops_all_of_it_at_once(policy: Policy) -> None:
    s = email_marketing_subject(policy)
    outs = s.request("ObjectionRaised", T0 + DAY, purpose="marketing_email", verify=False)  # art. 21(3)
    assert only(outs, "RequestFulfilled")["occurred_at"] == T0 + DAY  # no identity check, no month's wait
    assert set(s.state["consent"]["stopped"]) == {"marketing_email", "newsletter", "crm"}
    assert s.records["r-news"]["restricted"] and s.records["r-sales"]["restricted"]
    assert not s.records["r-ask"]["restricted"]  # answering their question is no marketing
    refusal(s.collect(T0 + 2 * DAY, "r-sales-2", purpose="crm"), "opted_out")
    refusal(s.collect(T0 + 2 * DAY, "r-news-2", purpose="newsletter"), "opted_out")


def test_promise_direct_marketing_an_unsubscribe_stops_legitimate_interest_sales_email(policy: Policy) -> None:
    s = email_marketing_subject(policy)
    s.send("Unsubscribed", T0 + DAY, channel="email")
    assert s.records["r-sales"]["restricted"] is True
    refusal(s.collect(T0 + 2 * DAY, "r-sales-2", purpose="crm"), "opted_out")
    assert upserted(s.collect(T0 + 2 * DAY, "r-ask-2", purpose="inquiry"))


def test_promise_direct_marketing_an_opt_out_before_any_consent_is_recorded(policy: Policy) -> None:
    s = Subject(policy)
    s.send("Unsubscribed", T0 + DAY, channel="email")  # the mailer's unsubscribe, first to arrive
    assert s.state["consent"]["purposes"]["newsletter"]["status"] == "withdrawn"
    assert s.consent(T0, "newsletter") == []  # the older consent, arriving later, grants nothing
    refusal(s.collect(T0 + 2 * DAY, "r-1", purpose="newsletter"), "opted_out")
    s.consent(T0 + 3 * DAY, "newsletter")  # a new consent, after the opt-out: their newest word
    assert upserted(s.collect(T0 + 3 * DAY, "r-1", purpose="newsletter"))
    refusal(s.collect(T0 + 3 * DAY, "r-2", purpose="marketing_email"), "opted_out")  # no word on that one


def test_promise_direct_marketing_a_stale_crm_sync_cannot_lift_a_newer_withdrawal(policy: Policy) -> None:
    s = Subject(policy)
    s.consent(T0, "newsletter")
    s.send("ConsentWithdrawn", T0 + 2 * DAY, purpose="newsletter")
    assert s.consent(T0 + DAY, "newsletter") == []  # yesterday's CRM export, synced today
    assert s.state["consent"]["purposes"]["newsletter"]["status"] == "withdrawn"
    assert [e["status"] for e in s.state["consent_history"]["newsletter"]] == ["granted", "withdrawn", "granted"]
    refusal(s.collect(T0 + 3 * DAY, "r-1", purpose="newsletter"), "no_consent")


def test_promise_direct_marketing_an_erasure_leaves_a_suppression_that_holds(policy: Policy) -> None:
    import orjson

    s = email_marketing_subject(policy)
    s.send("Unsubscribed", T0 + DAY, channel="email")
    s.request("ErasureRequested", T0 + 2 * DAY)
    erased_at = s.state["erasures"][0]["at"]
    text = orjson.dumps(s.state).decode()
    assert "ada@example.org" not in text and "Ada" not in text
    assert s.state["optouts"] == {
        "email": {"at": T0 + DAY, "reason": "unsubscribe", "request_id": ""},
        "*": {"at": erased_at, "reason": "erasure", "request_id": "q-1"},
    }  # a channel and a time: nothing to identify the person by
    # the next CRM import: last month's consent, and the contact again
    refusal(s.consent(T0, "newsletter"), "covered_by_erasure")
    refusal(s.collect(erased_at + DAY, "r-sales", purpose="crm"), "opted_out")
    refusal(s.collect(erased_at + DAY, "r-news", purpose="newsletter"), "opted_out")
    assert upserted(s.collect(erased_at + DAY, "r-ask", purpose="inquiry"))  # not marketing: a new life
    # only a fresh consent, after the erasure, brings its purpose back
    s.consent(erased_at + 2 * DAY, "newsletter")
    assert upserted(s.collect(erased_at + 2 * DAY, "r-news", purpose="newsletter"))
    refusal(s.collect(erased_at + 2 * DAY, "r-sales", purpose="crm"), "opted_out")


def test_promise_direct_marketing_a_restriction_of_marketing_needs_no_verification(policy: Policy) -> None:
    s = email_marketing_subject(policy)
    outs = s.request("RestrictionRequested", T0 + DAY, purpose="newsletter", verify=False)
    assert only(outs, "RequestFulfilled")["request_type"] == "restriction"
    assert set(s.state["consent"]["stopped"]) == {"newsletter"} and s.records["r-news"]["restricted"]
    # an erasure still waits for the subject's identity: it destroys data
    assert decisions(s.request("ErasureRequested", T0 + 2 * DAY, "q-2", verify=False)) == []


DM_WORDS = st.lists(
    st.tuples(
        st.sampled_from(
            [
                ("ConsentGiven", "newsletter"),
                ("ConsentGiven", "marketing_email"),
                ("ConsentGiven", "crm"),
                ("ConsentWithdrawn", "newsletter"),
                ("ConsentWithdrawn", "marketing_email"),
                ("Unsubscribed", "email"),
                ("ObjectionRaised", "crm"),
            ]
        ),
        st.integers(min_value=0, max_value=6),  # days after T0; equal days happen, and must not matter
    ),
    min_size=1,
    max_size=8,
)


def _dm_event(n: int, word: tuple[str, str], day: int) -> dict:
    typ, what = word
    base = {"type": typ, "event_id": f"w-{n}", "subject_id": "s-1", "occurred_at": T0 + day * DAY, "source": "crm"}
    if typ == "Unsubscribed":
        return {**base, "channel": what}
    if typ == "ObjectionRaised":
        return {**base, "request_id": f"q-{n}", "purpose": what}
    return {**base, "purpose": what}


def _verdicts(policy: Policy, events: list[dict]) -> dict[str, object]:
    s = Subject(policy)
    for e in events:
        s.apply(e)
    snap = s.state["consent"]
    statuses = {p: e["status"] for p, e in (snap["purposes"] if snap else {}).items()}
    allowed = {}
    for purpose in policy.direct_marketing:
        trial = copy.deepcopy(s.state)
        _, outs = apply(trial, {"type": "DataCollected", "event_id": f"try-{purpose}", "subject_id": "s-1",
                                "occurred_at": T0 + 30 * DAY, "source": "crm", "record_id": f"r-{purpose}",
                                "category": "contact", "purpose": purpose,
                                "legal_basis": policy.purposes[purpose].legal_bases[0], "fields": {"email": "x"}}, 0, policy)  # fmt: skip
        allowed[purpose] = not decisions(outs)
    return {"statuses": statuses, "stopped": sorted(snap["stopped"]) if snap else [], "allowed": allowed}


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(DM_WORDS, st.randoms(use_true_random=False))
def test_promise_direct_marketing_the_latest_word_wins_whatever_the_arrival_order(
    policy: Policy, words: list, rng: random.Random
) -> None:
    """Consents, withdrawals, unsubscribes and objections about direct marketing, folded in the
    order they happened and in any other order, leave the same consent and the same answer to
    the next collection for each marketing purpose."""
    events = [_dm_event(n, word, day) for n, (word, day) in enumerate(words)]
    in_time = sorted(events, key=lambda e: (e["occurred_at"], e["event_id"]))
    shuffled = events[:]
    rng.shuffle(shuffled)
    assert _verdicts(policy, shuffled) == _verdicts(policy, in_time)


# ======================================================================================
# objection and restriction as the law reads
# ======================================================================================


def test_promise_objection_to_a_legal_obligation_is_refused_and_the_next_invoice_is_kept(policy: Policy) -> None:
    s = Subject(policy)
    s.collect(T0, "r-inv-1", purpose="invoicing", category="billing")
    outs = s.request("ObjectionRaised", T0 + DAY, purpose="invoicing", verify=False)
    refusal(outs, "objection_not_applicable")  # at once: nothing to verify to say no
    assert not s.records["r-inv-1"]["restricted"]
    assert upserted(s.collect(T0 + 2 * DAY, "r-inv-2", purpose="invoicing", category="billing"))


def test_promise_objection_to_a_legitimate_interest_stops_it_until_the_controller_decides(policy: Policy) -> None:
    s = Subject(policy)
    s.collect(T0, "r-cv", purpose="recruitment", category="employment")
    assert s.request("ObjectionRaised", T0 + DAY, purpose="recruitment", verify=False) == []  # who asks?
    outs = s.send("IdentityVerified", T0 + 2 * DAY, request_id="q-1", method="email_link")
    assert s.records["r-cv"]["restricted"] and decisions(outs) == []  # stopped, not yet answered
    refusal(s.collect(T0 + 3 * DAY, "r-cv2", purpose="recruitment", category="employment"), "purpose_stopped")
    outs = s.send("ObjectionDecided", T0 + 4 * DAY, request_id="q-1", upheld=False, notice="open position")
    refusal(outs, "compelling_legitimate_grounds")
    assert not s.records["r-cv"]["restricted"] and s.state["consent"]["stopped"] == {}
    assert upserted(s.collect(T0 + 5 * DAY, "r-cv2", purpose="recruitment", category="employment"))
    refusal(s.send("ObjectionDecided", T0 + 6 * DAY, request_id="q-1", upheld=True, notice="n"), "request_closed")


def test_promise_objection_upheld_keeps_the_purpose_stopped(policy: Policy) -> None:
    s = Subject(policy)
    s.collect(T0, "r-1", purpose="service_delivery")
    s.request("ObjectionRaised", T0 + DAY, purpose="service_delivery")
    outs = s.send("ObjectionDecided", T0 + 2 * DAY, request_id="q-1", upheld=True, notice="no overriding grounds")
    assert only(outs, "RequestFulfilled")["request_type"] == "objection"
    assert s.records["r-1"]["restricted"] and "service_delivery" in s.state["consent"]["stopped"]


def test_promise_objection_to_a_consent_purpose_is_a_withdrawal_needing_no_verification(policy: Policy) -> None:
    s = Subject(policy)
    s.consent(T0, "analytics_cookies")
    s.collect(T0, "r-1", purpose="analytics_cookies", category="analytics")
    outs = s.request("ObjectionRaised", T0 + DAY, purpose="analytics_cookies", verify=False)
    assert only(outs, "RequestFulfilled")["request_type"] == "objection" and s.records["r-1"]["restricted"]


def test_promise_restriction_for_a_legal_claim_keeps_records_past_their_deadline(policy: Policy) -> None:
    s = Subject(policy)
    s.collect(T0, "r-1")  # an inquiry: kept 12 months without a relationship
    s.collect(T0, "r-2", purpose="service_delivery")
    deadline = policy.no_relationship_deadline(T0)
    s.request("RestrictionRequested", T0 + DAY, purpose="inquiry", keep_for_claims=True)
    assert next_deadline(s.state) == s.records["r-2"]["retention_deadline"]  # r-1 is not due any more
    assert tombstoned(s.tick(deadline + DAY)) == ["r-2"]
    assert "r-1" in s.records and s.records["r-1"]["restricted"]
    # lifting it is an explicit event, with the notice the subject was given
    outs = s.send("RestrictionLifted", deadline + 2 * DAY, request_id="q-1", notice="claim settled")
    assert s.state["consent"]["stopped"] == {} and not s.records["r-1"]["restricted"] and decisions(outs) == []
    assert s.state["requests"]["q-1"]["lifted"]["notice"] == "claim settled"
    assert next_deadline(s.state) == deadline
    assert tombstoned(s.tick(deadline + 3 * DAY)) == ["r-1"]
    refusal(s.send("RestrictionLifted", deadline + 4 * DAY, request_id="q-1", notice="again"), "not_restricted")


def test_promise_restriction_without_a_claim_does_not_stop_expiry(policy: Policy) -> None:
    s = Subject(policy)
    s.collect(T0, "r-1")
    s.request("RestrictionRequested", T0 + DAY, purpose="inquiry")
    assert tombstoned(s.tick(policy.no_relationship_deadline(T0))) == ["r-1"]  # restricted is no reason to keep


def test_promise_restriction_is_not_lifted_by_a_new_consent(policy: Policy) -> None:
    s = Subject(policy)
    s.consent(T0, "analytics_cookies")
    s.collect(T0, "r-1", purpose="analytics_cookies", category="analytics")
    s.request("RestrictionRequested", T0 + DAY, purpose="analytics_cookies")
    s.consent(T0 + 2 * DAY, "analytics_cookies")  # a cookie banner clicked again
    assert "analytics_cookies" in s.state["consent"]["stopped"] and s.records["r-1"]["restricted"]
    refusal(s.collect(T0 + 3 * DAY, "r-2", purpose="analytics_cookies", category="analytics"), "purpose_stopped")


# ======================================================================================
# deadlines
# ======================================================================================


@pytest.mark.parametrize("typ", ["AccessRequested", "ErasureRequested", "PortabilityRequested"])
def test_promise_deadline_a_verification_that_never_comes_is_a_refusal_not_a_missed_deadline(policy: Policy, typ: str) -> None:
    s = Subject(policy)
    s.collect(T0, "r-1")
    s.request(typ, T0, verify=False)
    wait = policy.verification_deadline(T0)
    assert wait == T0 + 21 * DAY and next_deadline(s.state) == wait
    assert s.tick(wait - 1) == []
    d = only(s.tick(wait), "RequestDenied")
    assert (d["request_id"], d["reason"]) == ("q-1", "identity_not_verified")
    assert s.state["requests"]["q-1"]["status"] == "denied"
    assert decisions(s.tick(policy.request_deadline(T0) + DAY)) == []  # no DeadlineMissed after it
    assert decisions(s.send("IdentityVerified", wait + DAY, request_id="q-1", method="id_document")) == []
    assert "r-1" in s.records  # a denied erasure erases nothing


def test_promise_deadline_a_denied_rectification_keeps_none_of_its_new_values(policy: Policy) -> None:
    s = Subject(policy)
    s.collect(T0, "r-1")
    s.request("RectificationRequested", T0, verify=False, record_id="r-1", fields={"name": "New Name"})
    only(s.tick(policy.verification_deadline(T0)), "RequestDenied")
    assert "fields" not in s.state["requests"]["q-1"]


def test_promise_deadline_never_more_than_90_days_even_extended(policy: Policy) -> None:
    for received in (T0, add_months(T0, 1), add_months(T0, 6)):
        assert policy.request_deadline(received, extended=True) - received <= 90 * DAY


# ======================================================================================
# a versioned policy
# ======================================================================================


def next_edition(policy: Policy, old: str, new: str) -> Policy:
    text = policy.text.replace(old, new)
    assert text != policy.text
    return parse_policy(text)


def test_promise_policy_version_every_record_and_decision_names_the_policy_it_followed(policy: Policy) -> None:
    s = Subject(policy)
    (rec,) = s.collect(T0, "r-1")
    assert rec.value["policy"] == policy.version and len(policy.version) == 16
    (d,) = decisions(s.request("AccessRequested", T0 + DAY))
    assert d["policy"] == policy.version


def test_promise_policy_version_a_consent_to_a_changed_meaning_must_be_renewed(policy: Policy) -> None:
    newer = next_edition(policy, "(the policy's own example of consent)", "(and partner offers)")
    assert newer.purposes["newsletter"].meaning != policy.purposes["newsletter"].meaning
    s = Subject(policy)
    s.consent(T0, "newsletter")
    s.consent(T0, "marketing_email")
    outs = adopt(s.state, newer, T0 + 10 * DAY, "policy/x/0/9")
    (snap,) = [o.value for o in outs if o.value is not None and "purposes" in o.value]
    assert snap["purposes"]["newsletter"]["status"] == "renewal_needed"  # the mailer sees it at once
    assert snap["purposes"]["marketing_email"]["status"] == "granted"  # its meaning is unchanged
    s.policy = newer
    refusal(s.collect(T0 + 11 * DAY, "r-1", purpose="newsletter"), "consent_needs_renewal")
    s.consent(T0 + 5 * DAY, "newsletter")  # given before the change, delivered late: not to the new meaning
    refusal(s.collect(T0 + 11 * DAY, "r-1", purpose="newsletter"), "consent_needs_renewal")
    s.consent(T0 + 12 * DAY, "newsletter")
    assert upserted(s.collect(T0 + 12 * DAY, "r-1", purpose="newsletter"))


def test_promise_policy_version_a_shorter_retention_applies_to_data_held_a_longer_one_does_not(policy: Policy) -> None:
    s = Subject(policy)
    s.collect(T0, "r-1")
    twelve = s.records["r-1"]["retention_deadline"]
    shorter = next_edition(policy, "no_relationship_months = 12", "no_relationship_months = 6")
    adopt(s.state, shorter, T0 + DAY, "policy/a/0/1")
    assert s.records["r-1"]["retention_deadline"] == add_months(T0, 6)
    longer = next_edition(policy, "no_relationship_months = 12", "no_relationship_months = 24")
    s2 = Subject(policy)
    s2.collect(T0, "r-1")
    assert adopt(s2.state, longer, T0 + DAY, "policy/b/0/1") == []
    assert s2.records["r-1"]["retention_deadline"] == twelve


# ======================================================================================
# the access export per art. 15
# ======================================================================================


def test_promise_export_names_each_records_source_origin_recipients_and_retention_rule(policy: Policy) -> None:
    s = Subject(policy)
    s.send(
        "DataCollected", T0, record_id="r-lead", category="third_party", purpose="inquiry",
        legal_basis="legitimate_interest", fields={"name": "Ada"}, origin="business directory",
    )  # fmt: skip
    s.collect(T0, "r-cv", purpose="recruitment", category="employment")
    s.collect(T0, "r-inv", purpose="invoicing", category="billing")
    by_id = {r["record_id"]: r for r in export(s.state, policy)["records"]}
    lead = by_id["r-lead"]
    assert (lead["source"], lead["origin"]) == ("test", "business directory")  # art. 14: where it came from
    assert lead["recipients"] == [
        {
            "consumer": "crm-mirror",
            "description": policy.consumers[1].description,
            "role": "controller",
            "region": "us-east",
            "transfer": "standard_contractual_clauses",
        }
    ]
    assert lead["retention_rule"] == "kept 12 months from collection, as no business relationship followed, until 2025-01-15"
    assert [(r["consumer"], r["region"], r["transfer"]) for r in by_id["r-cv"]["recipients"]] == [("ats", "eu-central", None)]
    assert by_id["r-inv"]["retention_rule"].startswith("kept 6 years for tax law")
    assert all(r["policy"] == policy.version for r in by_id.values())


def test_promise_export_lists_the_opt_outs_kept_on_record(policy: Policy) -> None:
    s = Subject(policy)
    s.send("Unsubscribed", T0, channel="email")
    data = export(s.state, policy)
    assert [(o["channel"], o["reason"], o["at"]) for o in data["opt_outs"]] == [("email", "unsubscribe", T0)]
