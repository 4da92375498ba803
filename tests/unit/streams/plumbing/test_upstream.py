"""Why ``lifecycle publish`` could not deliver, said in its last line: the brokers that do not
answer and the setting that refuses a write without them (no broker needed: closed and
listening ports on loopback stand in for brokers down and up)."""

from __future__ import annotations

import dataclasses
import socket
from collections.abc import Iterator

import pytest

from streams.commands.publish import summary
from streams.plumbing import upstream
from streams.plumbing.upstream import PublishReport, diagnose
from streams.settings import Settings


def _closed() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{s.getsockname()[1]}"  # nobody listens once it is closed


@pytest.fixture
def listening() -> Iterator[str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield f"127.0.0.1:{s.getsockname()[1]}"


def _on(bootstrap: str) -> Settings:
    return dataclasses.replace(Settings.from_env({}), bootstrap=bootstrap)


def test_the_brokers_that_do_not_answer_are_named(listening: str, monkeypatch: pytest.MonkeyPatch) -> None:
    one = _closed()
    assert diagnose(_on(one)) == f"the broker at {one} (LIFECYCLE_BOOTSTRAP) does not answer"
    assert diagnose(_on(f"{_closed()},{_closed()}")) == "none of the 2 brokers at LIFECYCLE_BOOTSTRAP answers"
    assert diagnose(_on(listening)) == ""  # every broker answers: nothing to add to "no acknowledgement"

    asked: list[list[str]] = []
    monkeypatch.setattr(upstream, "_min_insync", lambda settings, live: asked.append(live) or "2")  # what those up say
    down = [_closed(), _closed()]
    assert diagnose(_on(",".join([listening, *down]))) == (
        f"2 of the 3 brokers at LIFECYCLE_BOOTSTRAP do not answer ({', '.join(down)}), "
        "and lifecycle.ingest takes a write only with 2 copies in sync (min.insync.replicas)"
    )
    assert asked == [[listening]]  # asked of the broker that answers only

    monkeypatch.setattr(upstream, "_min_insync", lambda settings, live: "")  # they do not say
    assert diagnose(_on(",".join([listening, *down]))).endswith(
        "and lifecycle.ingest takes a write only with min.insync.replicas copies in sync"
    )


def test_the_summary_gives_the_cause_when_there_is_one() -> None:
    s = _on("127.0.0.1:9092")
    said = summary(PublishReport(published=2, undelivered=3, cause="the broker at x does not answer"), s, 10)
    assert said == (
        "published 2 events to lifecycle.ingest, 3 lines not delivered "
        "(no acknowledgement within 10 s: the broker at x does not answer (--timeout))"
    )
    assert summary(PublishReport(undelivered=1), s, 10).endswith(
        "(no acknowledgement within 10 s: is the broker at 127.0.0.1:9092 up? (--timeout))"
    )
