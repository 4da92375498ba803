"""Purpose limitation downstream, enforced by the broker (``lifecycle broker start --secure``).

Each consumer of the policy logs in under its own name and may read its own feeds only, which
carry nothing but the purposes it serves: the mailer principal (marketing) is refused the
applicant tracking system's feed, which holds a CV, and the complete feeds, while it reads its
own. An erasure completes on the acknowledgements of the consumers that were sent the subject's
data alone: the others, never sent anything, never acknowledge, and are not waited for.

One secured broker and one worker (as ``worker``, over SASL_SSL) for the module; upstream
publishes as ``upstream``, each sink runs as its consumer's principal.
"""

from __future__ import annotations

import dataclasses
import subprocess
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from kafka import KafkaConsumer, KafkaProducer
from kafka.errors import AuthorizationError, KafkaError, TopicAuthorizationFailedError
from support.ports import free_port_pair

from processors.shredding import new_master_key_text
from streams.broker import acls
from streams.broker import local as broker
from streams.commands.sink import SinkError, SqliteSink, run_sink
from streams.plumbing import security
from streams.plumbing.reading import decoded_events, read_topic
from streams.plumbing.topics import ensure_topics, feeds
from streams.plumbing.upstream import publish_lines
from streams.settings import Settings, load_policy, packaged_policy_text
from streams.worker.processes import spawn_worker, stop_worker, wait_caught_up

pytestmark = pytest.mark.integration

CV = "Ada Applicant - 10 years of analytical engines"  # stands for a CV: only the ATS may read it
T0 = (datetime.now(UTC) - timedelta(hours=1)).replace(microsecond=0)  # recent: nothing expires meanwhile


def at(minutes: int) -> str:
    return (T0 + timedelta(minutes=minutes)).isoformat().replace("+00:00", "Z")


def ev(type_: str, event_id: str, subject: str, minutes: int, **fields: object) -> dict[str, Any]:
    return {"type": type_, "event_id": event_id, "subject_id": subject, "occurred_at": at(minutes), "source": "test", **fields}


def collected(event_id: str, subject: str, record: str, minutes: int, **kw: object) -> dict[str, Any]:
    return ev("DataCollected", event_id, subject, minutes, record_id=record, **kw)


def subscriber(prefix: str, subject: str, minutes: int = 0) -> list[dict[str, Any]]:
    """A newsletter subscription: the consent and the address it is sent to."""
    return [
        ev("ConsentGiven", f"{prefix}1", subject, minutes, purpose="newsletter"),
        collected(
            f"{prefix}2", subject, "r-news", minutes + 1,
            category="contact", purpose="newsletter", legal_basis="consent", fields={"email": f"{subject}@example.org"},
        ),
    ]  # fmt: skip


HISTORY = [
    # an applicant: a CV, for recruitment only
    collected(
        "cv1",
        "s-applicant",
        "r-cv",
        0,
        category="employment",
        purpose="recruitment",
        legal_basis="legitimate_interest",
        fields={"name": "Ada Applicant", "email": "ada@example.org", "cv": CV},
    ),
    # a newsletter reader who stays
    *subscriber("rd", "s-reader"),
    # one who goes: a newsletter subscription and an inquiry, nothing for the ATS or the warehouse
    *subscriber("gn", "s-gone", 2),
    collected(
        "gn3",
        "s-gone",
        "r-inquiry",
        4,
        category="contact",
        purpose="inquiry",
        legal_basis="legitimate_interest",
        fields={"name": "Gone Person", "message": "a question"},
    ),
]
ERASURE = [
    ev("ErasureRequested", "gn4", "s-gone", 10, request_id="q-gone"),
    ev("IdentityVerified", "gn5", "s-gone", 11, request_id="q-gone", method="email_link"),
]


def as_(s: Settings, user: str) -> Settings:
    return dataclasses.replace(s, kafka_user=user)


def publish(s: Settings, events: list[dict[str, Any]]) -> None:
    report = publish_lines([orjson.dumps(e) for e in events], as_(s, "upstream"))
    assert report.ok and report.published == len(events)


