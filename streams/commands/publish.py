"""``lifecycle publish FILE|-``: JSON lines in, Avro on ``lifecycle.ingest`` out (the upstream
producer, ``streams.plumbing.upstream``), each bad line reported by number.

    lifecycle publish events.jsonl
    crm-export | lifecycle publish - --timeout 60

Delivery waits at most ``--timeout`` seconds (300) for the broker; SIGINT and SIGTERM end the
command the same way, after a short wait for what is already in flight: with the count of the
lines delivered and of those not. Exit 0 only when every line was good and delivered.
"""

from __future__ import annotations

import signal
import sys
from typing import IO

from streams.plumbing.upstream import DEFAULT_TIMEOUT, Interrupted, PublishError, PublishReport, Signals, publish_lines
from streams.settings import Settings


def summary(report: PublishReport, settings: Settings, timeout: float) -> str:
    line = f"published {report.published} events to {settings.topic('ingest')}"
    if report.bad:
        line += f", {len(report.bad)} bad lines"
    if report.failed:
        line += f", {len(report.failed)} lines not published"
    missing = report.undelivered + report.unsent
    if missing:
        why = f"interrupted by {report.interrupted}" if report.interrupted else (
            f"no acknowledgement within {timeout:.0f} s: {report.cause or f'is the broker at {settings.bootstrap} up?'} (--timeout)"
        )  # fmt: skip
        line += f", {missing} lines not delivered ({why})"
    elif report.interrupted:
        line += f"; interrupted by {report.interrupted}, the rest of the input was not read"
    return line


def main_publish(
    path: str, settings: Settings, timeout: float = DEFAULT_TIMEOUT, out: IO[str] = sys.stdout, err: IO[str] = sys.stderr
) -> int:
    """0 when every line was published; 1 when a line was bad or not delivered; 2 when nothing
    could be (no file, no broker); 128 + the signal's number when interrupted."""
    signals = Signals()
    previous = {sig: signal.signal(sig, signals) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        try:
            if path == "-":
                report = publish_lines(sys.stdin.buffer, settings, timeout, signals)
            else:
                with open(path, "rb") as fh:
                    report = publish_lines(fh, settings, timeout, signals)
        except OSError as exc:
            print(f"error: cannot read {path}: {exc.strerror}", file=err)
            return 2
        except PublishError as exc:
            print(f"error: {exc}", file=err)
            return 2
        except Interrupted as exc:  # before anything was sent (while connecting)
            print(f"published 0 events to {settings.topic('ingest')}; interrupted by {exc}", file=out)
            return 128 + signals.received[0]
    finally:
        signals.reading = False
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    for number, reason in sorted(report.bad + report.failed):
        print(f"line {number}: {reason}", file=err)
    print(summary(report, settings, timeout), file=out)
    if report.interrupted:
        return 128 + signals.received[0]
    return 0 if report.ok else 1
