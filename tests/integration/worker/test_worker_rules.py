"""The worker against the pure rules, on a real broker, seen the way users see it.

``tests/test_fold.py`` proves the rules on the pure fold; ``tests/test_pipeline.py`` proves the
plumbing on a few histories. This module closes the gap between them: a real worker process
must do on Kafka exactly what the pure functions say, and nothing more. Three angles:

- the retention timer on the broker's clock (nothing upstream happens, yet old data goes);
- the HTTP views and the CLI built on them (bearer token, 401 that leaks nothing, 404);
- one history that uses every upstream event type, folded by the worker and by
  ``processors.fold.apply`` side by side, compared on every downstream topic and view.

Expectations are computed with the pure code (``parse_line`` → ``apply`` with
``now = occurred_at``, as the worker does), never written out by hand, so the tests keep
holding when a rule changes on both sides and catch the worker when it drifts from the fold.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import orjson
import pytest
from support.http import bearer, http_get

from processors.fold import (
    CHAINED_TYPES,
    DECISION_TYPES,
    TIMER,
    ConsentChange,
    Decision,
    RecordChange,
    apply,
    consent_view,
    export,
    new_state,
)
from processors.guard import screen
from processors.policy import DAY_MS
from schemas import UPSTREAM_EVENTS
from schemas.contract import parse_line, record_key
from streams.plumbing.reading import latest_by_key, read_topic
from streams.plumbing.upstream import publish_lines
from streams.settings import Settings, load_policy
from streams.worker.processes import spawn_worker, stop_worker, wait_caught_up

pytestmark = pytest.mark.integration

POLICY = load_policy(None)
MINUTE_MS = 60_000
T = TypeVar("T")


# --------------------------------------------------------------------------------------
# building histories (JSON-lines form, exactly what upstream systems hand `lifecycle publish`)
# --------------------------------------------------------------------------------------


def now_ms() -> int:
    return int(time.time() * 1000)


def iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).isoformat().replace("+00:00", "Z")


def ev(type_: str, event_id: str, subject: str, at_ms: int, **fields: object) -> dict:
    return {
        "type": type_,
        "event_id": event_id,
        "subject_id": subject,
        "occurred_at": iso(at_ms),
        "source": "test",
        **fields,
    }


def collected(event_id: str, subject: str, record: str, at_ms: int, **kw: object) -> dict:
    base: dict[str, object] = {
        "record_id": record,
        "category": "contact",
        "purpose": "inquiry",
        "legal_basis": "legitimate_interest",
        "fields": {"email": f"{subject}@example.org", "name": f"Test Person {subject}"},
    }
    base.update(kw)
    return ev("DataCollected", event_id, subject, at_ms, **base)


def lines(events: list[dict]) -> list[bytes]:
    return [orjson.dumps(e) for e in events]


def roundtrip(value: Any) -> Any:
    """What a JSON client receives: a copy through JSON, so tuples, order and aliasing vanish."""
    return orjson.loads(orjson.dumps(value))


# --------------------------------------------------------------------------------------
# the pure side: what the rules say the worker must produce
# --------------------------------------------------------------------------------------


@dataclass
class Expected:
    """The pure fold's verdict on a history, in the shapes downstream readers see."""

    states: dict[str, dict] = field(default_factory=dict)
    records: dict[str, dict | None] = field(default_factory=dict)  # last value per records key
    consent: dict[str, dict | None] = field(default_factory=dict)  # last value per consent key
    decisions: dict[str, dict] = field(default_factory=dict)  # event_id -> decision event


def fold_purely(history: list[dict]) -> Expected:
    """Fold a history the way the worker does, with the pure functions only.

    Each line goes through ``parse_line`` (what ``lifecycle publish`` does) and must pass the
    guard, so the comparison is about the fold and not about a refusal.
    """
    parsed = []
    for line in lines(history):
        event = parse_line(line)
        refusal = screen(event, POLICY)
        assert refusal is None, f"test history: {event['event_id']} would be refused ({refusal})"
        parsed.append(event)
    return fold_events(parsed)


