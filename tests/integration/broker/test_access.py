"""Access control on the local broker (``lifecycle broker start --secure``), on the real thing.

One secured broker for the module: SASL/SCRAM-SHA-512 over TLS, the ACLs of ``streams/broker/acls.py``.
Every principal does what its role needs, and every step outside it is refused: an
authorization error from the project's readers, producers and admin calls, never an empty
read (a subscribing kafka-python consumer reads nothing and logs why). A wrong password, a
plaintext client on the TLS port and a client that does not trust our CA never get in. No
password shows up in a log or a message, and the files holding them are the user's alone.
"""

from __future__ import annotations

import dataclasses
import gc
import json
import logging
import os
import socket
import ssl
import stat
import time
import uuid
import warnings
from pathlib import Path

import pytest
from kafka import KafkaConsumer, KafkaProducer
from kafka.admin import (
    ACL,
    ACLOperation,
    ACLPermissionType,
    ACLResourcePatternType,
    KafkaAdminClient,
    NewTopic,
    ResourcePattern,
    ResourceType,
)
from kafka.errors import AuthorizationError, KafkaError, KafkaTimeoutError, TopicAuthorizationFailedError
from kafka.net.compat import KafkaNetClient
from support.ports import free_port_pair

import processors
from processors.shredding import new_master_key_text
from schemas.codec import encode
from schemas.contract import parse_line
from streams.broker import acls
from streams.broker import local as broker
from streams.broker.tls import BROKER_CN, ensure_tls
from streams.commands.replay import read_partitions, run_replay
from streams.commands.sink import SqliteSink, run_sink
from streams.plumbing import security
from streams.plumbing.reading import decoded_events, read_topic
from streams.plumbing.scan import live_keys
from streams.plumbing.topics import NAMES, ensure_topics
from streams.settings import Settings, load_policy
from streams.worker.processes import spawn_worker, stop_worker, wait_caught_up

SAMPLE = Path(processors.__file__).parent / "samples" / "demo.jsonl"


def as_(s: Settings, user: str, **changes: object) -> Settings:
    return dataclasses.replace(s, kafka_user=user, **changes)  # type: ignore[arg-type]


def produce(s: Settings, topic: str, value: bytes = b"not an event") -> None:
    producer = KafkaProducer(
        bootstrap_servers=s.bootstrap, client_id="test-access", max_block_ms=15_000, **security.client_kwargs(s)
    )
    try:
        producer.send(topic, key=b"k", value=value).get(timeout=30)
    finally:
        producer.close()


def passwords(s: Settings) -> dict[str, str]:
    return security.read_credentials(s.home / "kafka-credentials")


# -- what each principal may do ----------------------------------------------------------


@pytest.mark.integration
def test_upstream_writes_ingest(secure_kafka: Settings) -> None:
    produce(as_(secure_kafka, "upstream"), secure_kafka.topic("ingest"))


@pytest.mark.integration
def test_upstream_publishes_lines_with_the_publish_command_library(secure_kafka: Settings) -> None:
    from streams.plumbing.upstream import publish_lines

    report = publish_lines(SAMPLE.read_text().splitlines()[:3], as_(secure_kafka, "upstream"))
    assert report.ok and report.published == 3


@pytest.mark.integration
def test_downstream_reads_the_complete_feeds_and_acknowledges(secure_kafka: Settings) -> None:
    s = as_(secure_kafka, "downstream")
    assert read_topic(s, "records") == [] and read_topic(s, "consent") == []
    produce(s, s.topic("acks"))


@pytest.mark.integration
def test_a_consumer_copies_its_own_feeds_and_acknowledges(secure_kafka: Settings, tmp_path: Path) -> None:
    s = as_(secure_kafka, "crm-mirror")
    assert read_topic(s, "records.crm-mirror") == [] and read_topic(s, "consent.crm-mirror") == []
    produce(s, s.topic("acks"))
    # the sink: its own feeds, its own group (<app_id>-sink-<name>), offsets committed there
    with SqliteSink(tmp_path / "copy.db") as sink:
        report = run_sink(s, sink, "crm-mirror", until_idle=True)
    assert report.upserts == 0


