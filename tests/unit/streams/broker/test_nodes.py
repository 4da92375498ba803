"""A local cluster of several nodes, without starting one: its ports, its config, and the
counts a home refuses (the integration tests in tests/integration/cluster start the real one)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from streams.broker import local as broker
from streams.broker.local import BrokerError
from streams.settings import Settings


def _home(tmp_path: Path, port: int = 29000) -> Settings:
    return dataclasses.replace(Settings.from_env({}), home=tmp_path / "home", broker_port=port)


def _properties(text: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in text.splitlines() if line and not line.startswith("#"))


def test_three_nodes_take_neighbouring_ports_and_each_is_a_voter(tmp_path: Path) -> None:
    s = _home(tmp_path)
    nodes = broker._layout(s, 3, s.broker_port)
    assert [(n.id, n.port, n.controller_port) for n in nodes] == [(1, 29000, 29003), (2, 29001, 29004), (3, 29002, 29005)]
    assert [n.dir for n in nodes] == [s.broker_dir / f"node-{i}" for i in (1, 2, 3)]
    conf = _properties(broker._server_properties(s, s.kafka_version, None, nodes[1], nodes))
    assert conf["node.id"] == "2"
    assert conf["controller.quorum.voters"] == "1@127.0.0.1:29003,2@127.0.0.1:29004,3@127.0.0.1:29005"
    assert conf["listeners"] == "PLAINTEXT://127.0.0.1:29001,CONTROLLER://127.0.0.1:29004"
    assert conf["log.dirs"] == str(s.broker_dir / "node-2" / "data")
    internal = ("offsets.topic.replication.factor", "transaction.state.log.replication.factor", "default.replication.factor")
    assert {conf[k] for k in internal} == {"3"}
    assert conf["transaction.state.log.min.isr"] == conf["min.insync.replicas"] == "2"


def test_one_node_keeps_the_layout_and_the_config_homes_had(tmp_path: Path) -> None:
    """An existing home starts as it always did: files right in broker/, one copy of everything."""
    s = _home(tmp_path)
    (node,) = broker._nodes(s)
    assert (node.dir, node.port, node.controller_port) == (s.broker_dir, 29000, 29001)
    conf = _properties(broker._server_properties(s, s.kafka_version))
    assert conf["controller.quorum.voters"] == "1@127.0.0.1:29001"
    assert conf["log.dirs"] == str(s.broker_dir / "data")
    assert conf["offsets.topic.replication.factor"] == conf["min.insync.replicas"] == "1"
    assert [broker.replicas(n) for n in (1, 2, 3, 5)] == [(1, 1), (2, 1), (3, 2), (3, 2)]


def test_a_formatted_home_keeps_its_node_count(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    s = _home(tmp_path)
    assert broker._node_count(s) == 1 and broker._node_count(s, 3) == 3  # nothing formatted: any count
    for i in (1, 2, 3):
        (s.broker_dir / f"node-{i}" / "data").mkdir(parents=True)
        (s.broker_dir / f"node-{i}" / "data" / "meta.properties").write_text("cluster.id=x\n")
    (s.broker_dir / "nodes").write_text("3\n")
    assert broker._node_count(s) == 3  # without --nodes: what the home has
    with pytest.raises(BrokerError) as info:
        broker.start(s, nodes=1)
    assert str(info.value) == (
        f"--nodes 1: {s.broker_dir} holds a broker of 3 node(s), formatted so; use another LIFECYCLE_HOME (or delete that directory)"
    )
    with pytest.raises(
        BrokerError, match=r"^--secure runs a single node: .* holds a broker of 3 nodes; use another LIFECYCLE_HOME$"
    ):
        broker.start(s, secure=True)
    with pytest.raises(BrokerError, match=r"^--nodes 10: a local cluster has 1 to 9 nodes$"):
        broker._node_count(_home(tmp_path / "fresh"), 10)
    with pytest.raises(BrokerError, match=r"^--secure runs a single node: drop --nodes 3, or drop --secure$"):
        broker.start(_home(tmp_path / "fresh"), secure=True, nodes=3)

    # a home from before there could be several nodes: data right in broker/, no count file
    old = _home(tmp_path / "old")
    (old.broker_dir / "data").mkdir(parents=True)
    (old.broker_dir / "data" / "meta.properties").write_text("cluster.id=x\n")
    assert broker._node_count(old) == 1


def test_ports_past_the_last_one_are_refused_in_one_line(tmp_path: Path) -> None:
    s = _home(tmp_path, port=65531)
    with pytest.raises(BrokerError, match=r"^LIFECYCLE_BROKER_PORT=65531: 3 nodes need the 6 ports from it, past 65535$"):
        broker._check_ports(broker._layout(s, 3, s.broker_port), 3)
