"""Every way a managed cluster lets a client log in, end to end on the local secured broker.

PLAIN, SCRAM-SHA-256 and SCRAM-SHA-512 over TLS on the broker port, and mutual TLS (a client
certificate from the broker's CA, its CN the principal) on the broker port + 2. For each, as
a user of a managed cluster would set it (``LIFECYCLE_KAFKA_MECHANISM`` and the files, nothing
found by default): upstream publishes, the worker folds as ``worker``, the mailer's sink copies
its feed and carries out an erasure, and the erasure completes on its acknowledgement. The
same ACLs apply whichever way a principal logs in. A wrong password or a certificate from
another CA is one line from the CLI, and the password is in none of it.

One secured broker for the module; one worker home shared by the four cases, one worker each.
"""

from __future__ import annotations

import dataclasses
import os
import sqlite3
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import orjson
import pytest
from support.ports import free_port_pair

from processors.shredding import new_master_key_text
from streams.broker import local as broker
from streams.broker.tls import ensure_client_certs, ensure_tls
from streams.commands.sink import SqliteSink, run_sink
from streams.plumbing import security
from streams.plumbing.reading import decoded_events, read_topic
from streams.plumbing.upstream import publish_lines
from streams.settings import Settings
from streams.worker.processes import spawn_worker, stop_worker, wait_caught_up

pytestmark = pytest.mark.integration

MECHANISMS = ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "mTLS"]
ENCRYPTED_KEY = "mTLS, encrypted key"
"""mTLS with the client key kept encrypted, as a managed cluster's console hands it out
(``LIFECYCLE_KAFKA_KEY_PASSWORD``): librdkafka and kafka-python must both open it."""
KEY_PASSWORD = "a-key-password-" + uuid.uuid4().hex[:8]


@pytest.fixture(scope="module")
def cluster(secure_kafka: Settings, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """The broker as a managed cluster looks to its users: a worker home of its own, the CA
    and the credentials handed over as files."""
    web = free_port_pair()
    return dataclasses.replace(
        secure_kafka, master_key=new_master_key_text(), web_port=web, worker_url=f"http://127.0.0.1:{web}",
        home=tmp_path_factory.mktemp("worker-home"),
        kafka_credentials=secure_kafka.home / "kafka-credentials", kafka_ca=secure_kafka.broker_dir / "tls" / "ca.pem",
    )  # fmt: skip


def login(s: Settings, mechanism: str, user: str, broker_home: Path) -> Settings:
    """``user`` logging in with ``mechanism``: a password for SASL, the files the broker issued for mTLS."""
    if mechanism not in (security.MTLS, ENCRYPTED_KEY):
        return dataclasses.replace(s, kafka_user=user, kafka_mechanism=mechanism)
    cert, key = security.client_cert_paths(broker_home / "broker" / "tls", user)
    password = ""
    if mechanism == ENCRYPTED_KEY:
        key, password = encrypted(key, broker_home / "encrypted-keys" / f"{user}.pem"), KEY_PASSWORD
    port = broker.cert_port(s)
    return dataclasses.replace(
        s, kafka_user=user, kafka_mechanism=security.MTLS, kafka_cert=cert, kafka_key=key, kafka_credentials=None,
        kafka_key_password=password, bootstrap=f"127.0.0.1:{port}",
    )  # fmt: skip


def encrypted(key: Path, to: Path) -> Path:
    """The client key, encrypted with ``KEY_PASSWORD`` (PKCS#8, the best the library has)."""
    from cryptography.hazmat.primitives import serialization

    plain = serialization.load_pem_private_key(key.read_bytes(), password=None)
    pem = plain.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(KEY_PASSWORD.encode()),
    )
    security.write_private(to, pem)
    return to


def at(minutes: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - 3600 + minutes * 60))


def ev(type_: str, event_id: str, subject: str, minutes: int, **fields: object) -> dict[str, Any]:
    return {"type": type_, "event_id": event_id, "subject_id": subject, "occurred_at": at(minutes), "source": "test", **fields}


def publish(s: Settings, events: list[dict[str, Any]]) -> None:
    report = publish_lines([orjson.dumps(e) for e in events], s)
    assert report.ok and report.published == len(events)