@pytest.mark.integration
def test_auditor_reads_the_log_of_record(secure_kafka: Settings) -> None:
    produce(as_(secure_kafka, "worker"), secure_kafka.topic("events"), b"entry")
    parts = read_partitions(as_(secure_kafka, "auditor"), "events")
    assert sorted(parts) == [0, 1, 2, 3] and sum(len(v) for v in parts.values()) >= 1


# -- what each principal may not do ------------------------------------------------------

FORBIDDEN_READS = [
    ("upstream", "events"),
    ("upstream", "ingest"),  # not even what it wrote
    ("upstream", "keys"),
    ("upstream", "records"),
    ("downstream", "keys"),
    ("downstream", "events"),
    ("downstream", "ingest"),  # plaintext personal data, before the guard
    ("auditor", "keys"),
    ("auditor", "records"),
    ("auditor", "ingest"),
]
FORBIDDEN_WRITES = [
    ("upstream", "records"),
    ("upstream", "events"),  # forging the log of record
    ("upstream", "keys"),
    ("upstream", "acks"),  # acknowledging an erasure it did not carry out
    ("downstream", "records"),
    ("downstream", "consent"),
    ("downstream", "events"),
    ("downstream", "keys"),
    ("downstream", "ingest"),
    *(("auditor", name) for name in NAMES),  # an auditor writes nothing at all
]


@pytest.mark.integration
@pytest.mark.parametrize("user, name", FORBIDDEN_READS)
def test_forbidden_read_is_refused(secure_kafka: Settings, user: str, name: str) -> None:
    """Through the project's own readers: a refused topic raises, it never reads as empty."""
    produce(broker.admin_settings(secure_kafka), secure_kafka.topic(name), b"something to read")
    with pytest.raises(TopicAuthorizationFailedError) as info:
        read_topic(as_(secure_kafka, user), name, timeout_s=5)
    assert secure_kafka.topic(name) in str(info.value)


def refused(exc: BaseException) -> bool:
    """An authorization error, possibly wrapped: a producer with WRITE on no topic at all (the
    auditor) is refused its producer id first, which kafka-python reports inside a KafkaError."""
    return isinstance(exc, AuthorizationError) or "AuthorizationFailedError" in str(exc)


@pytest.mark.integration
@pytest.mark.parametrize("user, name", FORBIDDEN_WRITES)
def test_forbidden_write_is_refused(secure_kafka: Settings, user: str, name: str) -> None:
    t0 = time.monotonic()
    with pytest.raises(KafkaError) as info:
        produce(as_(secure_kafka, user), secure_kafka.topic(name))
    assert refused(info.value), repr(info.value)
    assert time.monotonic() - t0 < 10  # refused at once, not left to time out


@pytest.mark.integration
@pytest.mark.parametrize("user, group", [("downstream", "worker"), ("upstream", "sink")])
def test_foreign_consumer_group_is_refused(secure_kafka: Settings, user: str, group: str) -> None:
    """A downstream consumer cannot join (and so disturb) the worker's group; upstream has no group."""
    s = as_(secure_kafka, user)
    group_id = s.app_id if group == "worker" else f"{s.app_id}-sink-crm"
    consumer = KafkaConsumer(s.topic("records"), bootstrap_servers=s.bootstrap, group_id=group_id, **security.client_kwargs(s))
    try:
        with pytest.raises(AuthorizationError):
            consumer.poll(timeout_ms=10_000)
    finally:
        consumer.close()


