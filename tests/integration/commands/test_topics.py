"""``lifecycle topics create | check`` and the worker's start on the real broker: a topic that
would break a promise is named, and the worker refuses to run on it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from streams.plumbing.admin import opened
from streams.settings import Settings


def cli(settings: Settings, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LIFECYCLE_")}
    env.update(settings.to_env())
    return subprocess.run([sys.executable, "-m", "streams.cli", *args], env=env, capture_output=True, text=True, timeout=timeout)


def alter(settings: Settings, topic: str, **configs: str) -> None:
    """Change one topic's settings the way an operator would (incrementally, the rest kept)."""
    from confluent_kafka.admin import AlterConfigOpType, ConfigEntry, ConfigResource  # type: ignore[attr-defined]

    from streams.plumbing.admin import cluster_admin

    entries = [ConfigEntry(k.replace("_", "."), v, incremental_operation=AlterConfigOpType.SET) for k, v in configs.items()]
    resource = ConfigResource(ConfigResource.Type.TOPIC, topic, incremental_configs=entries)
    client = cluster_admin(settings)  # kept referenced until the answer is in: its handle serves the future
    for future in client.incremental_alter_configs([resource]).values():
        future.result(timeout=30)


@pytest.mark.integration
def test_topics_check_names_a_log_of_record_that_would_expire_and_the_worker_refuses_it(
    settings: Settings, tmp_path: Path
) -> None:
    created = cli(settings, "topics", "create")
    assert created.returncode == 0, created.stderr
    assert f"created {settings.app_id}-subjects-changelog" in created.stdout  # the state's changelog too
    ok = cli(settings, "topics", "check")
    assert (ok.returncode, ok.stdout.strip()) == (0, "every topic keeps its promise"), ok.stdout + ok.stderr

    alter(settings, settings.topic("events"), retention_ms="604800000")
    alter(settings, settings.topic("records"), delete_retention_ms="60000")
    bad = cli(settings, "topics", "check")
    assert bad.returncode == 1
    assert bad.stdout.splitlines() == [
        f"{settings.topic('events')}: retention.ms is 604800000, needs -1 (the log of record is kept forever)",
        f"{settings.topic('records')}: delete.retention.ms is 60000, needs at least 604800000 "
        "(a consumer away that long must still see a deletion)",
    ]

    worker = cli(settings, "worker", timeout=180)
    assert worker.returncode == 2
    assert (
        worker.stderr.strip()
        .splitlines()[-1]
        .startswith(
            "error: the worker refuses to run: 2 topic setting(s) would break a promise, first "
            f"{settings.topic('events')}: retention.ms is 604800000"
        )
    ), worker.stderr[-2000:]
    assert "Traceback" not in worker.stderr


@pytest.mark.integration
def test_topics_check_names_partition_counts_that_would_move_subjects(settings: Settings) -> None:
    """Growing lifecycle.ingest moves subjects to other partitions, away from their state and
    their log: the check (and so the worker) refuses it, and a worker routing by another count
    than the topics have."""
    from kafka.admin import NewPartitions

    assert cli(settings, "topics", "create").returncode == 0
    with opened(settings) as admin:
        admin.create_partitions({settings.topic("ingest"): NewPartitions(total_count=6)})
    bad = cli(settings, "topics", "check")
    assert bad.returncode == 1
    assert bad.stdout.splitlines() == [
        f"{settings.topic('ingest')}: partitions is 6, needs 4 "
        "(LIFECYCLE_PARTITIONS; co-partitioned with lifecycle.ingest and the state)"
    ]


@pytest.mark.integration
def test_replication_asked_beyond_the_cluster_is_one_line(settings: Settings) -> None:
    import dataclasses

    done = cli(dataclasses.replace(settings, replication=3, topic_prefix=settings.topic_prefix + "r."), "topics", "create")
    assert (done.returncode, done.stderr.strip()) == (
        2,
        "error: LIFECYCLE_REPLICATION=3, but the cluster has 1 broker(s): at most 1 copies",
    )