def fold_events(events: Iterable[dict]) -> Expected:
    """``apply`` per subject, in order, with ``now`` the event's own ``occurred_at``: exactly
    what the worker passes for an upstream event."""
    out = Expected()
    for event in events:
        sid = event["subject_id"]
        state = out.states.setdefault(sid, new_state(sid))
        _, outputs = apply(state, event, event["occurred_at"], POLICY)
        for o in outputs:
            if isinstance(o, RecordChange):
                out.records[record_key(o.subject_id, o.record_id).decode()] = roundtrip(o.value)
            elif isinstance(o, ConsentChange):
                out.consent[o.subject_id] = roundtrip(o.value)
            elif isinstance(o, Decision):
                out.decisions[o.event["event_id"]] = without_chain(roundtrip(o.event))
    out.states = roundtrip(out.states)
    return out


def without_chain(event: dict) -> dict:
    """The hash chain is the log writer's business, not the fold's: left out of comparisons."""
    return {k: v for k, v in event.items() if k != "chain"}


# --------------------------------------------------------------------------------------
# the Kafka side: what a downstream consumer reads
# --------------------------------------------------------------------------------------


def last_values(settings: Settings, topic: str) -> dict[str, dict | None]:
    """What a compacted topic converges to, decoded; the Avro ``type`` tag is dropped."""
    out: dict[str, dict | None] = {}
    for key, entry in latest_by_key(read_topic(settings, topic)).items():
        value = entry.decoded()
        if value is not None:
            value = {k: v for k, v in value.items() if k != "type"}
        out[key.decode()] = value
    return out


def log_of_record(settings: Settings) -> list[dict]:
    """Every event on ``lifecycle.events``, decoded, in log order per partition (= per subject)."""
    entries = sorted(read_topic(settings, "events"), key=lambda e: (e.partition, e.offset))
    return [d for d in (e.decoded() for e in entries) if d is not None]


def decisions_on_log(settings: Settings) -> list[dict]:
    """Every decision event on ``lifecycle.events``, in log order per partition."""
    return [d for d in log_of_record(settings) if d["type"] in DECISION_TYPES]


def wait_for(probe: Callable[[], T | None], what: str, timeout: float = 60.0, every: float = 0.5) -> T:
    """Poll until ``probe`` returns something truthy; a bounded wait, never a fixed sleep."""
    deadline = time.monotonic() + timeout
    while True:
        got = probe()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"within {timeout:.0f} s: {what}")
        time.sleep(every)


# --------------------------------------------------------------------------------------
# the worker's HTTP views and the CLI
# --------------------------------------------------------------------------------------


def wait_web_ready(settings: Settings, timeout: float = 60.0) -> None:
    """The views come up beside the worker's loop; any HTTP answer means they listen."""

    def answers() -> bool:
        try:
            http_get(settings, "/subjects/s-probe/consent", None)
        except OSError:
            return False
        return True

    wait_for(answers, f"the worker's web server answers at {settings.worker_url}", timeout)