@pytest.mark.integration
def test_own_group_does_not_open_other_topics(secure_kafka: Settings, caplog: pytest.LogCaptureFixture) -> None:
    """A subscribing kafka-python consumer does not raise here: it says so in its log and reads nothing."""
    produce(as_(secure_kafka, "worker"), secure_kafka.topic("keys"), b"a wrapped data key")
    s = as_(secure_kafka, "downstream")
    consumer = KafkaConsumer(
        s.topic("keys"), bootstrap_servers=s.bootstrap, group_id=f"{s.app_id}-sink-crm",
        auto_offset_reset="earliest", **security.client_kwargs(s),
    )  # fmt: skip
    try:
        with caplog.at_level(logging.ERROR, logger="kafka"):
            got = [consumer.poll(timeout_ms=1_000) for _ in range(3)]
    finally:
        consumer.close()
    assert not any(got)
    assert f"Topic {s.topic('keys')} is not authorized for this client" in caplog.text


@pytest.mark.integration
def test_no_principal_grants_itself_more(secure_kafka: Settings) -> None:
    """Neither new ACLs nor new topics: only the admin shapes the cluster."""
    s = as_(secure_kafka, "upstream")
    admin = KafkaAdminClient(bootstrap_servers=s.bootstrap, **security.client_kwargs(s))
    try:
        grab = ACL(
            "User:upstream", "*", ACLOperation.READ, ACLPermissionType.ALLOW,
            ResourcePattern(ResourceType.TOPIC, s.topic("events"), ACLResourcePatternType.LITERAL),
        )  # fmt: skip
        result = admin.create_acls([grab])
        assert not result["succeeded"] and all(issubclass(e, AuthorizationError) for e in result["failed"])
        with pytest.raises(AuthorizationError):
            admin.create_topics([NewTopic(f"{s.topic_prefix}lifecycle.shadow", 1, 1)])
    finally:
        admin.close()


# -- who gets in at all ------------------------------------------------------------------


class _Lines(logging.Handler):
    """Keeps formatted lines only: a kept log record would keep the client's sockets alive."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


def _refused_at_bootstrap(s: Settings, client: dict) -> tuple[str, str]:
    """(client log, what the broker logged meanwhile). A Kafka client retries a refused
    connection until its bootstrap timeout, and what it logs about why depends on timing
    (the broker may close first); the broker's log always names the reason."""
    broker_log = s.broker_dir / "broker.log"
    seen = len(broker_log.read_text())
    made: list[KafkaNetClient] = []

    def tracked(**config: object) -> KafkaNetClient:
        made.append(KafkaNetClient(**config))
        return made[-1]

    kafka_log, lines = logging.getLogger("kafka"), _Lines()
    kafka_log.addHandler(lines)
    propagate, kafka_log.propagate = kafka_log.propagate, False
    try:
        with pytest.raises(KafkaTimeoutError):
            KafkaAdminClient(bootstrap_servers=s.bootstrap, bootstrap_timeout_ms=4_000, kafka_client=tracked, **client)
    finally:
        kafka_log.removeHandler(lines)
        kafka_log.propagate = propagate
        # kafka-python closes neither an admin client that never bootstrapped nor the sockets
        # of the connections it gave up on, which reach the garbage collector (a
        # ResourceWarning, an error in this suite): closed and collected here instead
        for net in made:
            net.close()
        made.clear()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ResourceWarning)
            gc.collect()
    return "\n".join(lines.lines), broker_log.read_text()[seen:]


@pytest.mark.integration
@pytest.mark.parametrize("user", ["upstream", "nobody"])
def test_wrong_password_or_unknown_user_is_refused(secure_kafka: Settings, user: str) -> None:
    wrong = "not-the-password-" + uuid.uuid4().hex
    s = as_(secure_kafka, user, kafka_password=wrong)
    client_log, broker_log = _refused_at_bootstrap(s, security.client_kwargs(s))
    assert "Failed authentication with /127.0.0.1" in broker_log
    assert "invalid credentials with SASL mechanism SCRAM-SHA-512" in broker_log
    for text in (client_log, broker_log):
        assert wrong not in text and all(p not in text for p in passwords(secure_kafka).values())


