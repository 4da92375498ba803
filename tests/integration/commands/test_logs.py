"""No personal data in logs: the promise behind every "never the value" in the code.

A log file is a copy of whatever it prints that no erasure reaches and no retention limit
covers. So a whole history, every upstream event type plus the acknowledgements of every
registered downstream consumer, goes through a worker at debug level (where the Kafka clients
would print every message they send and fetch), next to every command a user runs against it:
``publish``, ``consent``, ``export``, ``sink``, ``replay`` (report and audit trail). Every line
the worker and the commands print, and every dead letter, is scanned for every personal value
published, as written, lowercased, in base64 and, for numbers, as bare digits. The exceptions
are what a user asks to see: ``export`` prints the subject's data, and so does the audit trail
of ``replay --subject`` to whoever holds the master key (without it: ``[encrypted]``, scanned).
"""

from __future__ import annotations

import base64
import dataclasses
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest

from processors.policy import DAY_MS
from streams.plumbing.reading import read_topic
from streams.settings import Settings, load_policy
from streams.worker.processes import spawn_worker, stop_worker, wait_caught_up

pytestmark = pytest.mark.integration

MINUTE_MS = 60_000
ADA = {"email": "ada.lovelace.7f3a@example.org", "name": "Ada Lovelace-Byron", "phone": "+44 20 7946 0958"}
ADA_RECTIFIED = "Augusta Ada King-Noel"
GRACE = {"email": "grace.hopper.91c2@example.net", "name": "Grace Brewster Hopper", "phone": "+1 202 555 0147"}
GRACE_CV = "Designed the A-0 compiler at Remington Rand"
CARD = "4111 1111 1111 1111"
REFUSED = {"name": "Quentin Cardholder", "note": f"please charge {CARD}"}
HEALTH = {"name": "Ivy Patient-Marsh", "health": "type 2 diabetes, insulin daily"}
MARA = "mara.schultz.c0de@example.com"  # refused already by publish: a subject_id that is an email


def iso(ms: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ms / 1000)) + f".{ms % 1000:03d}Z"


def history(base: int) -> list[dict]:
    """Every upstream event type; Ada's record rectified, Grace erased, two events refused."""
    t = iter(range(base, base + 1000 * MINUTE_MS, MINUTE_MS))

    def ev(type_: str, subject: str, event_id: str, **fields: object) -> dict:
        return {"type": type_, "event_id": event_id, "subject_id": subject, "occurred_at": iso(next(t)),
                "source": "log-test", **fields}  # fmt: skip

    def collected(subject: str, event_id: str, record: str, fields: dict, **kw: object) -> dict:
        about = {"record_id": record, "category": "contact", "purpose": "inquiry", "legal_basis": "legitimate_interest"}
        return ev("DataCollected", subject, event_id, **{**about, **kw}, fields=fields)

    a, g = "s-log-a", "s-log-g"
    return [
        collected(a, "a01", "r1", ADA),
        ev("ConsentGiven", a, "a02", purpose="newsletter"),
        ev("ConsentWithdrawn", a, "a03", purpose="newsletter"),
        ev("Unsubscribed", a, "a04", channel="email"),
        ev("RelationshipStarted", a, "a05", relationship_id="rel-1", kind="client"),
        ev("RelationshipEnded", a, "a06", relationship_id="rel-1", kind="client"),
        ev("AccessRequested", a, "a07", request_id="q-a1"),
        ev("IdentityVerified", a, "a08", request_id="q-a1", method="email_link"),
        ev("PortabilityRequested", a, "a09", request_id="q-a2"),
        ev("DeadlineExtended", a, "a10", request_id="q-a2", notice="notice-a2"),
        ev("RectificationRequested", a, "a11", request_id="q-a3", record_id="r1", fields={"name": ADA_RECTIFIED}),
        ev("IdentityVerified", a, "a12", request_id="q-a3", method="email_link"),
        ev("RestrictionRequested", a, "a13", request_id="q-a4", purpose="newsletter"),
        ev("ObjectionRaised", a, "a14", request_id="q-a5", purpose="marketing_email"),
        ev("LegalHoldPlaced", a, "a15", hold_id="h-1", reason="litigation"),
        ev("LegalHoldReleased", a, "a16", hold_id="h-1", reason="settled"),
        collected(g, "g01", "r1", GRACE),
        collected(g, "g02", "r2", {"name": GRACE["name"], "cv": GRACE_CV}, category="employment", purpose="recruitment"),
        ev("ConsentGiven", g, "g03", purpose="newsletter"),
        ev("ErasureRequested", g, "g04", request_id="q-g1"),
        ev("IdentityVerified", g, "g05", request_id="q-g1", method="id_document"),
        collected("s-log-c", "c01", "r1", REFUSED),
        collected("s-log-h", "h01", "r1", HEALTH),
        ev("ConsentGiven", MARA, "m01", purpose="newsletter"),
    ]