def cli(settings: Settings, *args: str) -> subprocess.CompletedProcess[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LIFECYCLE_")}
    env.update(settings.to_env())
    return subprocess.run([sys.executable, "-m", "streams.cli", *args], env=env, capture_output=True, timeout=120)


TIME_KEYS = ("at", "deadline")
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def is_time_key(key: str) -> bool:
    return key in TIME_KEYS or key.endswith(("_at", "_deadline"))


def read_back(value: Any, key: str = "") -> Any:
    """A view as the CLI printed it, with every instant read back into epoch milliseconds.

    The promise is "dates are printed as ISO-8601 UTC": every time field must be such a string
    (or null). Written independently of ``streams.plumbing.text.humane`` on purpose, and agnostic of
    how many fraction digits are printed, so it states the promise, not the implementation.
    """
    if isinstance(value, dict):
        return {k: read_back(v, k) for k, v in value.items()}
    if isinstance(value, list):
        return [read_back(v, key) for v in value]
    if is_time_key(key) and value is not None:
        assert isinstance(value, str), f"the CLI printed {key!r} as {type(value).__name__}, not as an ISO-8601 time"
        when = datetime.fromisoformat(value)
        assert when.utcoffset() == timedelta(0), f"the CLI printed {key!r} in another zone than UTC"
        return (when - EPOCH) // timedelta(milliseconds=1)
    return value


@contextlib.contextmanager
def running_worker(settings: Settings, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    proc = spawn_worker(settings, log)
    try:
        yield proc
    finally:
        stop_worker(proc)


# --------------------------------------------------------------------------------------
# 1. the retention timer
# --------------------------------------------------------------------------------------


def test_retention_timer_tombstones_an_overdue_record_and_records_the_decision(settings: Settings, tmp_path: Path) -> None:
    """Nothing upstream happens, yet a record past its 12 months goes: the timer on its own.

    A worker with a 1 s timer is given one record collected 400 days ago (overdue under the
    packaged policy: no relationship, legitimate interest) and two collected yesterday, one of
    them for the same subject. The overdue one must get a tombstone and a ``RetentionExpired``
    taken on the timer; the recent ones must stay, also in the subject's export.
    """
    fast = dataclasses.replace(settings, timer_interval=1.0)
    start = now_ms()
    old_at, fresh_at = start - 400 * DAY_MS, start - DAY_MS
    history = [
        collected("t1", "s-old", "r-old", old_at),
        collected("t2", "s-old", "r-fresh", fresh_at),
        collected("t3", "s-fresh", "r1", fresh_at),
    ]
    expected = fold_purely(history)
    assert all(value is not None for value in expected.records.values())  # live at ingestion
    deadline = POLICY.no_relationship_deadline(parse_line(lines(history)[0])["occurred_at"])
    assert deadline < start  # the premise: overdue before the worker ever sees it

    with running_worker(fast, tmp_path / "worker.log") as proc:
        assert publish_lines(lines(history), fast).ok

        def tombstoned() -> bool:
            records = last_values(fast, "records")
            return "s-old/r-old" in records and records["s-old/r-old"] is None

        wait_for(tombstoned, "a tombstone for s-old/r-old on lifecycle.records")

        def expiries() -> list[dict]:
            return [d for d in decisions_on_log(fast) if d["type"] == "RetentionExpired"]

        found = wait_for(expiries, "a RetentionExpired decision on lifecycle.events")
        wait_caught_up(fast, proc=proc)
        seen = now_ms()
        wait_web_ready(fast)
        status, body = http_get(fast, "/subjects/s-old/export", bearer(fast))

    assert len(found) == 1, "one overdue record, one decision"
    decision = found[0]
    assert decision["subject_id"] == "s-old"
    assert decision["record_id"] == "r-old"
    assert decision["reason"] == "no_relationship"
    assert decision["deadline"] == deadline
    # taken on a tick, not on an upstream event: "timer" (or "timer@<offset>" where a tick
    # records its place in the log for the replay)
    assert decision["caused_by"].partition("@")[0] == TIMER
    assert start <= decision["occurred_at"] <= seen  # stamped with the timer's clock

    records = last_values(fast, "records")
    assert records == {
        "s-old/r-old": None,
        "s-old/r-fresh": expected.records["s-old/r-fresh"],
        "s-fresh/r1": expected.records["s-fresh/r1"],
    }
    assert [d["record_id"] for d in decisions_on_log(fast)] == ["r-old"]  # the only decision taken

    assert status == 200
    held = orjson.loads(body)
    assert [r["record_id"] for r in held["records"]] == ["r-fresh"]


# --------------------------------------------------------------------------------------
# 2. the HTTP views and the CLI
# --------------------------------------------------------------------------------------


def view_history(base: int) -> list[dict]:
    """A subject with a record, consent given and withdrawn, and an answered access request."""
    return [
        collected("v1", "s-view", "r1", base),
        ev("ConsentGiven", "v2", "s-view", base + MINUTE_MS, purpose="newsletter"),
        ev("ConsentGiven", "v3", "s-view", base + 2 * MINUTE_MS, purpose="marketing_email"),
        ev("ConsentWithdrawn", "v4", "s-view", base + 3 * MINUTE_MS, purpose="marketing_email"),
        ev("AccessRequested", "v5", "s-view", base + 4 * MINUTE_MS, request_id="q-v1"),
        ev("IdentityVerified", "v6", "s-view", base + 5 * MINUTE_MS, request_id="q-v1", method="email_link"),
    ]


def test_views_answer_with_the_pure_views_behind_a_token_that_leaks_nothing(settings: Settings, tmp_path: Path) -> None:
    """The consent and export views serve exactly ``consent_view`` / ``export`` of the state.

    Without the token, or with a wrong one, the answer is the same 401 for a known and an
    unknown subject, so nobody learns who is on file; with the token, an unknown subject is a
    404. This is what a support agent or a self-service page relies on.
    """
    history = view_history(now_ms() - 3 * DAY_MS)
    state = fold_purely(history).states["s-view"]

    with running_worker(settings, tmp_path / "worker.log") as proc:
        assert publish_lines(lines(history), settings).ok
        wait_caught_up(settings, proc=proc)
        wait_web_ready(settings)

        for view, render in (("consent", consent_view), ("export", lambda st: export(st, POLICY))):
            status, body = http_get(settings, f"/subjects/s-view/{view}", bearer(settings))
            assert status == 200, f"/{view} of a known subject"
            assert orjson.loads(body) == roundtrip(render(state)), f"/{view} differs from the pure view"

            refusals = set()
            for subject in ("s-view", "s-nobody"):
                for authorization in (None, "Bearer not-the-token", settings.token(), f"Bearer {settings.token()}x"):
                    status, body = http_get(settings, f"/subjects/{subject}/{view}", authorization)
                    assert status == 401, f"/{view} of {subject} with a missing or wrong token"
                    assert subject.encode() not in body
                    refusals.add(body)
            assert len(refusals) == 1, f"/{view}: the 401 differs between known and unknown subjects"

            status, body = http_get(settings, f"/subjects/s-nobody/{view}", bearer(settings))
            assert status == 404, f"/{view} of an unknown subject with the token"

        shown = {view: cli(settings, view, "s-view") for view in ("consent", "export")}
        unknown = {view: cli(settings, view, "s-nobody") for view in ("consent", "export")}

    for view in ("consent", "export"):
        missing = unknown[view]
        err = missing.stderr.decode()
        assert missing.returncode == 1, f"{view} s-nobody exited {missing.returncode}"
        assert missing.stdout == b""
        assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, f"{view} s-nobody: {err}"
        assert "s-nobody" in err
    for view, render in (("consent", consent_view), ("export", lambda st: export(st, POLICY))):
        done = shown[view]
        assert done.returncode == 0, f"{view} s-view: {done.stderr.decode()}"
        assert read_back(orjson.loads(done.stdout)) == roundtrip(render(state)), f"CLI {view} differs"


# --------------------------------------------------------------------------------------
# 3. every upstream event type, worker vs pure fold
# --------------------------------------------------------------------------------------


def full_history(base: int) -> list[dict]:
    """Four subjects that between them use every upstream event type but acknowledgements.

    Every event is timed within the last ten days, so every record's retention and every
    request's deadline lies in the future and the timer has nothing to add: what the worker
    writes must come from the events alone.
    """
    t = iter(range(base, base + 1000 * MINUTE_MS, MINUTE_MS))
    a, b, c, d = "s-h1", "s-h2", "s-h3", "s-h4"
    a01 = collected("a01", a, "r1", next(t))
    subject_a = [  # consent, unsubscribe and every request type but erasure
        a01,
        ev("ConsentGiven", "a02", a, next(t), purpose="newsletter"),
        ev("ConsentGiven", "a03", a, next(t), purpose="marketing_email"),
        collected("a04", a, "r2", next(t), purpose="marketing_email", legal_basis="consent"),
        ev("ConsentGiven", "a05", a, next(t), purpose="analytics_cookies"),
        ev("ConsentWithdrawn", "a06", a, next(t), purpose="analytics_cookies"),
        ev("Unsubscribed", "a07", a, next(t), channel="email"),
        ev("AccessRequested", "a08", a, next(t), request_id="q-a1"),
        ev("IdentityVerified", "a09", a, next(t), request_id="q-a1", method="email_link"),
        ev("PortabilityRequested", "a10", a, next(t), request_id="q-a2"),
        ev("DeadlineExtended", "a11", a, next(t), request_id="q-a2", notice="notice-a2"),
        ev(
            "RectificationRequested",
            "a12",
            a,
            next(t),
            request_id="q-a3",
            record_id="r1",
            fields={"name": "Test Person Corrected"},
        ),
        ev("IdentityVerified", "a13", a, next(t), request_id="q-a3", method="email_link"),
        ev("IdentityVerified", "a14", a, next(t), request_id="q-a4", method="id_document"),
        ev("RestrictionRequested", "a15", a, next(t), request_id="q-a4", purpose="inquiry"),
        ev("ObjectionRaised", "a16", a, next(t), request_id="q-a5", purpose="marketing_email"),
        collected("a17", a, "r3", next(t)),  # inquiry is restricted now: refused by the fold
        ev("AccessRequested", "a18", a, next(t), request_id="q-a1"),  # a duplicate request
        a01,  # the same event delivered again: changes nothing
        # a seen event_id with other content: another event under a reused id, dead-lettered
        collected("a01", a, "r1", next(t), fields={"email": "changed@example.org"}),
    ]
    subject_b = [  # relationship, legal obligation, legal hold, erasure, hold released
        ev("RelationshipStarted", "b01", b, next(t), relationship_id="rel-1", kind="client"),
        collected(
            "b02",
            b,
            "r1",
            next(t),
            category="billing",
            purpose="invoicing",
            legal_basis="legal_obligation",
            fields={"name": "Test Person B", "city": "Testville"},
        ),
        collected("b03", b, "r2", next(t), purpose="service_delivery", legal_basis="contract"),
        collected("b04", b, "r3", next(t)),
        ev("RelationshipEnded", "b05", b, next(t), relationship_id="rel-1", kind="client"),
        ev("LegalHoldPlaced", "b06", b, next(t), hold_id="h-1", reason="litigation"),
        ev("ErasureRequested", "b07", b, next(t), request_id="q-b1"),
        ev("IdentityVerified", "b08", b, next(t), request_id="q-b1", method="id_document"),
        ev("LegalHoldReleased", "b09", b, next(t), hold_id="h-1", reason="settled"),
        ev("LegalHoldReleased", "b10", b, next(t), hold_id="h-9", reason="never placed"),
        ev("RelationshipStarted", "b11", b, next(t), relationship_id="rel-2", kind="vendor"),
    ]
    subject_c = [  # a full erasure, then requests against the erased subject
        collected("c01", c, "r1", next(t)),
        ev("ConsentGiven", "c02", c, next(t), purpose="newsletter"),
        collected("c03", c, "r2", next(t), purpose="newsletter", legal_basis="consent"),
        ev("ErasureRequested", "c04", c, next(t), request_id="q-c1"),
        ev("IdentityVerified", "c05", c, next(t), request_id="q-c1", method="email_link"),
        ev("ErasureRequested", "c06", c, next(t), request_id="q-c2"),
        ev("IdentityVerified", "c07", c, next(t), request_id="q-c2", method="email_link"),
        ev("DeadlineExtended", "c08", c, next(t), request_id="q-c9", notice="notice-c9"),
        # collected before the erasure ran, delivered after it: covered by it, refused
        collected("c09", c, "r9", base),
    ]
    subject_d = [  # the fold's own refusals, and a withdrawal before any consent
        collected("d01", d, "r1", next(t), purpose="marketing_email", legal_basis="consent"),
        collected("d02", d, "r2", next(t), category="billing", purpose="invoicing"),
        ev("Unsubscribed", "d03", d, next(t), channel="email"),
        ev("ConsentWithdrawn", "d04", d, next(t), purpose="newsletter"),
        collected("d05", d, "r3", next(t), category="employment", purpose="recruitment"),
        ev("AccessRequested", "d06", d, next(t), request_id="q-d1"),
        ev("IdentityVerified", "d07", d, next(t), request_id="q-d1", method="email_link"),
        ev("DeadlineExtended", "d08", d, next(t), request_id="q-d1", notice="notice-d1"),
        # an objection to a legitimate interest, weighed and not upheld; a restriction for a
        # legal claim, lifted with a notice
        ev("ObjectionRaised", "d09", d, next(t), request_id="q-d2", purpose="recruitment"),
        ev("IdentityVerified", "d10", d, next(t), request_id="q-d2", method="email_link"),
        ev("ObjectionDecided", "d11", d, next(t), request_id="q-d2", upheld=False, notice="notice-d2"),
        ev("RestrictionRequested", "d12", d, next(t), request_id="q-d3", purpose="invoicing", keep_for_claims=True),
        ev("IdentityVerified", "d13", d, next(t), request_id="q-d3", method="id_document"),
        ev("RestrictionLifted", "d14", d, next(t), request_id="q-d3", notice="notice-d3"),
    ]
    # interleaved as several upstream systems would publish; each subject keeps its own order
    streams = [subject_a, subject_b, subject_c, subject_d]
    return [s[i] for i in range(max(map(len, streams))) for s in streams if i < len(s)]


def by_subject(events: list[dict]) -> dict[str, list[tuple[str, str]]]:
    """(type, event_id) per subject, in order: what ordering per partition key promises."""
    out: dict[str, list[tuple[str, str]]] = {}
    for e in events:
        out.setdefault(e["subject_id"], []).append((e["type"], e["event_id"]))
    return out


UPSTREAM = {
    "DataCollected",
    "ConsentGiven",
    "ConsentWithdrawn",
    "Unsubscribed",
    "RelationshipStarted",
    "RelationshipEnded",
    "IdentityVerified",
    "ErasureRequested",
    "AccessRequested",
    "PortabilityRequested",
    "RectificationRequested",
    "RestrictionRequested",
    "ObjectionRaised",
    "LegalHoldPlaced",
    "LegalHoldReleased",
    "DeadlineExtended",
    "RestrictionLifted",
    "ObjectionDecided",
}


def test_history_of_every_event_type_gives_exactly_what_the_pure_fold_gives(settings: Settings, tmp_path: Path) -> None:
    """The worker is the pure fold plus plumbing: an auditor's replay must find the same results.

    The last value of every key on ``lifecycle.records`` and ``lifecycle.consent`` and the
    consent and export views of every subject must equal what ``processors.fold`` computes
    from the published history; the decisions on ``lifecycle.events`` (field by field, the
    hash chain aside) must be exactly those of the pure fold replaying the log of record.
    """
    history = full_history(now_ms() - 10 * DAY_MS)
    assert {e["type"] for e in history} == UPSTREAM  # the premise: every upstream type is used
    assert set(UPSTREAM_EVENTS) - UPSTREAM == {"ErasureAcknowledged"}  # sent by consumers, on acks
    expected = fold_purely(history)
    # the premise: the history exercises tombstones, retention, erasure and refusals
    assert None in expected.records.values() and None in expected.consent.values()
    assert {"RetentionExpired", "ErasureExecuted", "RequestRejected", "RequestFulfilled"} <= {
        d["type"] for d in expected.decisions.values()
    }
    assert "covered_by_erasure" in {d.get("reason") for d in expected.decisions.values()}  # c09, late

    with running_worker(settings, tmp_path / "worker.log") as proc:
        report = publish_lines(lines(history), settings)
        assert report.ok and report.published == len(history)
        wait_caught_up(settings, proc=proc)
        wait_web_ready(settings)
        views = {
            (sid, view): http_get(settings, f"/subjects/{sid}/{view}", bearer(settings))
            for sid in expected.states
            for view in ("consent", "export")
        }

    # every event reached the fold but the one reusing a01's id with other content
    (refused,) = [e.decoded() for e in read_topic(settings, "rejected")]
    assert refused is not None
    assert (refused["event_id"], refused["reason"], refused["field"]) == ("a01", "conflicting_duplicate", "event_id")
    assert last_values(settings, "records") == expected.records
    assert last_values(settings, "consent") == expected.consent

    # The log of record holds the published events, each subject's in publishing order. Their
    # personal fields may sit there sealed (crypto-shredding), and a decision may say which
    # keys it destroyed, so decisions are checked the auditor's way: against the pure fold
    # replaying the upstream events of the log itself. That replay must take the same
    # decisions as the fold of the plaintext history, and the worker must have written them.
    # An event id seen before is not appended again (the fold would ignore it, and it would
    # only mint a data key nothing ever destroys).
    log = log_of_record(settings)
    upstream = [e for e in log if e["type"] not in CHAINED_TYPES]
    ids: set[str] = set()
    first_copies = [e for e in history if not (e["event_id"] in ids or ids.add(e["event_id"]))]
    assert len(first_copies) == len(history) - 2  # the premise: one event_id is published thrice
    assert by_subject(upstream) == by_subject(first_copies), "the log of record differs from what was published"
    replay = fold_events(upstream)
    assert {k: d["type"] for k, d in replay.decisions.items()} == {k: d["type"] for k, d in expected.decisions.items()}, (
        "the replay of the log decides otherwise than the fold of the published history"
    )

    on_log = [e for e in log if e["type"] in DECISION_TYPES]
    actual = {d["event_id"]: without_chain(d) for d in on_log}
    missing = sorted(set(replay.decisions) - set(actual))
    extra = sorted(set(actual) - set(replay.decisions))
    assert not missing, f"decisions the fold took but the worker did not write: {missing}"
    assert not extra, f"decisions on the log the fold did not take: {extra}"
    for event_id, decision in replay.decisions.items():
        assert actual[event_id] == decision, f"decision {event_id} differs"
    assert len(on_log) == len(actual), "a decision was written to the log more than once"

    for sid, state in expected.states.items():
        status, body = views[(sid, "export")]
        assert status == 200, f"export of {sid}"
        assert orjson.loads(body) == roundtrip(export(state, POLICY)), f"export of {sid} differs from the pure export"
        status, body = views[(sid, "consent")]
        snapshot = consent_view(state)
        if snapshot is None and state["status"] == "erased":  # nothing to show
            assert status == 404 and orjson.loads(body)["reason"] == "erased", f"consent of {sid}"
        elif snapshot is None:  # held, but never a word on consent: no purposes
            assert status == 200 and orjson.loads(body)["purposes"] == {}, f"consent of {sid}"
        else:
            assert status == 200, f"consent of {sid}"
            assert orjson.loads(body) == roundtrip(snapshot), f"consent of {sid} differs from the pure view"
