"""Worker processes started by the demo, the benchmark and the tests: real processes, real broker.

A worker is "caught up" when its consumer group has committed the end offset of every input
topic and nothing moved between two looks: the only honest signal that Kafka gives us that
everything published so far has been folded.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from streams.plumbing.admin import admin, cluster_admin
from streams.settings import Settings

INPUTS = ("ingest", "acks")


def spawn_worker(
    settings: Settings,
    log_path: Path,
    extra_env: dict[str, str] | None = None,
    dev: bool = False,
    loglevel: str = "info",
) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LIFECYCLE_")}
    env.update(settings.to_env())
    env.update(extra_env or {})
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:  # the child keeps its own copy of the descriptor
        return subprocess.Popen(
            [sys.executable, "-m", "streams.cli", "worker", "--loglevel", loglevel, *(["--dev"] if dev else [])],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def stop_worker(proc: subprocess.Popen[bytes], timeout: float = 30.0) -> int:
    """SIGTERM (the worker delivers, commits and leaves the group), SIGKILL if it will not go."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode


class LagProbe:
    """Asks the broker how far the worker group is behind, over clients kept open.

    Why not a client per look: building a kafka-python admin client and consumer costs tens of
    milliseconds of CPU, and a benchmark polling four times a second would take that from the
    workers it measures.
    """

    def __init__(self, settings: Settings) -> None:
        from kafka import KafkaConsumer

        from streams.plumbing.security import client_kwargs

        self.settings = settings
        client = client_kwargs(settings)
        self.admin = admin(settings, "lifecycle-lag")
        self.consumer = KafkaConsumer(bootstrap_servers=settings.bootstrap.split(","), client_id="lifecycle-lag", **client)
        self._groups: Any = None  # a librdkafka admin client, built on first use

    def members_holding(self) -> int:
        """How many members of the worker group hold input partitions, once the group has
        settled (0 while it rebalances)."""
        from streams.plumbing.group import ingest_owners

        if self._groups is None:
            self._groups = cluster_admin(self.settings)
        try:
            stable, members = ingest_owners(self.settings, self._groups)
        except Exception:  # noqa: BLE001 - the group or its coordinator does not exist yet
            return 0
        return sum(1 for _, held in members if held) if stable else 0

    def __call__(self) -> int | None:
        """Messages of the input topics not yet committed by the worker's group (None: no group yet)."""
        from kafka import TopicPartition
        from kafka.errors import CoordinatorLoadInProgressError, CoordinatorNotAvailableError, NotCoordinatorError

        try:
            committed = group_offsets(self.admin, self.settings.app_id)
        except (CoordinatorNotAvailableError, CoordinatorLoadInProgressError, NotCoordinatorError):
            return None  # the offsets topic is still being created: no group can exist yet
        tps = []
        for name in INPUTS:
            topic = self.settings.topic(name)
            for p in self.consumer.partitions_for_topic(topic) or ():
                tps.append(TopicPartition(topic, p))
        ends = self.consumer.end_offsets(tps)
        if not committed and any(ends.values()):
            return None
        total = 0
        for tp, end in ends.items():
            meta = committed.get(tp)
            done = meta.offset if meta is not None and meta.offset >= 0 else 0
            total += max(0, end - done)
        return total

    def close(self) -> None:
        self.consumer.close()
        self.admin.close()


def lag(settings: Settings) -> int | None:
    """Messages of the input topics not yet committed by the worker's group (None: no group yet)."""
    probe = LagProbe(settings)
    try:
        return probe()
    finally:
        probe.close()


def group_offsets(admin: Any, group: str) -> dict[Any, Any]:
    """A group's committed offsets (kafka-python 3.0.12 asks for many groups at once)."""
    offsets: dict[Any, Any] = admin.list_group_offsets({group: None}).get(group, {})
    return offsets


def wait_caught_up(settings: Settings, timeout: float = 90.0, proc: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + timeout
    zero_seen = 0
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"worker exited with status {proc.returncode}")
        current = lag(settings)
        zero_seen = zero_seen + 1 if current == 0 else 0
        if zero_seen >= 2:
            return
        time.sleep(1.0)
    raise TimeoutError(f"worker did not catch up within {timeout:.0f} s (lag {lag(settings)})")