@pytest.mark.integration
def test_plaintext_client_on_the_tls_port_is_refused(secure_kafka: Settings) -> None:
    _, broker_log = _refused_at_bootstrap(secure_kafka, {})
    assert "Failed authentication with /127.0.0.1" in broker_log and "SSL handshake failed" in broker_log


@pytest.mark.integration
def test_tls_comes_first_and_only_our_ca_vouches_for_the_broker(secure_kafka: Settings, tmp_path: Path) -> None:
    """A client that cannot verify the broker stops at the TLS handshake, before SASL: its
    password never leaves it. With our CA (the context the worker uses) the same broker
    verifies, by the name the client dialled."""
    host, port = secure_kafka.bootstrap.rsplit(":", 1)
    stranger = ssl.create_default_context(cafile=str(ensure_tls(tmp_path / "other").ca))
    with socket.create_connection((host, int(port)), timeout=10) as raw:
        with pytest.raises(ssl.SSLCertVerificationError, match="certificate verify failed"):
            stranger.wrap_socket(raw, server_hostname=host)
    ours = security.ssl_context(as_(secure_kafka, "upstream"))
    with socket.create_connection((host, int(port)), timeout=10) as raw:
        with ours.wrap_socket(raw, server_hostname=host) as tls:
            subject = dict(pair[0] for pair in tls.getpeercert()["subject"])
    assert subject == {"commonName": BROKER_CN}


# -- the worker, end to end over SASL_SSL -------------------------------------------------


@pytest.mark.integration
def test_worker_runs_over_sasl_ssl_end_to_end(secure_kafka: Settings, tmp_path: Path) -> None:
    """Topics and ACLs made by the admin for a fresh prefix and app id (as for any deployment),
    then upstream publishes, the worker folds, downstream and the auditor read the results."""
    tag = uuid.uuid4().hex[:8]
    web = free_port_pair()
    s = dataclasses.replace(
        secure_kafka, topic_prefix=f"w{tag}.", app_id=f"worker-{tag}", master_key=new_master_key_text(),
        web_port=web, worker_url=f"http://127.0.0.1:{web}", home=tmp_path / "home",
        kafka_credentials=secure_kafka.home / "kafka-credentials", kafka_ca=secure_kafka.broker_dir / "tls" / "ca.pem",
    )  # fmt: skip
    admin = broker.admin_settings(secure_kafka)
    admin = dataclasses.replace(admin, topic_prefix=s.topic_prefix, app_id=s.app_id)
    ensure_topics(admin)
    assert acls.apply(admin) == len(acls.grants(admin))

    lines = SAMPLE.read_text().splitlines()
    upstream = as_(s, "upstream")
    producer = KafkaProducer(bootstrap_servers=s.bootstrap, acks="all", **security.client_kwargs(upstream))
    try:
        for line in lines:
            event = parse_line(line)
            producer.send(s.topic("ingest"), key=event["subject_id"].encode(), value=encode(event))
        producer.flush(timeout=30)
    finally:
        producer.close()

    worker = as_(s, "worker")
    log = tmp_path / "worker.log"
    proc = spawn_worker(worker, log)
    try:
        wait_caught_up(worker, timeout=120, proc=proc)
    finally:
        assert stop_worker(proc) == 0, log.read_text()[-3000:]

    records = read_topic(as_(s, "downstream"), "records")
    assert any(not e.tombstone for e in records)
    assert live_keys(as_(s, "worker"))  # what `lifecycle keys rotate` scans, as the worker
    logged = {e["event_id"] for e in decoded_events(read_topic(as_(s, "auditor"), "events"))}
    refused = {e["event_id"] for e in decoded_events(read_topic(admin, "rejected"))}  # the sample's forbidden data
    # the auditor replays the log: every decision re-derived, the key checks left to the worker's side
    report, _ = run_replay(as_(s, "auditor"))
    assert report["mismatch_count"] == 0 and report["decisions_rederived"] == report["decisions_recorded"] > 0
    assert report["key_checks"].startswith("skipped") and report["erasures_proven"] is None
    full, _ = run_replay(as_(s, "worker"))
    assert full["key_checks"] == "done" and full["erasures_proven"] == full["erasures"] > 0
    assert refused and logged | refused >= {json.loads(line)["event_id"] for line in lines}
    text = log.read_text()
    assert "as worker over SASL_SSL" in text and "authorization" not in text.lower()
    assert all(p not in text for p in passwords(secure_kafka).values())


