"""Shared fixtures: one real Apache Kafka per test session, fresh topic names per test.

Where the broker comes from, first that applies:

1. ``LIFECYCLE_TEST_BOOTSTRAP=host:port`` — a broker you already run;
2. a Docker engine that answers — an ``apache/kafka`` container (KRaft);
3. otherwise our own local broker (``streams.broker.local``) on a free port pair, with its data in a
   temporary home and the jars from the user cache (fetched once with mvn).

The fixture never skips: a machine with Java and Maven can always run the integration tests.
"""

from __future__ import annotations

import gc
import os
import random
import socket
import sys
import time
import uuid
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.ports import free_port_pair, local_broker_settings

from processors.shredding import new_master_key_text
from streams.plumbing.admin import opened
from streams.plumbing.topics import NAMES, ensure_topics
from streams.settings import Settings

# one seed of the hostile cases for every test process of a run (``-n`` starts several, which
# inherit the environment): the header names the seed the cases were drawn with
os.environ.setdefault("HOSTILE_SEED", str(random.SystemRandom().randrange(2**32)))


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Everything under tests/integration runs against a real broker, and is marked so."""
    for item in items:
        if "integration" in Path(str(item.fspath)).parts:
            item.add_marker(pytest.mark.integration)


def pytest_report_header() -> str:
    """The seed of this run's hostile cases, so that a failure they find can be run again."""
    from support.hostile import SEED

    return f"hostile cases: HOSTILE_SEED={SEED} repeats this run's draws"


KAFKA_IMAGE = "apache/kafka:4.1.1"


