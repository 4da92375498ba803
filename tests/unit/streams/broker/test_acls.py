"""The ACL table of a secured broker, read as a table: each consumer of the policy reads its own
feeds and nothing else, the worker writes every feed, and a consumer cannot borrow the name
(and so the rights) of one of the pipeline's principals. The broker enforcing it is
``tests/integration/broker/test_purposes.py``."""

from __future__ import annotations

from pathlib import Path

import pytest

from processors.policy import parse_policy
from streams.broker.acls import Grant, grants
from streams.plumbing import security
from streams.settings import Settings, SettingsError, load_policy, packaged_policy_text

S = Settings(topic_prefix="acme.", app_id="app")


def reads(principal: str, table: list[Grant]) -> set[str]:
    return {g.name for g in table if g.principal == principal and g.resource == "topic" and g.operation == "READ"}


def test_each_consumer_reads_its_own_feeds_only() -> None:
    policy = load_policy(None)
    table = grants(S, policy)
    for c in policy.consumer_names:
        assert reads(c, table) == {f"acme.lifecycle.records.{c}", f"acme.lifecycle.consent.{c}"}, c
        mine = [g for g in table if g.principal == c]
        assert {(g.resource, g.name, g.operation, g.prefixed) for g in mine} == {
            ("topic", f"acme.lifecycle.records.{c}", "READ", False),
            ("topic", f"acme.lifecycle.consent.{c}", "READ", False),
            # their configs, for the sink to tell whether it was away longer than a tombstone lasts
            ("topic", f"acme.lifecycle.records.{c}", "DESCRIBE_CONFIGS", False),
            ("topic", f"acme.lifecycle.consent.{c}", "DESCRIBE_CONFIGS", False),
            ("topic", "acme.lifecycle.acks", "WRITE", False),
            ("group", f"app-sink-{c}", "READ", False),  # its own sink's group, no other consumer's
        }, c
    assert reads("downstream", table) == {"acme.lifecycle.records", "acme.lifecycle.consent"}


def test_the_worker_writes_every_feed_and_a_new_consumer_gets_its_own(tmp_path: Path) -> None:
    text = packaged_policy_text() + '\n[consumers.helpdesk]\nrole = "processor"\nregion = "eu-west"\npurposes = ["inquiry"]\n'
    (tmp_path / "policy.toml").write_text(text)
    s = Settings(topic_prefix="acme.", app_id="app", policy_file=tmp_path / "policy.toml")
    table = grants(s)  # the settings' policy file
    writes = {g.name for g in table if g.principal == "worker" and g.operation == "WRITE"}
    consumers = load_policy(s.policy_file).consumer_names
    assert "helpdesk" in consumers
    assert {f"acme.lifecycle.{kind}.{c}" for c in consumers for kind in ("records", "consent")} <= writes
    assert reads("helpdesk", table) == {"acme.lifecycle.records.helpdesk", "acme.lifecycle.consent.helpdesk"}


@pytest.mark.parametrize("name", security.PRINCIPALS)
def test_a_consumer_named_like_a_pipeline_principal_is_refused(name: str) -> None:
    policy = parse_policy(packaged_policy_text().replace("[consumers.ats]", f"[consumers.{name}]"), "policy.toml")
    with pytest.raises(SettingsError, match=rf"consumer '{name}': the name of one of the pipeline's own Kafka principals"):
        grants(S, policy)
    with pytest.raises(SettingsError):
        security.principals(policy)
