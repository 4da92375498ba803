"""Who in the worker group holds which partitions of ``lifecycle.ingest``, as the broker says.

Why one place: the views ask it to find the worker that owns a subject, the benchmark to know
when a group has settled, the failover tests to check the split; each had its own reading of
the group's description.
"""

from __future__ import annotations

from typing import Any

from streams.plumbing.admin import cluster_admin
from streams.settings import Settings


def ingest_owners(settings: Settings, admin: Any = None) -> tuple[bool, list[tuple[str, set[int]]]]:
    """(whether the group is stable, each member's client id and the ingest partitions it holds).

    ``admin`` is a librdkafka admin client to reuse (one is built for the call otherwise).
    Raises what librdkafka raises when the group or its coordinator cannot be described.
    """
    from confluent_kafka import ConsumerGroupState

    if admin is None:
        admin = cluster_admin(settings)
    group = admin.describe_consumer_groups([settings.app_id], request_timeout=10)[settings.app_id].result()
    ingest = settings.topic("ingest")
    members = []
    for member in group.members:
        owned = member.assignment.topic_partitions if member.assignment else []
        members.append((member.client_id, {tp.partition for tp in owned if tp.topic == ingest}))
    return group.state == ConsumerGroupState.STABLE, members