# -- secrets stay secret; a secured home stays secured ------------------------------------


@pytest.mark.integration
def test_secrets_are_private_and_never_logged(secure_kafka: Settings) -> None:
    home = secure_kafka.home
    for path in (home / "kafka-credentials", secure_kafka.broker_dir / "server.properties",
                 secure_kafka.broker_dir / "tls" / "broker.pem"):  # fmt: skip
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    keys = list(secure_kafka.broker_dir.rglob("*key*.pem"))  # the CA's, kept to issue client certificates, and theirs
    assert secure_kafka.broker_dir / "tls" / "ca-key.pem" in keys and len(keys) == 1 + len(security.principals(load_policy(None)))
    assert all(stat.S_IMODE(k.stat().st_mode) == 0o600 for k in keys), keys
    assert not (secure_kafka.broker_dir / "format.args").exists()  # the format tool's arguments are gone
    creds = passwords(secure_kafka)
    assert set(creds) == set(security.principals(load_policy(None))) and len(set(creds.values())) == len(creds)
    assert {"mailer", "ats", "crm-mirror", "warehouse"} <= set(creds)  # a login per consumer of the policy
    log = (secure_kafka.broker_dir / "broker.log").read_text()
    assert all(p not in log for p in creds.values())
    assert all(p not in repr(as_(secure_kafka, u, kafka_password=p)) for u, p in creds.items())


@pytest.mark.integration
def test_a_secured_home_restarts_secured(
    secure_kafka: Settings, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`lifecycle broker start` without --secure on a secured home: still secured, same passwords."""
    for k in list(os.environ):
        if k.startswith("LIFECYCLE_"):
            monkeypatch.delenv(k)
    monkeypatch.setenv("LIFECYCLE_HOME", str(secure_kafka.home))
    monkeypatch.setenv("LIFECYCLE_CACHE", str(secure_kafka.cache))
    monkeypatch.setenv("LIFECYCLE_BROKER_PORT", str(secure_kafka.broker_port))
    monkeypatch.setenv("LIFECYCLE_TOPIC_PREFIX", secure_kafka.topic_prefix)
    monkeypatch.setenv("LIFECYCLE_APP_ID", secure_kafka.app_id)
    assert broker.main_broker(["stop"]) == 0
    assert broker.main_broker(["start"]) == 0
    out, err = capsys.readouterr()
    assert "SASL_SSL" in out and "credentials: " in out and "ca: " in out
    assert all(p not in out + err for p in passwords(secure_kafka).values())
    assert broker.status(secure_kafka).secure
    produce(as_(secure_kafka, "upstream"), secure_kafka.topic("ingest"))
    with pytest.raises(AuthorizationError):
        produce(as_(secure_kafka, "upstream"), secure_kafka.topic("events"))


# -- no broker needed ---------------------------------------------------------------------


@pytest.mark.integration
def test_secure_on_a_home_formatted_open_is_one_clear_line(tmp_path: Path) -> None:
    port = free_port_pair()
    cache = {k: v for k, v in os.environ.items() if k in ("LIFECYCLE_CACHE", "XDG_CACHE_HOME")}
    s = dataclasses.replace(Settings.from_env(cache), home=tmp_path / "home", broker_port=port, bootstrap=f"127.0.0.1:{port}")
    data = s.broker_dir / "data"
    data.mkdir(parents=True)
    (data / "meta.properties").write_text("version=1\nnode.id=1\n")
    with pytest.raises(broker.BrokerError, match=r"formatted without --secure; SCRAM users can only be added"):
        broker.start(s, secure=True)
    assert not broker.status(s).running and not (s.home / "kafka-credentials").exists()