def personal_values() -> set[str]:
    return {*ADA.values(), ADA_RECTIFIED, *GRACE.values(), GRACE_CV, *REFUSED.values(), CARD, *HEALTH.values(), MARA}


def forms(values: set[str]) -> set[bytes]:
    """Each value as written, lowercased, in base64, and a number as its bare digits."""
    out: set[bytes] = set()
    for value in values:
        raw = value.encode()
        out |= {raw, raw.lower(), base64.b64encode(raw).rstrip(b"="), base64.urlsafe_b64encode(raw).rstrip(b"=")}
        digits = "".join(c for c in value if c.isdigit())
        if len(digits) >= 9:
            out.add(digits.encode())
    return out


def cli(settings: Settings, *args: str) -> subprocess.CompletedProcess[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LIFECYCLE_")}
    env.update(settings.to_env())
    return subprocess.run([sys.executable, "-m", "streams.cli", *args], env=env, capture_output=True, timeout=120)


def wait_listening(settings: Settings, timeout: float = 60.0) -> None:
    """The worker's web server, which ``consent`` and ``export`` ask, accepts connections."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection(("127.0.0.1", settings.web_port), timeout=1):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.3)


def decisions(settings: Settings) -> set[str]:
    return {e["type"] for e in (x.decoded() for x in read_topic(settings, "events")) if e is not None}


def test_no_personal_value_in_any_log_line_or_dead_letter(settings: Settings, tmp_path: Path) -> None:
    events = history(int(time.time() * 1000) - 10 * DAY_MS)
    path = tmp_path / "history.jsonl"
    path.write_bytes(b"\n".join(orjson.dumps(e) for e in events) + b"\n")
    log = tmp_path / "worker.log"
    said: dict[str, bytes] = {}  # command -> what it printed that is not the data it was asked for

    def run(name: str, *args: str, expect: int = 0) -> subprocess.CompletedProcess[bytes]:
        done = cli(settings, *args)
        assert done.returncode == expect, f"{name} exited {done.returncode}: {done.stderr.decode()[-2000:]}"
        said[name] = done.stdout + done.stderr
        return done

    proc = spawn_worker(settings, log, loglevel="debug")
    try:
        published = run("publish", "publish", str(path), expect=1)
        assert f"line {len(events)}:" in published.stderr.decode()  # Mara's line, and only hers
        assert f"published {len(events) - 1} events" in published.stdout.decode()
        wait_caught_up(settings, proc=proc)
        wait_listening(settings)
        run("consent", "consent", "s-log-a")
        export = run("export", "export", "s-log-a")
        said["export"] = export.stderr
        assert ADA_RECTIFIED.encode() in export.stdout  # the scan below would find a leak
        for consumer in (c.name for c in load_policy(None).consumers):
            db = str(tmp_path / f"{consumer}.db")
            run(f"sink {consumer}", "sink", "sqlite", db, "--name", consumer, "--until-idle")
        deadline = time.monotonic() + 60
        while "ErasureCompleted" not in decisions(settings):
            assert time.monotonic() < deadline, "no ErasureCompleted after every consumer acknowledged"
            time.sleep(0.5)
        wait_caught_up(settings, proc=proc)
    finally:
        stop_worker(proc)
    run("replay", "replay", "--no-progress")
    trail = run("replay --subject", "replay", "--subject", "s-log-a", "--no-progress")
    said["replay --subject"] = trail.stderr  # with the master key, the trail shows the fields
    assert ADA_RECTIFIED.encode() in trail.stdout
    without_key = dataclasses.replace(settings, master_key="")
    blind = cli(without_key, "replay", "--subject", "s-log-a", "--no-progress")
    assert blind.returncode == 0, blind.stderr.decode()[-2000:]
    said["replay --subject, no master key"] = blind.stdout + blind.stderr

    lines = log.read_bytes().splitlines()
    assert sum(b"[DEBUG]" in line for line in lines) > 20, "the worker did not run at debug level"
    letters = read_topic(settings, "rejected")
    assert {e.decoded()["event_id"] for e in letters} == {"c01", "h01"}  # the refused two, dead-lettered
    seen = {
        **{f"worker log line {n}": line for n, line in enumerate(lines, 1)},
        **{f"output of {name}": text for name, text in said.items()},
        **{f"dead letter @{e.partition}/{e.offset}": (e.key or b"") + (e.value or b"") for e in letters},
    }
    secrets = forms(personal_values())
    found = sorted({f"{where}: {s.decode(errors='replace')}" for where, text in seen.items() for s in secrets if s in text})
    assert not found, f"personal values printed or dead-lettered ({len(found)}): {found[:10]}"