@pytest.fixture(scope="module")
def pipeline(
    secure_kafka: Settings, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Settings, subprocess.Popen[bytes]]]:
    """The worker on the topics and ACLs ``broker start --secure`` made, with the history folded."""
    web = free_port_pair()
    home = tmp_path_factory.mktemp("worker-home")
    s = dataclasses.replace(
        secure_kafka, master_key=new_master_key_text(), web_port=web, worker_url=f"http://127.0.0.1:{web}", home=home,
        kafka_credentials=secure_kafka.home / "kafka-credentials", kafka_ca=secure_kafka.broker_dir / "tls" / "ca.pem",
    )  # fmt: skip
    log = home / "worker.log"
    proc = spawn_worker(as_(s, "worker"), log)
    try:
        publish(s, HISTORY)
        wait_caught_up(as_(s, "worker"), timeout=120, proc=proc)
        yield s, proc
    finally:
        assert stop_worker(proc) == 0, log.read_text()[-3000:]
    text = log.read_text()
    assert "authorization" not in text.lower(), text[-3000:]  # the worker may write every feed
    assert CV not in text


def admin(s: Settings) -> Settings:
    """The broker's super user, found in the broker's home (the worker's is another)."""
    assert s.kafka_credentials is not None
    return broker.admin_settings(dataclasses.replace(s, home=s.kafka_credentials.parent))


def keys(s: Settings, name: str) -> set[bytes]:
    return {e.key for e in read_topic(admin(s), name) if e.key is not None}


def events_of(s: Settings, typ: str, subject: str) -> list[dict[str, Any]]:
    return [e for e in decoded_events(read_topic(as_(s, "auditor"), "events")) if e["type"] == typ and e["subject_id"] == subject]


# -- who reads what ------------------------------------------------------------------------


def test_the_mailer_cannot_read_a_cv(pipeline: tuple[Settings, subprocess.Popen[bytes]]) -> None:
    s, _ = pipeline
    # the CV went to the ATS's feed, and to no feed of a consumer without recruitment
    assert b"s-applicant/r-cv" in keys(s, "records.ats")
    assert not any(b"s-applicant" in k for name in feeds(load_policy(None)) if name != "records.ats" for k in keys(s, name))
    ats = read_topic(as_(s, "ats"), "records.ats")
    assert any(e.key == b"s-applicant/r-cv" and e.value for e in ats)

    mailer = as_(s, "mailer")
    for name in ("records.ats", "consent.ats", "records", "consent", "records.crm-mirror", "records.warehouse"):
        with pytest.raises(TopicAuthorizationFailedError) as info:
            read_topic(mailer, name, timeout_s=5)
        assert s.topic(name) in str(info.value), name
    own = {e.key for e in read_topic(mailer, "records.mailer")}
    assert own == {b"s-reader/r-news", b"s-gone/r-news"}  # the newsletter addresses, nothing else
    assert {e.key for e in read_topic(mailer, "consent.mailer")} == {b"s-reader", b"s-gone"}


def test_a_consumer_runs_its_sink_as_itself_only(pipeline: tuple[Settings, subprocess.Popen[bytes]], tmp_path: Path) -> None:
    """The mailer cannot copy the ATS's feed by naming it, nor join the ATS's sink group, nor
    write to a feed (its own included): only the worker says what a consumer holds."""
    s, _ = pipeline
    mailer = as_(s, "mailer")
    with SqliteSink(tmp_path / "stolen.db") as sink, pytest.raises(SinkError) as info:
        run_sink(mailer, sink, "ats", until_idle=True)
    assert str(info.value) == (
        f"mailer may not read {s.topic('records.ats')}: a consumer reads its own feeds, "
        "logged in under its own name (LIFECYCLE_KAFKA_USER=ats)"
    )
    group = KafkaConsumer(
        s.topic("records.mailer"), bootstrap_servers=s.bootstrap, group_id=f"{s.app_id}-sink-ats",
        **security.client_kwargs(mailer),
    )  # fmt: skip
    try:
        with pytest.raises(AuthorizationError):
            group.poll(timeout_ms=10_000)
    finally:
        group.close()
    producer = KafkaProducer(bootstrap_servers=s.bootstrap, max_block_ms=15_000, **security.client_kwargs(mailer))
    try:
        with pytest.raises(KafkaError):
            producer.send(s.topic("records.mailer"), key=b"s-x/r-x", value=b"forged").get(timeout=30)
    finally:
        producer.close()


