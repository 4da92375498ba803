"""``lifecycle publish``: JSON lines in, Avro on ``lifecycle.ingest`` out, keyed by subject.

A line is published whole or not at all (one line is one Kafka message), and a bad line is
reported by number and reason without stopping the good lines behind it: one the contract
refuses, and one the producer refuses (too large for a Kafka message) or cannot deliver. The
reason never quotes the line: it may hold personal data.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import IO, Iterable

from schemas.contract import ContractError, parse_line
from streams.codec import CodecError, encode
from streams.settings import Settings


@dataclass
class PublishReport:
    published: int = 0
    bad: list[tuple[int, str]] = field(default_factory=list)
    failed: list[tuple[int, str]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.bad and not self.failed


def producer(settings: Settings):  # type: ignore[no-untyped-def]
    from kafka import KafkaProducer

    from streams.security import client_kwargs

    # kafka-python 3.x defaults to an idempotent producer with acks=all; we only batch a little
    return KafkaProducer(
        bootstrap_servers=settings.bootstrap.split(","),
        client_id="lifecycle-publish",
        acks="all",
        linger_ms=5,
        retries=2147483647,
        **client_kwargs(settings),
    )


def publish_lines(lines: Iterable[str | bytes], settings: Settings) -> PublishReport:
    report = PublishReport()
    topic = settings.topic("ingest")
    prod = producer(settings)
    sent: list[tuple[int, object]] = []
    try:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                event = parse_line(line)
                value = encode(event)
            except (ContractError, CodecError) as exc:  # neither quotes the line
                report.bad.append((number, str(exc)))
                continue
            try:
                future = prod.send(topic, key=event["subject_id"].encode(), value=value)
            except Exception as exc:  # noqa: BLE001 - refused before it left: this line only
                report.failed.append((number, _not_sent(exc, value)))
                continue
            sent.append((number, future))
        prod.flush()
        for number, fut in sent:
            try:
                fut.get(timeout=30)  # type: ignore[attr-defined]
                report.published += 1
            except Exception as exc:  # noqa: BLE001 - reported per line, the rest goes on
                report.failed.append((number, f"not published: {type(exc).__name__}"))
    finally:
        prod.close()
    return report


def _not_sent(exc: Exception, value: bytes | None) -> str:
    """Why the producer refused a line before sending it, without quoting it. The usual case
    is a line larger than a Kafka message may be (1 MiB by default), which the contract
    cannot know: the cluster decides."""
    from kafka.errors import MessageSizeTooLargeError

    if isinstance(exc, MessageSizeTooLargeError):
        return f"too large to publish: {len(value or b''):,} bytes as Avro, more than a Kafka message may hold"
    return f"not published: {type(exc).__name__}"


def main_publish(path: str, settings: Settings, out: IO[str] = sys.stdout, err: IO[str] = sys.stderr) -> int:
    if path == "-":
        report = publish_lines(sys.stdin.buffer, settings)
    else:
        try:
            with open(path, "rb") as fh:
                report = publish_lines(fh, settings)
        except OSError as exc:
            print(f"error: cannot read {path}: {exc.strerror}", file=err)
            return 2
    for number, reason in sorted(report.bad + report.failed):
        print(f"line {number}: {reason}", file=err)
    summary = f"published {report.published} events to {settings.topic('ingest')}"
    if report.bad:
        summary += f", {len(report.bad)} bad lines"
    if report.failed:
        summary += f", {len(report.failed)} lines not published"
    print(summary, file=out)
    return 0 if report.ok else 1
