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

import pytest

from processors.policy import Policy
from streams.settings import load_policy
from tests.support.fold import DAY, T0, Subject, decisions, only, upserted


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
