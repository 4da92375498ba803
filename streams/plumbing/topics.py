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
  tombstone itself is kept ``delete.retention.ms`` = ``LIFECYCLE_TOMBSTONE_RETENTION_MS`` (7
  days): the longest a downstream consumer may be away and still see the deletion. Keeping it
  short buys no privacy (the value is gone with compaction either way), only missed deletions.
- Every topic, changelogs included, has ``LIFECYCLE_REPLICATION`` copies (by default the
  smaller of 3 and the cluster's broker count) and needs ``LIFECYCLE_MIN_INSYNC`` of them for a
  write (2 with 3 copies or more): ``lifecycle.events`` is kept forever and ``lifecycle.keys``
  lost would erase everything, so a single broker's disk must not be their only copy.
  Producers write with ``acks=all``, so a write below min.insync is refused, never half-kept.

``check`` compares live topics with all of this, for ``lifecycle topics check`` and the
worker's start.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass

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
        "delete.retention.ms": str(settings.tombstone_retention_ms),
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


class ReplicationError(ValueError):
    """The replication settings cannot be met by the cluster (one line naming the setting)."""


def replication(settings: Settings, brokers: int) -> tuple[int, int]:
    """(replication factor, min.insync.replicas) for a cluster of ``brokers``."""
    factor = settings.replication or min(3, brokers)
    if factor > brokers:
        raise ReplicationError(
            f"LIFECYCLE_REPLICATION={factor}, but the cluster has {brokers} broker(s): at most {brokers} copies"
        )
    insync = settings.min_insync or (2 if factor >= 3 else 1)
    if insync > factor:
        raise ReplicationError(f"LIFECYCLE_MIN_INSYNC={insync} exceeds the replication factor {factor}: no write could succeed")
    return factor, insync


def broker_count(admin: object) -> int:
    return len(admin.describe_cluster()["brokers"])  # type: ignore[attr-defined]


def create_missing(settings: Settings, topics: dict[str, dict[str, str]]) -> list[str]:
    """Create whichever of ``topics`` (full name -> configs) is missing, replicated as the
    settings say; returns the names created."""
    from kafka.admin import NewTopic
    from kafka.errors import TopicAlreadyExistsError

    with opened(settings) as admin:
        factor, insync = replication(settings, broker_count(admin))
        existing = set(admin.list_topics())
        new = [
            NewTopic(name, settings.partitions, factor, topic_configs={**conf, "min.insync.replicas": str(insync)})
            for name, conf in topics.items()
            if name not in existing
        ]
        if new:
            try:
                admin.create_topics(new)
            except TopicAlreadyExistsError:
                pass  # another process won the race; the topic is there, which is all we need
            # the creation is acknowledged a moment before the broker lists (and serves) a
            # topic: whoever created it uses it next, so return once it is there
            names = {t.name for t in new}
            deadline = time.monotonic() + 30
            while not names <= set(admin.list_topics()) and time.monotonic() < deadline:
                time.sleep(0.2)
        return [t.name for t in new]


CO_PARTITIONED = ("ingest", "acks", "events", "keys")
"""Topics whose partition *p* belongs to one worker together (with the state changelog): a
subject's events, acknowledgements, log entries and data keys. Their counts must agree, and
agree with ``LIFECYCLE_PARTITIONS``, which the worker routes by."""


@dataclass(frozen=True)
class Deviation:
    """One live topic setting that breaks a promise: what it is and what it must be."""

    topic: str
    setting: str
    found: str
    needed: str

    def line(self) -> str:
        return f"{self.topic}: {self.setting} is {self.found}, needs {self.needed}"


def wanted_topics(settings: Settings) -> dict[str, dict[str, str]]:
    """Every topic the project needs (full name -> the configs it creates it with)."""
    wanted = configs(settings)
    names = (*NAMES, *feeds(load_policy(settings.policy_file)))
    topics = {settings.topic(n): wanted[n.split(".", 1)[0]] for n in names}
    topics[changelog_topic(settings)] = changelog_config()
    return topics


def _ms(value: str | None) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def _config_deviations(name: str, short: str, live: dict[str, str], settings: Settings) -> list[Deviation]:
    """What one topic's live configs break, given which of the project's topics it is."""
    out: list[Deviation] = []

    def need(setting: str, ok: bool, needed: str) -> None:
        if not ok:
            out.append(Deviation(name, setting, live.get(setting, "unset"), needed))

    base = short.split(".", 1)[0]
    compacted = base in ("records", "consent", "keys") or short == "changelog"
    policy = live.get("cleanup.policy", "")
    if compacted:
        need("cleanup.policy", policy == "compact", "compact (a tombstone must delete the value it follows)")
    elif base in ("events", "ingest", "acks", "rejected"):
        need("cleanup.policy", "compact" not in policy, "delete (compaction would drop events of the same subject)")
    if base == "events":
        need("retention.ms", _ms(live.get("retention.ms")) == -1, "-1 (the log of record is kept forever)")
        need("retention.bytes", _ms(live.get("retention.bytes")) == -1, "-1 (the log of record is kept forever)")
    if base == "ingest":
        held = _ms(live.get("retention.ms"))
        need(
            "retention.ms",
            held is not None and 0 <= held <= settings.ingest_retention_ms,
            f"at most {settings.ingest_retention_ms} (plaintext personal data must not linger)",
        )
    if base in ("ingest", "acks"):
        need(
            "message.timestamp.type", live.get("message.timestamp.type") == "LogAppendTime", "LogAppendTime (the broker's clock)"
        )
    if compacted and short != "changelog":
        lag = settings.compaction_lag_ms
        for setting in ("segment.ms", "max.compaction.lag.ms"):
            held = _ms(live.get(setting))
            need(setting, held is not None and 0 < held <= lag, f"at most {lag} (an erased value must be compacted away)")
        held = _ms(live.get("delete.retention.ms"))
        need(
            "delete.retention.ms",
            held is not None and held >= settings.tombstone_retention_ms,
            f"at least {settings.tombstone_retention_ms} (a consumer away that long must still see a deletion)",
        )
    return out


def check(settings: Settings) -> list[Deviation]:
    """Every deviation of the live topics from what the promises need: missing topics,
    partition counts, replication and min.insync, and the configs of ``_config_deviations``."""
    from confluent_kafka.admin import ConfigResource  # type: ignore[attr-defined]  # exported at run time, not in the stubs

    wanted = wanted_topics(settings)
    client = cluster_admin(settings)
    metadata = client.list_topics(timeout=30)
    brokers = len(metadata.brokers)
    factor, insync = replication(settings, brokers)
    out: list[Deviation] = []
    present = [n for n in wanted if n in metadata.topics]
    for name in wanted:
        if name not in metadata.topics:
            out.append(Deviation(name, "topic", "missing", "created (lifecycle topics create)"))
    resources = [ConfigResource(ConfigResource.Type.TOPIC, n) for n in present]
    described = client.describe_configs(resources, request_timeout=30) if resources else {}
    changelog = changelog_topic(settings)
    short_of = {settings.topic(n): n for n in (*NAMES, *feeds(load_policy(settings.policy_file)))}
    short_of[changelog] = "changelog"
    for resource, future in described.items():
        name = resource.name
        live = {k: e.value for k, e in future.result(timeout=30).items()}
        out.extend(_config_deviations(name, short_of[name], live, settings))
        held = _ms(live.get("min.insync.replicas"))
        if held is None or held < insync:
            out.append(Deviation(name, "min.insync.replicas", live.get("min.insync.replicas", "unset"), f"at least {insync}"))
    for name in present:
        parts = metadata.topics[name].partitions
        copies = min((len(p.replicas) for p in parts.values()), default=0)
        if copies < factor:
            out.append(Deviation(name, "replication factor", str(copies), f"{factor} (LIFECYCLE_REPLICATION)"))
        short = short_of[name]
        if short in CO_PARTITIONED or short == "changelog":
            if len(parts) != settings.partitions:
                out.append(
                    Deviation(
                        name, "partitions", str(len(parts)),
                        f"{settings.partitions} (LIFECYCLE_PARTITIONS; co-partitioned with lifecycle.ingest and the state)",
                    )
                )  # fmt: skip
    return sorted(out, key=lambda d: (d.topic, d.setting))


def delete_prefixed(settings: Settings, prefix: str) -> list[str]:
    """Delete every topic whose name starts with ``prefix``; returns the names deleted. For
    scratch topics (the benchmark's), which would otherwise pile up on the user's broker."""
    with opened(settings) as admin:
        doomed = sorted(t for t in admin.list_topics() if t.startswith(prefix))
        if doomed:
            admin.delete_topics(doomed, timeout_ms=30_000)
        return doomed


def describe_configs(settings: Settings, topic: str, timeout: float = 30.0) -> dict[str, str]:
    """The live configuration of one topic (every key, defaults included), as the broker has it."""
    from confluent_kafka.admin import ConfigResource  # type: ignore[attr-defined]  # exported at run time, not in the stubs

    resource = ConfigResource(ConfigResource.Type.TOPIC, topic)
    client = cluster_admin(settings)  # kept referenced until the answer is in: its handle serves the future
    entries = client.describe_configs([resource], request_timeout=timeout)[resource].result(timeout=timeout)
    return {name: entry.value for name, entry in entries.items()}
