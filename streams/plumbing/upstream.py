"""The upstream producer: JSON lines in, Avro on ``lifecycle.ingest`` out, keyed by subject.

What ``lifecycle publish`` and the demo publish with, and what an upstream system written in
Python may call (``publish_lines``). A line is published whole or not at all (one line is one
Kafka message), and a bad line is reported by number and reason without stopping the good lines
behind it: one the contract refuses, and one the producer refuses (too large for a Kafka
message) or cannot deliver. The reason never quotes the line: it may hold personal data.

Delivery has a deadline (``timeout``): a broker that is away for a while is waited for, and lines
sent meanwhile go out when it is back, but a broker that does not come back ends the call with
the count of what was delivered and what was not, instead of a producer waiting for ever. A line
counts as published only once the broker acknowledged it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import signal
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from types import FrameType
from typing import Any

from schemas.codec import CodecError, encode
from schemas.contract import ContractError, parse_line
from streams.plumbing.net import reachable
from streams.plumbing.security import client_kwargs, login_hint
from streams.settings import Settings

DEFAULT_TIMEOUT = 300.0


GRACE = 5.0
"""How long an interrupted publish still waits for what it already sent."""


class PublishError(RuntimeError):
    """Nothing can be published (no broker answers, say); the message names the setting."""


class Interrupted(Exception):
    """SIGINT or SIGTERM arrived: stop reading, report what was delivered."""


class Signals:
    """SIGINT/SIGTERM while lines are read and sent interrupts that (a read of standard input
    may block for ever); once only acknowledgements are awaited, a signal cuts that wait short."""

    def __init__(self) -> None:
        self.received: list[int] = []
        self.reading = True

    def __call__(self, signum: int, frame: FrameType | None) -> None:
        self.received.append(signum)
        if self.reading:
            self.reading = False
            raise Interrupted(signal.Signals(signum).name)

    @property
    def name(self) -> str:
        return signal.Signals(self.received[0]).name if self.received else ""


NO_SIGNALS = Signals()


@dataclass
class PublishReport:
    published: int = 0
    bad: list[tuple[int, str]] = field(default_factory=list)
    failed: list[tuple[int, str]] = field(default_factory=list)
    undelivered: int = 0  # sent, not acknowledged by the deadline (or the interruption)
    unsent: int = 0  # valid, never sent: the deadline had passed, or the broker never answered
    interrupted: str = ""  # the signal's name
    cause: str = ""  # why lines went undelivered, as far as the cluster lets us see (``diagnose``)

    @property
    def ok(self) -> bool:
        return not (self.bad or self.failed or self.undelivered or self.unsent or self.interrupted)


def producer(settings: Settings, **overrides: Any) -> Any:
    """The upstream producer (kafka-python 3.x: idempotent, acks=all); one line on a dead broker."""
    from kafka import KafkaProducer
    from kafka.errors import KafkaTimeoutError

    try:
        return KafkaProducer(
            bootstrap_servers=settings.bootstrap.split(","),
            client_id="lifecycle-publish",
            acks="all",
            linger_ms=5,
            retries=2147483647,
            **{**client_kwargs(settings), **overrides},
        )
    except KafkaTimeoutError:  # kafka-python 3: "Unable to bootstrap"
        hint = login_hint(settings)
        raise PublishError(f"no Kafka broker answers at {settings.bootstrap} (LIFECYCLE_BOOTSTRAP){hint}") from None


def publish_lines(
    lines: Iterable[str | bytes], settings: Settings, timeout: float = DEFAULT_TIMEOUT, signals: Signals = NO_SIGNALS
) -> PublishReport:
    """Publish every good line; every line is accounted for in the report, whatever happens.

    Raises ``PublishError`` only when nothing could be published at all (no broker answers at
    the start). ``Interrupted`` raised inside (by a signal handler, ``main_publish``'s) stops the
    reading; what was sent is still waited for a few seconds and counted.
    """
    from kafka.errors import KafkaTimeoutError

    report = PublishReport()
    topic = settings.topic("ingest")
    deadline = time.monotonic() + timeout
    # retry until our own deadline, not the library's two minutes; block at most a few seconds
    # per send while the broker is away, so the deadline and signals are looked at
    prod = producer(
        settings,
        # our deadline comes first; kafka-python wants more than its request timeout (30 s)
        delivery_timeout_ms=max(40_000, int((timeout + 10) * 1000)),
        max_block_ms=5000,
        bootstrap_timeout_ms=max(1000, int(min(timeout, 30.0) * 1000)),
    )
    sent: list[tuple[int, Any]] = []
    try:
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
                while True:
                    if time.monotonic() > deadline:
                        report.unsent += 1
                        break
                    try:
                        sent.append((number, prod.send(topic, key=event["subject_id"].encode(), value=value)))
                    except KafkaTimeoutError:
                        continue  # no metadata yet (the broker is away): try again until the deadline
                    except Exception as exc:  # noqa: BLE001 - refused before it left: this line only
                        report.failed.append((number, _not_sent(exc, value)))
                    break
        except Interrupted:
            deadline = min(deadline, time.monotonic() + GRACE)
        signals.reading = False  # from here on a signal only cuts the wait short
        _await(prod, sent, deadline, signals)
        report.interrupted = signals.name
        for number, fut in sent:
            if not fut.is_done or isinstance(fut.exception, KafkaTimeoutError):
                report.undelivered += 1
            elif fut.succeeded():
                report.published += 1
            else:
                report.failed.append((number, f"not published: {type(fut.exception).__name__}"))
    finally:
        _close_now(prod)
    if (report.undelivered or report.unsent) and not report.interrupted:
        report.cause = diagnose(settings)
    return report


def diagnose(settings: Settings) -> str:
    """Why the cluster did not acknowledge, in a few words: which brokers do not answer, and how
    many copies in sync ``lifecycle.ingest`` needs for a write. "" when every broker answers.

    Why: a write refused because too few copies are in sync looks to the producer like a broker
    that is slow to answer; naming the brokers that are gone and the setting that refuses the
    write tells the operator what to bring back.
    """
    addresses = [a.strip() for a in settings.bootstrap.split(",") if a.strip()]
    down = [a for a in addresses if not reachable(a, timeout=2.0)]
    if not down:
        return ""
    if len(addresses) == 1:
        return f"the broker at {down[0]} (LIFECYCLE_BOOTSTRAP) does not answer"
    if len(down) == len(addresses):
        return f"none of the {len(addresses)} brokers at LIFECYCLE_BOOTSTRAP answers"
    cause = f"{len(down)} of the {len(addresses)} brokers at LIFECYCLE_BOOTSTRAP do not answer ({', '.join(down)})"
    insync = _min_insync(settings, [a for a in addresses if a not in down])
    needed = f"{insync} copies in sync (min.insync.replicas)" if insync else "min.insync.replicas copies in sync"
    return cause + f", and {settings.topic('ingest')} takes a write only with {needed}"


def _min_insync(settings: Settings, live: list[str]) -> str:
    """What the brokers still up say of ``lifecycle.ingest``'s min.insync.replicas ("" when
    they do not say it within a few seconds).

    Asked of those only, and twice: librdkafka sends the question to the broker the metadata
    names as controller, which a KRaft broker picks at random among those it has not seen
    fenced, the dead one too."""
    from streams.plumbing.topics import describe_configs

    asked = dataclasses.replace(settings, bootstrap=",".join(live))
    for _ in range(2):
        with contextlib.suppress(Exception):  # a diagnosis on a failing cluster: whatever stops it, say less
            return describe_configs(asked, settings.topic("ingest"), timeout=3.0).get("min.insync.replicas") or ""
    return ""


def _close_now(prod: Any) -> None:
    """Close without waiting: what is not acknowledged by now was reported, not waited for.

    kafka-python 3.0's ``close(timeout=0)`` raises when messages are still pending (its flush
    times out) and leaves the producer open; the sender is a daemon thread, so closing it by
    force is all that is left to do (the library is pinned to 3.0.x in pyproject.toml)."""
    from kafka.errors import KafkaTimeoutError

    try:
        prod.close(timeout=0)
    except KafkaTimeoutError:
        prod._sender.force_close()
        prod._closed = True


def _await(prod: Any, sent: list[tuple[int, Any]], deadline: float, signals: Signals) -> None:
    """Wait until everything sent is acknowledged or failed, the deadline passes, or a signal
    (another one, if one stopped the reading) says not to wait any more."""
    from kafka.errors import KafkaTimeoutError

    patience = len(signals.received)
    while any(not fut.is_done for _, fut in sent) and len(signals.received) <= patience:
        left = deadline - time.monotonic()
        if left <= 0:
            return
        try:
            prod.flush(timeout=min(left, 0.5))
        except KafkaTimeoutError:
            pass


def _not_sent(exc: Exception, value: bytes | None) -> str:
    """Why the producer refused a line before sending it, without quoting it. The usual case
    is a line larger than a Kafka message may be (1 MiB by default), which the contract
    cannot know: the cluster decides."""
    from kafka.errors import MessageSizeTooLargeError

    if isinstance(exc, MessageSizeTooLargeError):
        return f"too large to publish: {len(value or b''):,} bytes as Avro, more than a Kafka message may hold"
    return f"not published: {type(exc).__name__}"
