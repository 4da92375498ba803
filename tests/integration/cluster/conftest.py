"""One local cluster of three KRaft nodes for the session, and a fresh set of topics on it per
test: the replication and fault tests need copies on other brokers, which one node cannot give.

Always our own local broker (``lifecycle broker start --nodes 3``), never
``LIFECYCLE_TEST_BOOTSTRAP`` or a container: the tests kill and restart its nodes.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.cluster import wait_in_sync
from support.ports import free_port_pair, local_broker_settings

from processors.shredding import new_master_key_text
from streams.broker import local as broker
from streams.plumbing.topics import changelog_topic, delete_prefixed, ensure_topics
from streams.settings import Settings


@pytest.fixture(scope="session")
def cluster3(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    """Three nodes in a temporary home on free ports, stopped at the end of the session."""
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")

    def progress(line: str) -> None:
        if reporter is not None:
            reporter.write_line(f"[kafka x3] {line}")

    settings = local_broker_settings(tmp_path_factory.mktemp("cluster3-home"), nodes=3)
    broker.start(settings, progress, nodes=3)
    try:
        yield settings
    finally:
        broker.stop(settings)


@pytest.fixture
def on_cluster(cluster3: Settings, tmp_path: Path) -> Iterator[Settings]:
    """Topics and a consumer group of this test's own on the cluster, every node up and every
    copy in sync (a test before may have killed some), no retention tick (the pure fold takes
    none), one master key file and API token for every worker of the group. The topics are
    deleted afterwards: every node holds a copy of every partition, and loads them all when it
    restarts, so the tests after would restart slower and slower."""
    broker.start(cluster3)  # starts whichever node is down; nothing when all run
    tag = uuid.uuid4().hex[:8]
    web = free_port_pair()
    keys = tmp_path / "master-keys"
    keys.write_text(new_master_key_text() + "\n")
    s = dataclasses.replace(
        cluster3,
        web_port=web,
        worker_url=f"http://127.0.0.1:{web}",
        master_key_file=keys,
        api_token="one-token-for-the-group",
        topic_prefix=f"t{tag}.",
        app_id=f"test-{tag}",
        home=tmp_path / "home",
        partitions=4,
        timer_interval=3600.0,
    )
    ensure_topics(s)
    wait_in_sync(s)
    yield s
    broker.start(cluster3)
    delete_prefixed(s, s.topic_prefix)
    delete_prefixed(s, changelog_topic(s))
