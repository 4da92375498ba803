"""Who may do what on the project's topics: the ACLs of a secured broker, as one table.

Why these and no more: each principal gets what its role in DESIGN needs, so a leaked
password exposes one role, not the pipeline.

- ``upstream`` systems only hand events in: WRITE ``lifecycle.ingest``. They cannot read
  anything back, not even what they wrote.
- Each consumer the policy registers logs in under its own name (``mailer``, ``ats``, ...,
  ``streams.plumbing.security.consumer_principals``) and reads its own feeds only (READ
  ``lifecycle.records.<consumer>`` and ``lifecycle.consent.<consumer>``), which carry nothing
  but the purposes it serves: purpose limitation enforced by the broker, not by the consumer's
  good manners, so the mailer cannot read a CV even if it asks. It may read those feeds'
  configs (DESCRIBE_CONFIGS): its sink compares how long it was away with the feed's
  ``delete.retention.ms`` to know whether it missed a tombstone. It acknowledges deletions
  (WRITE ``lifecycle.acks``) and commits its offsets in its own sink group,
  ``<app_id>-sink-<consumer>`` (see ``streams/commands/sink.py``), and in no other consumer's.
- ``downstream`` reads the complete feeds (READ ``lifecycle.records`` and ``lifecycle.consent``):
  for tools that show the whole state (``lifecycle consent``, the demo) and for a copy that is
  entitled to every purpose. It may acknowledge (WRITE ``lifecycle.acks``) and commit in groups
  of its own (``<app_id>-sink-*``). A consumer with a narrower remit must not be given it.
- ``auditor`` replays the log of record: READ ``lifecycle.events``, nothing else.
- ``worker`` is the pipeline: its input and output topics (every consumer's feeds among them),
  ``lifecycle.keys`` (the wrapped data keys, which no one else reads or writes), its consumer
  group and the subjects' state changelog it creates, named after the app id
  (``<app_id>-subjects-changelog``). It may read the configs of all of them (DESCRIBE_CONFIGS,
  never ALTER_CONFIGS): it refuses to start on a topic whose configs break a promise
  (``streams.plumbing.topics.check``). With ``LIFECYCLE_GUARANTEE=exactly_once`` its producer
  is transactional, under ids of its own (``<app_id>-worker-*``, ``streams.worker.clients``).
- ``admin`` is a super user in the broker's config (it creates the topics and these ACLs),
  so it needs no entry here.
- The whole-topic scans of ``streams/plumbing/scan.py`` (the replay, ``keys rotate``) run on
  librdkafka, which looks up the coordinator of a group it names but never joins: the
  principals that scan (``auditor``, ``worker``) may DESCRIBE that one group, nothing more.

The broker refuses whatever is not listed (``allow.everyone.if.no.acl.found=false``). What an
ACL cannot say: which consumer an acknowledgement names. Any principal that may write
``lifecycle.acks`` could acknowledge in another consumer's name.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from processors.messages import CONSENT, RECORDS, feed
from processors.policy import Policy
from streams.plumbing import security
from streams.plumbing.scan import SCAN_GROUP  # the replay scans find its coordinator: DESCRIBE only
from streams.plumbing.topics import NAMES, feeds
from streams.settings import Settings, load_policy


class AclError(Exception):
    """The broker refused to create some of the ACLs."""


@dataclass(frozen=True)
class Grant:
    principal: str
    resource: str  # "topic", "group" or "transactional_id"
    name: str
    operation: str  # a kafka ACLOperation name: READ, WRITE, ALL, ...
    prefixed: bool = False


def grants(settings: Settings, policy: Policy | None = None) -> list[Grant]:
    """The ACLs for the settings' topic prefix and app id, and for the consumers of ``policy``
    (by default the settings' policy file)."""
    policy = load_policy(settings.policy_file) if policy is None else policy
    t = settings.topic
    app = settings.app_id
    worker_reads = ("ingest", "events", "keys", "acks")
    worker_writes = ("events", "rejected", "records", "consent", "keys", *feeds(policy))
    return [
        Grant("upstream", "topic", t("ingest"), "WRITE"),
        *(
            grant
            for c in security.consumer_principals(policy)
            for grant in (
                Grant(c, "topic", t(feed(RECORDS, c)), "READ"),
                Grant(c, "topic", t(feed(CONSENT, c)), "READ"),
                Grant(c, "topic", t(feed(RECORDS, c)), "DESCRIBE_CONFIGS"),
                Grant(c, "topic", t(feed(CONSENT, c)), "DESCRIBE_CONFIGS"),
                Grant(c, "topic", t("acks"), "WRITE"),
                Grant(c, "group", f"{app}-sink-{c}", "READ"),
            )
        ),
        Grant("downstream", "topic", t("records"), "READ"),
        Grant("downstream", "topic", t("consent"), "READ"),
        Grant("downstream", "topic", t("acks"), "WRITE"),
        Grant("downstream", "group", f"{app}-sink-", "READ", prefixed=True),
        Grant("auditor", "topic", t("events"), "READ"),
        Grant("auditor", "group", SCAN_GROUP, "DESCRIBE"),
        Grant("worker", "group", SCAN_GROUP, "DESCRIBE"),
        *(Grant("worker", "topic", t(n), "READ") for n in worker_reads),
        *(Grant("worker", "topic", t(n), "WRITE") for n in worker_writes),
        *(Grant("worker", "topic", t(n), "DESCRIBE_CONFIGS") for n in (*NAMES, *feeds(policy))),
        # the state changelog, created by the worker itself
        *(Grant("worker", "topic", f"{app}-", op, prefixed=True) for op in ("CREATE", "READ", "WRITE", "DESCRIBE_CONFIGS")),
        Grant("worker", "group", app, "READ"),
        Grant("worker", "transactional_id", f"{app}-worker-", "WRITE", prefixed=True),
    ]


def apply(admin_settings: Settings, wanted: list[Grant] | None = None, timeout: float = 30.0) -> int:
    """Creates the ACLs (Kafka ignores one that exists already); returns how many were asked for.

    ``admin_settings`` must connect as a super user. Returns once the broker enforces them:
    the controller acknowledges new ACLs a moment before the broker's authorizer has them, and
    a client starting in that moment would be refused.
    """
    from kafka.admin import (
        ACL,
        ACLFilter,
        ACLOperation,
        ACLPermissionType,
        ACLResourcePatternType,
        ResourcePattern,
        ResourcePatternFilter,
        ResourceType,
    )

    from streams.plumbing.admin import admin

    wanted = grants(admin_settings) if wanted is None else wanted
    acls = [
        ACL(
            principal=f"User:{g.principal}",
            host="*",
            operation=ACLOperation[g.operation],
            permission_type=ACLPermissionType.ALLOW,
            resource_pattern=ResourcePattern(
                ResourceType[g.resource.upper()],
                g.name,
                ACLResourcePatternType.PREFIXED if g.prefixed else ACLResourcePatternType.LITERAL,
            ),
        )
        for g in wanted
    ]
    client = admin(admin_settings)
    everything = ACLFilter(
        principal=None, host=None, operation=ACLOperation.ANY, permission_type=ACLPermissionType.ANY,
        resource_pattern=ResourcePatternFilter(ResourceType.ANY, None, ACLResourcePatternType.ANY),
    )  # fmt: skip
    try:
        result = client.create_acls(acls)
        failed = result.get("failed") or []  # error classes, one per refused ACL
        if failed:
            raise AclError(f"creating {len(failed)} of {len(acls)} ACLs failed: {failed[0].__name__}")
        deadline = time.monotonic() + timeout
        while not set(acls) <= set(client.describe_acls(everything)[0]):
            if time.monotonic() > deadline:
                raise AclError(f"the broker does not enforce the new ACLs within {timeout:.0f} s")
            time.sleep(0.1)
    finally:
        client.close()
    return len(acls)


def add_users(admin_settings: Settings, passwords: Mapping[str, str], timeout: float = 30.0) -> list[str]:
    """Creates the SCRAM credentials the broker does not have yet (both SCRAM-SHA-512 and
    -256, with the same ``passwords``); returns the users that got any, once the broker knows them.

    Why besides the format tool's: that one adds users to a new home only, so a consumer
    registered in the policy after the first start would otherwise get a password the broker
    never heard of, and a home formatted before SCRAM-SHA-256 was offered would lack those.
    Credentials the broker has are kept: their salted passwords are the ones in use.
    ``admin_settings`` must connect as a super user.
    """
    from kafka.admin import UserScramCredentialUpsertion

    from streams.plumbing.admin import admin

    def known(client: Any) -> set[tuple[str, str]]:
        out: set[tuple[str, str]] = set()
        for user, info in client.describe_user_scram_credentials().items():
            for cred in info.get("credential_infos") or ():
                out.add((user, cred["mechanism"].name.replace("_", "-")))
        return out

    client = admin(admin_settings)
    try:
        missing = sorted({(u, m) for u in passwords for m in security.SCRAM} - known(client))
        if not missing:
            return []
        for mechanism in security.SCRAM:  # the broker alters a user's credential once per request
            batch = [UserScramCredentialUpsertion(u, m, passwords[u]) for u, m in missing if m == mechanism]
            if not batch:
                continue
            result = client.alter_user_scram_credentials(batch)
            failed = sorted(u for u, error in result.items() if error)
            if failed:
                raise AclError(f"creating the SCRAM users {', '.join(failed)} failed: {result[failed[0]]}")
        deadline = time.monotonic() + timeout
        while not set(missing) <= known(client):
            if time.monotonic() > deadline:
                raise AclError(f"the broker does not know the new SCRAM users within {timeout:.0f} s")
            time.sleep(0.1)
    finally:
        client.close()
    return sorted({u for u, _ in missing})
