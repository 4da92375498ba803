"""``lifecycle demo``: the whole pipeline once, on a sample history shipped with the package.

It starts what is missing (the local broker, one worker), publishes the sample on topics of
its own (a fresh prefix, so earlier runs never blur the picture), waits until the worker has
folded everything, prints what a downstream consumer sees, and stops what it started.
"""

from __future__ import annotations

import sys
import time
import uuid
from dataclasses import replace
from importlib import resources
from typing import IO

from streams.plumbing.net import free_port, reachable
from streams.plumbing.reading import Entry, read_topic
from streams.plumbing.text import iso
from streams.plumbing.topics import delete_prefixed
from streams.settings import Settings


def sample_path() -> str:
    return str(resources.files("processors") / "samples" / "demo.jsonl")


def _show_records(entries: list[Entry], out: IO[str]) -> int:
    tombstones = 0
    for e in entries:
        key = (e.key or b"").decode()
        if e.tombstone:
            tombstones += 1
            print(f"  {key:<28} TOMBSTONE (deleted downstream)", file=out)
        else:
            rec = e.decoded() or {}
            flag = " restricted" if rec.get("restricted") else ""
            print(
                f"  {key:<28} upsert  {rec['category']}/{rec['purpose']} ({rec['legal_basis']}), "
                f"fields: {', '.join(sorted(rec['fields']))}, keep until {iso(rec.get('retention_deadline')) or 'relationship ends'}{flag}",
                file=out,
            )
    return tombstones


def _show_consent(entries: list[Entry], out: IO[str]) -> int:
    tombstones = 0
    for e in entries:
        key = (e.key or b"").decode()
        if e.tombstone:
            tombstones += 1
            print(f"  {key:<28} TOMBSTONE (consent state erased)", file=out)
            continue
        snap = e.decoded() or {}
        states = ", ".join(f"{p}={s['status']}" for p, s in sorted(snap["purposes"].items())) or "-"
        stopped = ", ".join(sorted(snap["stopped"])) if snap.get("stopped") else ""
        print(f"  {key:<28} {states}" + (f"; stopped: {stopped}" if stopped else ""), file=out)
    return tombstones


def main_demo(base: Settings, keep: bool = False, out: IO[str] = sys.stdout) -> int:
    from streams.broker import local as broker
    from streams.plumbing.topics import ensure_topics
    from streams.plumbing.upstream import publish_lines
    from streams.worker.processes import spawn_worker, stop_worker, wait_caught_up

    run_id = uuid.uuid4().hex[:8]
    port = free_port()  # a worker of the user's may hold LIFECYCLE_WEB_PORT
    settings = replace(
        base, topic_prefix=f"{base.topic_prefix}demo-{run_id}.", app_id=f"lifecycle-demo-{run_id}", timer_interval=5.0,
        web_port=port, worker_url=f"http://127.0.0.1:{port}",
    )  # fmt: skip
    started_broker = False
    if not reachable(base.bootstrap):
        if base.bootstrap != f"127.0.0.1:{base.broker_port}":
            print(f"error: no Kafka answers at {base.bootstrap}", file=sys.stderr)
            return 2
        print("starting the local broker ...", file=out)
        broker.start(base, progress=lambda line: print(f"  {line}", file=out))
        started_broker = True
    worker = None
    try:
        ensure_topics(settings)
        log_path = settings.home / "demo" / f"worker-{run_id}.log"
        print(f"starting a worker (log: {log_path}) ...", file=out)
        worker = spawn_worker(settings, log_path, dev=True)
        with open(sample_path(), "rb") as fh:
            report = publish_lines(fh, settings)
        print(f"published {report.published} sample events to {settings.topic('ingest')}", file=out)
        t0 = time.monotonic()
        try:
            wait_caught_up(settings, timeout=120, proc=worker)
        except (RuntimeError, TimeoutError) as exc:
            print(f"error: {exc} (see {log_path})", file=sys.stderr)
            return 1
        print(f"the worker folded everything in {time.monotonic() - t0:.1f} s\n", file=out)

        print(f"What a downstream consumer sees on {settings.topic('records')}:", file=out)
        rec_tombs = _show_records(read_topic(settings, "records"), out)
        print(f"\n... on {settings.topic('consent')}:", file=out)
        con_tombs = _show_consent(read_topic(settings, "consent"), out)
        print(f"\nRefused by the guard, on {settings.topic('rejected')} (reason and place, never the value):", file=out)
        rejections = 0
        for e in read_topic(settings, "rejected"):
            r = e.decoded() or {}
            rejections += 1
            print(f"  {r['event_type']:<16} {r['event_id']:<10} {r['reason']:<22} in {r['field']}", file=out)
        print(f"\nDecisions the pipeline recorded on {settings.topic('events')}:", file=out)
        for e in read_topic(settings, "events"):
            ev = e.decoded() or {}
            if ev.get("source") == "lifecycle":
                detail = ev.get("reason") or ev.get("request_type") or ", ".join(ev.get("erased", []))
                print(f"  {ev['type']:<18} {ev['subject_id']:<8} {detail}", file=out)
        print(
            f"\nsummary: {rec_tombs} record tombstones, {con_tombs} consent tombstones, {rejections} rejections",
            file=out,
        )
        return 0 if (rec_tombs or con_tombs) and rejections else 1
    finally:
        if worker is not None:
            stop_worker(worker)
        if not keep:
            _delete_topics(settings)
        if started_broker:
            broker.stop(base)
            print("stopped the local broker", file=out)


def _delete_topics(settings: Settings) -> None:
    """The demo's topics and its worker's changelog; best effort, the demo's result stands."""
    for prefix in (settings.topic_prefix, f"{settings.app_id}-"):
        try:
            delete_prefixed(settings, prefix)
        except Exception:  # noqa: BLE001, S110 - a topic left behind is harmless
            pass