def _docker_answers() -> bool:
    """A quick ``/_ping``; done by hand on a unix socket because the Docker SDK leaks its socket
    when no engine listens (a ResourceWarning, an error under ``-W error``)."""
    host = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
    if host.startswith("unix://"):
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                s.settimeout(3)
                s.connect(host[len("unix://") :])
                s.sendall(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n")
                return s.recv(64).split(b" ")[1:2] == [b"200"]
        except (OSError, IndexError):
            return False
    with warnings.catch_warnings():  # tcp:// or ssh://: let the SDK speak the protocol
        warnings.simplefilter("ignore", ResourceWarning)
        try:
            import docker

            client = docker.from_env(timeout=3)
            try:
                return bool(client.ping())
            finally:
                client.close()
        except Exception:  # noqa: BLE001 - any failure to talk to a Docker engine means there is none
            return False
        finally:
            gc.collect()  # any leaked socket is finalized here, where its warning is ignored


@pytest.fixture(scope="session")
def kafka_bootstrap(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``host:port`` of a real broker shared by the whole session."""
    given = os.environ.get("LIFECYCLE_TEST_BOOTSTRAP")
    if given:
        yield given
        return

    reporter = request.config.pluginmanager.get_plugin("terminalreporter")

    def progress(line: str) -> None:  # a cold jar fetch takes a while: say why the run waits
        if reporter is not None:
            reporter.write_line(f"[kafka] {line}")
        else:
            print(f"[kafka] {line}", file=sys.stderr)

    if _docker_answers():
        from testcontainers.core.container import DockerContainer
        from testcontainers.core.docker_client import DockerClient
        from testcontainers.core.wait_strategies import LogMessageWaitStrategy

        # Same host and container port, so the advertised listener is known before start.
        port = free_port_pair()
        host = DockerClient().host()
        container = (
            DockerContainer(KAFKA_IMAGE)
            .with_bind_ports(port, port)
            .with_envs(
                KAFKA_NODE_ID="1",
                KAFKA_PROCESS_ROLES="broker,controller",
                KAFKA_LISTENERS=f"PLAINTEXT://:{port},CONTROLLER://:29093",
                KAFKA_ADVERTISED_LISTENERS=f"PLAINTEXT://{host}:{port}",
                KAFKA_CONTROLLER_LISTENER_NAMES="CONTROLLER",
                KAFKA_CONTROLLER_QUORUM_VOTERS="1@localhost:29093",
                KAFKA_LISTENER_SECURITY_PROTOCOL_MAP="CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
                KAFKA_INTER_BROKER_LISTENER_NAME="PLAINTEXT",
                KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR="1",
                KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR="1",
                KAFKA_TRANSACTION_STATE_LOG_MIN_ISR="1",
                KAFKA_SHARE_COORDINATOR_STATE_TOPIC_REPLICATION_FACTOR="1",
                KAFKA_SHARE_COORDINATOR_STATE_TOPIC_MIN_ISR="1",
                KAFKA_GROUP_INITIAL_REBALANCE_DELAY_MS="0",
                KAFKA_LOG_CLEANER_BACKOFF_MS="5000",
                KAFKA_LOG_RETENTION_CHECK_INTERVAL_MS="10000",
            )
            .waiting_for(LogMessageWaitStrategy("Kafka Server started").with_startup_timeout(180))
        )
        progress(f"starting {KAFKA_IMAGE} in Docker on {host}:{port}")
        with container:
            yield f"{host}:{port}"
        return

    from streams.broker import local as broker

    settings = local_broker_settings(tmp_path_factory.mktemp("kafka-home"))
    status = broker.start(settings, progress)
    _DATA_DIRS[status.bootstrap] = status.data_dir
    try:
        yield status.bootstrap
    finally:
        broker.stop(settings)


_DATA_DIRS: dict[str, Path] = {}


@pytest.fixture(scope="session")
def kafka_data_dir(kafka_bootstrap: str) -> Path | None:
    """The broker's log directory when it is our own local broker (its raw segment files can
    then be read), else None (a container or a broker someone else runs)."""
    return _DATA_DIRS.get(kafka_bootstrap)


@pytest.fixture
def settings(kafka_bootstrap: str, tmp_path: Path) -> Settings:
    """Isolation by unique names, not cleanup: each test gets its own topics and consumer group."""
    tag = uuid.uuid4().hex[:8]
    web = free_port_pair()  # a worker's web server per test, so a straggler cannot take the port
    s = Settings(
        web_port=web,
        worker_url=f"http://127.0.0.1:{web}",
        master_key=new_master_key_text(),
        bootstrap=kafka_bootstrap,
        topic_prefix=f"t{tag}.",
        app_id=f"test-{tag}",
        home=tmp_path / "home",
        partitions=4,
    )
    ensure_topics(s)
    _wait_listed(s)
    return s


def _wait_listed(s: Settings, timeout: float = 30.0) -> None:
    """Creation is acknowledged a few hundred ms before the broker lists (and serves) a topic."""
    wanted = {s.topic(n) for n in NAMES}
    with opened(s) as admin:
        deadline = time.monotonic() + timeout
        while not wanted <= set(admin.list_topics()):
            if time.monotonic() > deadline:
                raise TimeoutError(f"topics not listed within {timeout:.0f} s: {sorted(wanted)}")
            time.sleep(0.1)


@pytest.fixture(scope="module")
def secure_kafka(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    """Our own local broker started with ``--secure`` (SASL_SSL, SCRAM users, ACLs), once per
    module, with its topics and ACLs made for the returned settings' prefix and app id.

    Always the local broker, never ``LIFECYCLE_TEST_BOOTSTRAP`` or a container: the access
    control under test is the one ``lifecycle broker start --secure`` sets up. The settings
    carry no principal; ``dataclasses.replace(s, kafka_user=...)`` acts as one, its password
    and the CA found in the broker's home as a user of the local broker would.
    """
    from streams.broker import local as broker

    reporter = request.config.pluginmanager.get_plugin("terminalreporter")

    def progress(line: str) -> None:
        if reporter is not None:
            reporter.write_line(f"[kafka --secure] {line}")

    tag = uuid.uuid4().hex[:8]
    settings = local_broker_settings(
        tmp_path_factory.mktemp("secure-kafka-home"), topic_prefix=f"t{tag}.", app_id=f"test-{tag}", partitions=4
    )
    broker.start(settings, progress, secure=True)
    try:
        yield settings
    finally:
        broker.stop(settings)
