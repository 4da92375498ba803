"""Who may do what on the project's topics: the ACLs of a secured broker, as one table.

Why these and no more: each principal gets what its role in DESIGN needs, so a leaked
password exposes one role, not the pipeline.

- ``upstream`` systems only hand events in: WRITE ``lifecycle.ingest``. They cannot read
  anything back, not even what they wrote.
- ``downstream`` consumers see the state they copy (READ ``lifecycle.records`` and
  ``lifecycle.consent``), acknowledge deletions (WRITE ``lifecycle.acks``), and commit their
  offsets in groups of their own (``<app_id>-sink-*``, see ``streams/commands/sink.py``).
- ``auditor`` replays the log of record: READ ``lifecycle.events``, nothing else.
- ``worker`` is the pipeline: its input and output topics, ``lifecycle.keys`` (the wrapped
  data keys, which no one else reads or writes), its consumer group and the subjects' state
  changelog it creates, named after the app id (``<app_id>-subjects-changelog``).
- ``admin`` is a super user in the broker's config (it creates the topics and these ACLs),
  so it needs no entry here.
- The whole-topic scans of ``streams/plumbing/scan.py`` (the replay, ``keys rotate``) run on
  librdkafka, which looks up the coordinator of a group it names but never joins: the
  principals that scan (``auditor``, ``worker``) may DESCRIBE that one group, nothing more.

The broker refuses whatever is not listed (``allow.everyone.if.no.acl.found=false``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from streams.plumbing.scan import SCAN_GROUP  # the replay scans find its coordinator: DESCRIBE only
from streams.settings import Settings


class AclError(Exception):
    """The broker refused to create some of the ACLs."""


@dataclass(frozen=True)
class Grant:
    principal: str
    resource: str  # "topic" or "group"
    name: str
    operation: str  # a kafka ACLOperation name: READ, WRITE, ALL, ...
    prefixed: bool = False


def grants(settings: Settings) -> list[Grant]:
    t = settings.topic
    app = settings.app_id
    worker_reads = ("ingest", "events", "keys", "acks")
    worker_writes = ("events", "rejected", "records", "consent", "keys")
    return [
        Grant("upstream", "topic", t("ingest"), "WRITE"),
        Grant("downstream", "topic", t("records"), "READ"),
        Grant("downstream", "topic", t("consent"), "READ"),
        Grant("downstream", "topic", t("acks"), "WRITE"),
        Grant("downstream", "group", f"{app}-sink-", "READ", prefixed=True),
        Grant("auditor", "topic", t("events"), "READ"),
        Grant("auditor", "group", SCAN_GROUP, "DESCRIBE"),
        Grant("worker", "group", SCAN_GROUP, "DESCRIBE"),
        *(Grant("worker", "topic", t(n), "READ") for n in worker_reads),
        *(Grant("worker", "topic", t(n), "WRITE") for n in worker_writes),
        # the state changelog, created by the worker itself
        *(Grant("worker", "topic", f"{app}-", op, prefixed=True) for op in ("CREATE", "READ", "WRITE")),
        Grant("worker", "group", app, "READ"),
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
