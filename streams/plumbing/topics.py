"""DESIGN's topics and the configs that make their promises true, created through the admin client.

Why each setting:
- ``events`` is the log of record: kept forever (no time or size limit).
- ``ingest`` holds plaintext personal data before the guard encrypts it, so it expires quickly.
- ``ingest`` and ``acks`` stamp each message with the broker's clock (``LogAppendTime``), the
  time the guard holds an event's ``occurred_at`` against (``future_time``): a producer's own
  timestamp would let the producer's clock decide.
- ``records``, ``consent`` and ``keys`` are compacted state, and so is each consumer's own feed
  (``records.<consumer>``, ``consent.<consumer>``: ``processors.messages.feed``). A tombstone only erases once the
  cleaner has rewritten the segment holding the old value, so segments roll every
  ``compaction_lag_ms`` and ``max.compaction.lag.ms`` forces the cleaner onto them; the
  tombstone itself is dropped after ``delete.retention.ms`` (long enough for a consumer that
  is a few minutes behind to still see it).
"""

from __future__ import annotations

from collections.abc import Iterable

from processors.messages import CONSENT, RECORDS, feed
from processors.policy import Policy
from streams.plumbing.admin import cluster_admin, opened
from streams.settings import Settings, load_policy

NAMES = ("ingest", "events", "rejected", "records", "consent", "keys", "acks")


def feeds(policy: Policy) -> tuple[str, ...]:
    """Every consumer's own feeds, by short name: what it alone may read."""
    return tuple(feed(topic, c) for c in policy.consumer_names for topic in (RECORDS, CONSENT))


def configs(settings: Settings) -> dict[str, dict[str, str]]:
    lag = str(settings.compaction_lag_ms)
    compacted = {
        "cleanup.policy": "compact",
        "segment.ms": lag,
        "max.compaction.lag.ms": lag,
        "min.compaction.lag.ms": "0",
        "min.cleanable.dirty.ratio": "0.01",
        "delete.retention.ms": str(max(settings.compaction_lag_ms, 60_000)),
    }
    return {
        "ingest": {
            "cleanup.policy": "delete",
            "retention.ms": str(settings.ingest_retention_ms),
            "segment.ms": str(min(settings.ingest_retention_ms, 3_600_000)),
            "message.timestamp.type": "LogAppendTime",
        },
        "events": {"cleanup.policy": "delete", "retention.ms": "-1", "retention.bytes": "-1"},
        "rejected": {"cleanup.policy": "delete", "retention.ms": str(90 * 24 * 3600 * 1000)},
        "records": dict(compacted),
        "consent": dict(compacted),
        "keys": dict(compacted),
        "acks": {
            "cleanup.policy": "delete",
            "retention.ms": str(90 * 24 * 3600 * 1000),
            "message.timestamp.type": "LogAppendTime",
        },
    }


STATE_MAX_BYTES = 16 * 1024 * 1024
"""The largest subject state the worker can keep: one message on its state changelog."""


def changelog_topic(settings: Settings) -> str:
    """The worker's state changelog (one per app id): the truth of its subjects table."""
    return f"{settings.app_id}-subjects-changelog"


def changelog_config() -> dict[str, str]:
    """Compacted, taking a state up to ``STATE_MAX_BYTES``."""
    return {"cleanup.policy": "compact", "max.message.bytes": str(STATE_MAX_BYTES)}


def partition_for(key: bytes, partitions: int) -> int:
    """The partition of a keyed message as the Java client and kafka-python choose it (murmur2).

    Why it matters: a subject's state, data keys and log partition are all the partition its
    events arrive on, so anything written on a subject's behalf must land there too.
    """
    from kafka.partitioner.default import murmur2

    return int(murmur2(key) & 0x7FFFFFFF) % partitions


def ensure_topics(settings: Settings, names: Iterable[str] | None = None) -> list[str]:
    """Create whichever of the topics is missing (by default DESIGN's and the feeds of every
    consumer in the settings' policy); returns the names created."""
    if names is None:
        names = (*NAMES, *feeds(load_policy(settings.policy_file)))
    wanted = configs(settings)
    return create_missing(settings, {settings.topic(n): wanted[n.split(".", 1)[0]] for n in names})


def create_missing(settings: Settings, topics: dict[str, dict[str, str]]) -> list[str]:
    """Create whichever of ``topics`` (full name -> configs) is missing; returns the names created."""
    from kafka.admin import NewTopic
    from kafka.errors import TopicAlreadyExistsError

    with opened(settings) as admin:
        existing = set(admin.list_topics())
        new = [
            NewTopic(name, settings.partitions, 1, topic_configs=conf) for name, conf in topics.items() if name not in existing
        ]
        if new:
            try:
                admin.create_topics(new)
            except TopicAlreadyExistsError:
                pass  # another process won the race; the topic is there, which is all we need
        return [t.name for t in new]


def delete_prefixed(settings: Settings, prefix: str) -> list[str]:
    """Delete every topic whose name starts with ``prefix``; returns the names deleted. For
    scratch topics (the benchmark's), which would otherwise pile up on the user's broker."""
    with opened(settings) as admin:
        doomed = sorted(t for t in admin.list_topics() if t.startswith(prefix))
        if doomed:
            admin.delete_topics(doomed, timeout_ms=30_000)
        return doomed


def describe_configs(settings: Settings, topic: str) -> dict[str, str]:
    """The live configuration of one topic (every key, defaults included), as the broker has it."""
    from confluent_kafka.admin import ConfigResource  # type: ignore[attr-defined]  # exported at run time, not in the stubs

    resource = ConfigResource(ConfigResource.Type.TOPIC, topic)
    client = cluster_admin(settings)  # kept referenced until the answer is in: its handle serves the future
    entries = client.describe_configs([resource], request_timeout=30)[resource].result(timeout=30)
    return {name: entry.value for name, entry in entries.items()}
