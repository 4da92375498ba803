"""Which feed each fold output reaches: purpose limitation as the broker will enforce it.

Every change also goes to the complete feeds (``lifecycle.records``, ``lifecycle.consent``);
each consumer's own feed carries only the records of the purposes it serves, and consent
snapshots cut down to those purposes, so a consumer granted only its feeds cannot read what
it is not there for.
"""

from __future__ import annotations

import pytest
from support.fold import DAY, T0, Subject

from processors.messages import CONSENT, RECORDS, Message, feed, to_messages
from processors.policy import Policy
from schemas.codec import decode
from streams.settings import load_policy


@pytest.fixture(scope="module")
def policy() -> Policy:
    return load_policy()


def sent(outputs: list, policy: Policy) -> list[Message]:  # type: ignore[type-arg]
    messages, _ = to_messages(outputs, b"", policy)
    return messages


def test_a_cv_reaches_the_applicant_tracking_feed_and_the_complete_feed_only(policy: Policy) -> None:
    s = Subject(policy)
    topics = [m.topic for m in sent(s.collect(T0, "r-cv", purpose="recruitment", category="employment"), policy)]
    assert topics == [RECORDS, feed(RECORDS, "ats")]  # never records.mailer


def test_a_consent_snapshot_reaches_each_consumer_cut_to_the_purposes_it_serves(policy: Policy) -> None:
    s = Subject(policy)
    s.consent(T0, "analytics_cookies")
    messages = sent(s.consent(T0 + 1, "newsletter"), policy)
    by_topic = {m.topic: decode(m.value) for m in messages if m.value is not None}
    assert set(by_topic) == {CONSENT, feed(CONSENT, "mailer"), feed(CONSENT, "warehouse")}
    assert set(by_topic[CONSENT]["purposes"]) == {"analytics_cookies", "newsletter"}
    assert set(by_topic[feed(CONSENT, "mailer")]["purposes"]) == {"newsletter"}
    assert set(by_topic[feed(CONSENT, "warehouse")]["purposes"]) == {"analytics_cookies"}


def test_an_erasure_tombstones_each_feed_that_held_the_data_with_the_request_named(policy: Policy) -> None:
    s = Subject(policy)
    s.collect(T0, "r-1")  # an inquiry: the CRM mirror's
    s.collect(T0, "r-cv", purpose="recruitment", category="employment")
    tombstones = [m for m in sent(s.request("ErasureRequested", T0 + DAY), policy) if m.value is None]
    assert sorted(m.topic for m in tombstones) == sorted([RECORDS, feed(RECORDS, "crm-mirror"), RECORDS, feed(RECORDS, "ats")])
    assert all(m.headers == [("request_id", b"q-1")] for m in tombstones)