# -- an erasure waits for the recipients alone ---------------------------------------------


def test_an_erasure_completes_on_the_acknowledgements_of_its_recipients_alone(
    pipeline: tuple[Settings, subprocess.Popen[bytes]], tmp_path: Path
) -> None:
    s, proc = pipeline
    policy = load_policy(None)
    # who was sent anything of the subject, read off the feeds themselves
    recipients = sorted(
        c
        for c in policy.consumer_names
        if any(k.startswith(b"s-gone") for kind in ("records", "consent") for k in keys(s, f"{kind}.{c}"))
    )
    assert recipients == ["crm-mirror", "mailer"]  # the inquiry, the newsletter; the ATS and the warehouse nothing
    publish(s, ERASURE)
    wait_caught_up(as_(s, "worker"), timeout=120, proc=proc)
    assert [e["request_id"] for e in events_of(s, "ErasureExecuted", "s-gone")] == ["q-gone"]

    def sink(name: str) -> None:
        with SqliteSink(tmp_path / f"{name}.db") as copy:
            report = run_sink(as_(s, name), copy, name, until_idle=True)
        assert report.deletes >= 1 and report.acks_sent >= 1, name

    def completed(wait: float) -> list[dict[str, Any]]:
        deadline = time.monotonic() + wait
        while True:
            wait_caught_up(as_(s, "worker"), timeout=60, proc=proc)
            done = events_of(s, "ErasureCompleted", "s-gone")
            if done or time.monotonic() > deadline:
                return done
            time.sleep(0.5)

    sink("mailer")  # one recipient of two: not complete yet
    assert completed(wait=3) == []
    sink("crm-mirror")  # the other: complete, though the ATS and the warehouse never acknowledged
    done = completed(wait=60)
    assert [(e["request_id"], e["consumers"]) for e in done] == [("q-gone", recipients)]
    acks = [e for e in decoded_events(read_topic(admin(s), "acks")) if e["subject_id"] == "s-gone"]
    assert {a["consumer"] for a in acks} == set(recipients)


# -- a consumer registered later ------------------------------------------------------------


def test_a_consumer_registered_after_the_first_start_gets_a_login_and_its_feeds(
    pipeline: tuple[Settings, subprocess.Popen[bytes]], tmp_path: Path
) -> None:
    """The format tool adds SCRAM users to a new home only: what ``broker start`` does for a
    consumer the policy registers since (its user, its feeds, its ACLs), done here by hand."""
    s, _ = pipeline
    policy = tmp_path / "policy.toml"
    policy.write_text(
        packaged_policy_text() + '\n[consumers.helpdesk]\nrole = "processor"\nregion = "eu-west"\npurposes = ["inquiry"]\n'
    )
    root = dataclasses.replace(admin(s), policy_file=policy)
    password = "helpdesk-" + uuid.uuid4().hex
    mailer_before = read_topic(as_(s, "mailer"), "records.mailer")
    # a user the broker has keeps its password: the mailer's here is ignored
    assert acls.add_users(root, {"helpdesk": password, "mailer": "not-the-mailers-password"}) == ["helpdesk"]
    assert acls.add_users(root, {"helpdesk": "another"}) == []
    ensure_topics(root)
    acls.apply(root)

    helpdesk = dataclasses.replace(s, kafka_user="helpdesk", kafka_password=password, policy_file=policy)
    assert read_topic(helpdesk, "records.helpdesk") == []
    with pytest.raises(TopicAuthorizationFailedError):
        read_topic(helpdesk, "records.mailer", timeout_s=5)
    assert read_topic(as_(s, "mailer"), "records.mailer") == mailer_before  # its own password still opens it
