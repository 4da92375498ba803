"""The secured broker's files for ``docker-compose.yml``, written by its one-shot ``secrets`` service.

Why our own files rather than the apache/kafka image's SSL and SASL switches: that image
formats its storage without SCRAM users and wants Java keystores with their passwords in
files. Here the broker runs on the same access-control config as ``lifecycle broker start
--secure`` (``streams.broker.local.security_properties``, covered by ``tests/test_access.py``); only
the listeners differ: one for the containers (``kafka:19092``), one for the host
(``localhost:9092``), the controller on ``kafka:29093``.

    python -m streams.broker.compose /etc/lifecycle [--kafka-uid 1000 --client-uid 10001]

writes, keeping the CA and the passwords of an earlier run:

- ``broker/``: ``server.properties``, ``format.args`` (the format tool's arguments, SCRAM users
  included), ``client.properties`` (the admin's, for the healthcheck) and ``tls/``: for the
  Kafka container's user only;
- ``clients/``: ``kafka-credentials`` and ``ca.pem``: for the project's containers' user.

The SCRAM users are the pipeline's principals and one per consumer of the policy
(``LIFECYCLE_POLICY``, else the packaged one), as for the local broker. A consumer registered
after the first ``up`` gets its password here and its user from the ``topics`` service
(``streams.broker.acls.add_users``): the format tool only runs on an empty volume.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from processors.policy import Policy
from streams.broker.local import NODE_ID, Secured, new_cluster_id, scram_args, security_properties, write_argfile
from streams.broker.tls import ensure_tls
from streams.plumbing import security
from streams.settings import Settings, load_policy

HOST = "kafka"
INTERNAL_PORT, HOST_PORT, CONTROLLER_PORT = 19092, 9092, 29093
DATA_DIR = "/var/lib/kafka/data"
LISTENERS = ("SECURE", "SECURE_HOST")


def server_properties(
    secured: Secured, host: str = HOST, data_dir: str = DATA_DIR,
    ports: tuple[int, int, int] = (INTERNAL_PORT, HOST_PORT, CONTROLLER_PORT),
) -> str:  # fmt: skip
    internal, external, controller = ports
    return f"""\
# Written by `python -m streams.broker.compose` for docker-compose.yml; rewritten at every `up`.
process.roles=broker,controller
node.id={NODE_ID}
controller.quorum.voters={NODE_ID}@{host}:{controller}
listeners=SECURE://:{internal},SECURE_HOST://:{external},CONTROLLER://:{controller}
advertised.listeners=SECURE://{host}:{internal},SECURE_HOST://localhost:{external}
inter.broker.listener.name=SECURE
controller.listener.names=CONTROLLER
listener.security.protocol.map=SECURE:SASL_SSL,SECURE_HOST:SASL_SSL,CONTROLLER:SSL
log.dirs={data_dir}
# One node: every internal topic has a single replica.
offsets.topic.replication.factor=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
# As in streams/broker/local.py: tombstones erase within max.compaction.lag.ms plus seconds, and
# lifecycle.ingest empties within its retention.ms plus seconds.
log.cleaner.backoff.ms=5000
log.retention.check.interval.ms=10000

""" + security_properties(secured, LISTENERS)


def client_properties(secured: Secured) -> str:
    """For Kafka's own command-line tools (``--command-config``), as the admin."""
    return f"""\
security.protocol={security.PROTOCOL}
sasl.mechanism={security.MECHANISM}
sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required username="{security.ADMIN}" password="{secured.admin_password}";
ssl.truststore.type=PEM
ssl.truststore.location={secured.tls.ca}
"""


def write_bundle(
    root: Path, kafka_uid: int | None = None, client_uid: int | None = None, host: str = HOST,
    data_dir: str = DATA_DIR, ports: tuple[int, int, int] = (INTERNAL_PORT, HOST_PORT, CONTROLLER_PORT),
    policy: Policy | None = None,
) -> None:  # fmt: skip
    """Every file the compose services read. ``host``, ``data_dir`` and ``ports`` are those of
    docker-compose.yml; other values try the same config on a machine without Docker.
    ``policy`` (by default the packaged one) names the consumers that get a login."""
    broker_dir, clients = root / "broker", root / "clients"
    users = security.principals(load_policy() if policy is None else policy)
    credentials = security.ensure_credentials(clients / "kafka-credentials", users)
    tls = ensure_tls(broker_dir / "tls", hosts=tuple(dict.fromkeys((host, "localhost", "127.0.0.1"))))
    secured = Secured(tls, credentials[security.ADMIN], credentials)
    props = broker_dir / "server.properties"
    security.write_private(props, server_properties(secured, host, data_dir, ports).encode())
    security.write_private(broker_dir / "client.properties", client_properties(secured).encode())
    write_argfile(
        broker_dir / "format.args",
        ["kafka.tools.StorageTool", "format", "-t", new_cluster_id(), "-c", str(props), *scram_args(credentials)],
    )
    (clients / "ca.pem").write_bytes(tls.ca.read_bytes())
    for directory, uid in ((broker_dir, kafka_uid), (clients, client_uid)):
        if uid is None:
            continue
        for path in [directory, *directory.rglob("*")]:
            os.chown(path, uid, uid)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m streams.broker.compose", description=__doc__.split("\n")[0])
    ap.add_argument("root", type=Path)
    ap.add_argument("--kafka-uid", type=int, help="owner of broker/ (the Kafka image's user)")
    ap.add_argument("--client-uid", type=int, help="owner of clients/ (the project image's user)")
    ns = ap.parse_args(argv)
    write_bundle(ns.root, ns.kafka_uid, ns.client_uid, policy=load_policy(Settings.from_env().policy_file))
    print(f"wrote the secured broker's files to {ns.root} (passwords in {ns.root / 'clients' / 'kafka-credentials'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