@pytest.mark.parametrize("mechanism", [*MECHANISMS, ENCRYPTED_KEY])
def test_publish_fold_sink_and_erase_with_each_login(
    cluster: Settings, secure_kafka: Settings, mechanism: str, tmp_path: Path
) -> None:
    def as_(user: str) -> Settings:
        return login(cluster, mechanism, user, secure_kafka.home)

    tag = uuid.uuid4().hex[:6]
    subject = f"s-{tag}"
    worker = as_("worker")
    log = tmp_path / "worker.log"
    proc = spawn_worker(worker, log)
    try:
        publish(as_("upstream"), [
            ev("ConsentGiven", f"{tag}1", subject, 0, purpose="newsletter"),
            ev("DataCollected", f"{tag}2", subject, 1, record_id="r-news", category="contact", purpose="newsletter",
               legal_basis="consent", fields={"email": f"{subject}@example.org"}),
        ])  # fmt: skip
        wait_caught_up(worker, timeout=120, proc=proc)
        copy = tmp_path / "mailer.db"
        with SqliteSink(copy) as sink:
            report = run_sink(as_("mailer"), sink, "mailer", until_idle=True)
        assert report.upserts >= 1
        with sqlite3.connect(copy) as db:
            assert db.execute("SELECT record_id FROM records WHERE subject_id = ?", (subject,)).fetchall() == [("r-news",)]

        publish(as_("upstream"), [
            ev("ErasureRequested", f"{tag}3", subject, 10, request_id=f"q-{tag}"),
            ev("IdentityVerified", f"{tag}4", subject, 11, request_id=f"q-{tag}", method="email_link"),
        ])  # fmt: skip
        wait_caught_up(worker, timeout=120, proc=proc)
        with SqliteSink(copy) as sink:
            report = run_sink(as_("mailer"), sink, "mailer", until_idle=True)
        assert report.deletes >= 1 and report.acks_sent >= 1
        with sqlite3.connect(copy) as db:
            assert db.execute("SELECT count(*) FROM records WHERE subject_id = ?", (subject,)).fetchone() == (0,)

        deadline, done = time.monotonic() + 60, []
        while not done and time.monotonic() < deadline:
            wait_caught_up(worker, timeout=60, proc=proc)
            entries = decoded_events(read_topic(as_("auditor"), "events"))
            done = [e for e in entries if e["type"] == "ErasureCompleted" and e["subject_id"] == subject]
            time.sleep(0.3)
        assert [(e["request_id"], e["consumers"]) for e in done] == [(f"q-{tag}", ["mailer"])]
    finally:
        assert stop_worker(proc) == 0, log.read_text()[-3000:]
    text = log.read_text()
    protocol = f"SASL_SSL ({mechanism})" if worker.kafka_mechanism != security.MTLS else "SSL"
    assert f"as worker over {protocol}" in text and "authorization" not in text.lower(), text[-3000:]
    assert all(p not in text for p in security.read_credentials(secure_kafka.home / "kafka-credentials").values())
    assert KEY_PASSWORD not in text
    if mechanism == ENCRYPTED_KEY:
        assert b"ENCRYPTED PRIVATE KEY" in worker.kafka_key.read_bytes()  # type: ignore[union-attr]


def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "streams.cli", *args], env={**os.environ, **env}, capture_output=True, text=True,
        timeout=120, stdin=subprocess.DEVNULL,
    )  # fmt: skip


@pytest.mark.parametrize("mechanism", MECHANISMS)
def test_a_wrong_password_or_certificate_is_one_line(
    cluster: Settings, secure_kafka: Settings, mechanism: str, tmp_path: Path
) -> None:
    s = login(cluster, mechanism, "upstream", secure_kafka.home)
    wrong = "not-the-password-" + uuid.uuid4().hex
    if mechanism == security.MTLS:  # a certificate for the same name, from a CA the broker never heard of
        stranger = ensure_tls(tmp_path / "other" / "tls")
        ensure_client_certs(stranger, ("upstream",))
        cert, key = security.client_cert_paths(tmp_path / "other" / "tls", "upstream")
        s = dataclasses.replace(s, kafka_cert=cert, kafka_key=key)
    else:
        s = dataclasses.replace(s, kafka_password=wrong, kafka_credentials=None)
    events = tmp_path / "events.jsonl"
    events.write_bytes(orjson.dumps(ev("ConsentGiven", "w1", "s-w", 0, purpose="newsletter")) + b"\n")
    out = cli(s.to_env(), "publish", str(events), "--timeout", "10")
    assert out.returncode != 0
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: no Kafka broker answers at {s.bootstrap}"), out.stderr
    named = "LIFECYCLE_KAFKA_CERT" if mechanism == security.MTLS else f"the login as upstream with {mechanism}"
    assert named in lines[0], lines[0]
    assert "Traceback" not in out.stderr and wrong not in out.stderr + out.stdout
    passwords = security.read_credentials(secure_kafka.home / "kafka-credentials").values()
    assert all(p not in out.stderr + out.stdout for p in passwords)
