"""On three nodes every topic the project makes keeps three copies and takes a write only with
two of them in sync, and the cluster itself is the one ``lifecycle broker start --nodes 3``
promises: each node listed, all stopped together, data kept.

Why it matters: ``lifecycle.events`` is kept forever and ``lifecycle.keys`` lost would erase
everything; on a single broker's disk they would have one copy. What is checked is what Kafka
itself says about its topics (the admin API's topic description and configs, as
``kafka-topics --describe`` shows them), not what the project meant to create.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from schemas.codec import encode
from streams.bench.history import history
from streams.bench.measure import fill
from streams.broker import local as broker
from streams.plumbing.admin import cluster_admin
from streams.plumbing.reading import read_topic
from streams.plumbing.topics import changelog_topic, describe_configs, wanted_topics
from streams.plumbing.upstream import producer
from streams.settings import Settings
from streams.worker.processes import spawn_worker, stop_worker, wait_caught_up

# one three-node cluster for all of them: in one test process under ``-n`` (``--dist loadgroup``)
pytestmark = [pytest.mark.integration, pytest.mark.xdist_group("cluster")]


def cli(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LIFECYCLE_")}
    env.update(settings.to_env())
    return subprocess.run([sys.executable, "-m", "streams.cli", *args], env=env, capture_output=True, text=True, timeout=120)


def test_every_lifecycle_topic_and_the_changelog_have_three_copies_and_need_two(on_cluster: Settings, tmp_path: Path) -> None:
    s = on_cluster
    events = history(200, 40, seed=53)
    fill(s, "ingest", [(e["subject_id"].encode(), encode(e)) for e in events])  # type: ignore[misc]
    worker = spawn_worker(s, tmp_path / "worker.log")  # makes its state's changelog, commits to the group's offsets
    try:
        wait_caught_up(s, timeout=120, proc=worker)
    finally:
        stop_worker(worker)

    metadata = cluster_admin(s).list_topics(timeout=30)
    ours = sorted(t for t in metadata.topics if t.startswith(s.topic_prefix) or t == changelog_topic(s))
    assert set(ours) == set(wanted_topics(s)), "a topic is missing, or one the project does not know was made"
    described = {}
    for name in ours:
        parts = metadata.topics[name].partitions
        described[name] = (
            {len(p.replicas) for p in parts.values()},
            {len(p.isrs) for p in parts.values()},
            describe_configs(s, name)["min.insync.replicas"],
        )
    assert described == dict.fromkeys(ours, ({3}, {3}, "2")), {n: d for n, d in described.items() if d != ({3}, {3}, "2")}
    # what the worker's committed offsets live on is as safe as what they point past
    offsets = metadata.topics["__consumer_offsets"].partitions
    assert {len(p.replicas) for p in offsets.values()} == {3}
    assert describe_configs(s, "__consumer_offsets")["min.insync.replicas"] == "2"

    check = cli(s, "topics", "check")
    assert (check.returncode, check.stdout.strip()) == (0, "every topic keeps its promise"), check.stdout + check.stderr
    print(f"{len(ours)} topics on 3 nodes: replication 3, min.insync.replicas 2; lifecycle topics check: exit 0")


def test_broker_nodes_3_lists_each_node_stops_all_and_keeps_the_data(
    cluster3: Settings, on_cluster: Settings, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The command line a user tries failover with: ``status`` names every node, ``stop`` takes
    them all down, ``start`` brings them back on the data they had."""
    for name, value in cluster3.to_env().items():
        monkeypatch.setenv(name, value)
    prod = producer(on_cluster)
    try:
        prod.send(on_cluster.topic("events"), key=b"subject-1", value=b"kept").get(timeout=30)
    finally:
        prod.close()

    before = broker.status(cluster3)
    capsys.readouterr()
    assert broker.main_broker(["status"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"broker running: {before.bootstrap} (Kafka {cluster3.kafka_version}, 3 nodes)"
    assert out[1:4] == [
        f"node {n.id}: {n.bootstrap} (controller {n.controller.rsplit(':', 1)[1]}), pid {n.pid}, up" for n in before.nodes
    ]
    assert len({n.pid for n in before.nodes}) == 3 and len({n.data_dir for n in before.nodes}) == 3

    assert broker.main_broker(["stop"]) == 0
    pids = ", ".join(str(n.pid) for n in before.nodes)
    assert capsys.readouterr().out.startswith(f"broker stopped (3 nodes, pids {pids}) in ")
    assert broker.main_broker(["status"]) == 3
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"broker not running (would listen on {before.bootstrap})"
    assert [line.rsplit(", ", 1)[1] for line in out[1:4]] == ["down"] * 3

    assert broker.main_broker(["start"]) == 0  # the home's three nodes, without saying --nodes again
    out, err = capsys.readouterr()
    assert out.startswith(f"broker started: {before.bootstrap} (Kafka {cluster3.kafka_version}, 3 nodes) in ")
    assert "formatting" not in err  # every node on the data directory it had
    after = broker.status(cluster3)
    assert after.running and [n.bootstrap for n in after.nodes] == [n.bootstrap for n in before.nodes]
    assert [(e.key, e.value) for e in read_topic(on_cluster, "events", timeout_s=60)] == [(b"subject-1", b"kept")]

    assert broker.main_broker(["start", "--nodes", "2"]) == 1
    assert capsys.readouterr().err.strip() == (
        f"error: --nodes 2: {cluster3.broker_dir} holds a broker of 3 node(s), formatted so; "
        "use another LIFECYCLE_HOME (or delete that directory)"
    )
    assert broker.main_broker(["start", "--secure"]) == 1
    assert capsys.readouterr().err.strip() == (
        f"error: --secure runs a single node: {cluster3.broker_dir} holds a broker of 3 nodes; use another LIFECYCLE_HOME"
    )
