"""The local broker: real Java, real Kafka jars (from the user cache), temporary homes and ports.

A fake ``mvn`` on PATH covers the fetch logic (progress, marker, retry after a failure)
without the network.
"""

from __future__ import annotations

import socket
import time
import uuid
from pathlib import Path

import pytest
from kafka import KafkaConsumer, KafkaProducer
from kafka.admin import ConfigResource, ConfigResourceType, KafkaAdminClient
from support.ports import local_broker_settings

from streams.broker import local as broker
from streams.broker.local import BrokerError
from streams.plumbing import topics
from streams.settings import Settings


def _local(tmp_path: Path) -> Settings:
    """A private home and port pair, but the user's jar cache (so jars are fetched once per machine)."""
    return local_broker_settings(tmp_path / "home", topic_prefix=f"t{uuid.uuid4().hex[:8]}.")


def _use_env(monkeypatch: pytest.MonkeyPatch, s: Settings) -> None:
    """What main_broker reads: the same home, port and prefix as ``s``."""
    monkeypatch.setenv("LIFECYCLE_HOME", str(s.home))
    monkeypatch.setenv("LIFECYCLE_CACHE", str(s.cache))
    monkeypatch.setenv("LIFECYCLE_BROKER_PORT", str(s.broker_port))
    monkeypatch.setenv("LIFECYCLE_TOPIC_PREFIX", s.topic_prefix)
    monkeypatch.setenv("LIFECYCLE_PARTITIONS", str(s.partitions))


def _read_all(bootstrap: str, topic: str, want: int, timeout_s: float = 15.0) -> list[tuple[bytes, bytes]]:
    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=None,
        auto_offset_reset="earliest",
        consumer_timeout_ms=1000,
    )
    got: list[tuple[bytes, bytes]] = []
    deadline = time.monotonic() + timeout_s
    try:
        while len(got) < want and time.monotonic() < deadline:
            got.extend((m.key, m.value) for m in consumer)
    finally:
        consumer.close()
    return got


def _topic_configs(bootstrap: str, names: list[str]) -> dict[str, dict[str, str]]:
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        described = admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, n) for n in names])
    finally:
        admin.close()
    return {name: {k: v["value"] for k, v in cfg.items()} for name, cfg in described["topic"].items()}


@pytest.mark.integration
def test_start_status_stop_restart_keeps_data(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    s = _local(tmp_path)
    _use_env(monkeypatch, s)
    lines: list[str] = []
    try:
        t0 = time.monotonic()
        st = broker.start(s, lines.append)
        first = time.monotonic() - t0
        assert st.running and st.pid and st.bootstrap == s.bootstrap
        assert st.version == s.kafka_version and st.log.is_file()
        assert broker.status(s) == st
        assert any(line.startswith("formatting") for line in lines)
        assert broker.start(s) == st  # already running: reported, nothing started

        # The project's topics exist with the configs topics.py promises.
        wanted = topics.configs(s)
        actual = _topic_configs(s.bootstrap, [s.topic(n) for n in topics.NAMES])
        for name in topics.NAMES:  # one node: one copy, so one in sync is all a write can need
            assert actual[s.topic(name)] == {**wanted[name], "min.insync.replicas": "1"}, name
        assert actual[s.topic("events")]["retention.ms"] == "-1"
        assert actual[s.topic("records")]["cleanup.policy"] == "compact"

        producer = KafkaProducer(bootstrap_servers=s.bootstrap)
        try:
            producer.send(s.topic("events"), key=b"subject-1", value=b"hello").get(timeout=30)
        finally:
            producer.close()
        assert _read_all(s.bootstrap, s.topic("events"), 1) == [(b"subject-1", b"hello")]
        meta = (st.data_dir / "meta.properties").read_text()

        # The command line: stop, status says so (exit 3), start again.
        capsys.readouterr()
        assert broker.main_broker(["stop"]) == 0
        assert f"broker stopped (pid {st.pid})" in capsys.readouterr().out
        assert not broker.status(s).running
        assert not (s.broker_dir / "broker.pid").exists()
        assert broker.stop(s) is False
        assert broker.main_broker(["status"]) == 3
        assert "broker not running" in capsys.readouterr().out

        t0 = time.monotonic()
        assert broker.main_broker(["start"]) == 0
        second = time.monotonic() - t0
        out, err = capsys.readouterr()
        assert f"broker started: {s.bootstrap} (Kafka {s.kafka_version}, pid " in out
        assert f"log: {st.log}" in out
        assert "formatting" not in err  # warm start: the data directory is reused as is
        assert (st.data_dir / "meta.properties").read_text() == meta
        assert broker.main_broker(["status"]) == 0
        assert _read_all(s.bootstrap, s.topic("events"), 1) == [(b"subject-1", b"hello")]
        print(f"cold-home start {first:.1f} s, warm start {second:.1f} s")
    finally:
        broker.stop(s)
    assert not broker.status(s).running


@pytest.mark.integration
@pytest.mark.parametrize("offset, what", [(0, ""), (1, " (the controller's, broker port + 1)")])
def test_port_taken_is_one_clear_line(tmp_path: Path, offset: int, what: str) -> None:
    s = _local(tmp_path)
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", s.broker_port + offset))
        squatter.listen()
        with pytest.raises(BrokerError) as info:
            broker.start(s)
    port = s.broker_port + offset
    assert str(info.value) == f"port {port}{what} is taken by another process: set LIFECYCLE_BROKER_PORT"
    assert not broker.status(s).running


@pytest.mark.integration
def test_broker_that_dies_at_startup_reports_why(tmp_path: Path) -> None:
    s = _local(tmp_path)
    data = s.broker_dir / "data"
    data.mkdir(parents=True)
    # Someone else's data directory: Kafka refuses it, and we must say so in one line.
    (data / "meta.properties").write_text(
        "version=1\nnode.id=5\ncluster.id=AAAAAAAAAAAAAAAAAAAAAA\ndirectory.id=pbz3JAr-ZWcfeGJ9-OkaXg\n"
    )
    with pytest.raises(BrokerError) as info:
        broker.start(s)
    message = str(info.value)
    assert message.startswith("broker exited during startup (code 1): Stored node id 5 doesn't match")
    assert "\n" not in message and str(s.broker_dir / "broker.log") in message
    assert not broker.status(s).running and not (s.broker_dir / "broker.pid").exists()


@pytest.mark.integration
def test_ensure_jars_second_call_does_not_run_mvn(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    s = _local(tmp_path)
    libs = broker.ensure_jars(s)  # fetches on a cold cache, else returns at once
    assert any(p.name == f"kafka_2.13-{s.kafka_version}.jar" for p in libs.iterdir())
    monkeypatch.setenv("PATH", str(tmp_path))  # no mvn to be found any more
    t0 = time.monotonic()
    assert broker.ensure_jars(s) == libs
    assert time.monotonic() - t0 < 0.5
