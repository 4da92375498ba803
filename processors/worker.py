"""The Faust worker: thin agents around the pure guard and fold.

Run it with ``lifecycle worker`` (or ``faust -A processors.worker worker``); settings come
from ``LIFECYCLE_*`` variables. Data flow, one agent each::

    lifecycle.ingest ──guard──► lifecycle.events ──fold──► lifecycle.records / .consent
                       └──────► lifecycle.rejected     └──► lifecycle.events (decisions)
    lifecycle.acks ──acks──► lifecycle.events           ticks ──► fold (retention timer)

Every agent decodes, calls a pure function, writes the table, sends. Nothing here decides
anything: a bad message is dead-lettered with a reason and the stream goes on.
"""

from __future__ import annotations

import heapq
import hmac
import logging
import time
from typing import Any

import faust
import orjson

from processors import fold as lifecycle
from processors.guard import screen
from processors.policy import Policy, load_policy
from schemas.contract import ContractError, validate
from streams.codec import CodecError, decode, encode
from streams.settings import Settings

log = logging.getLogger("lifecycle.worker")

DECISIONS = frozenset(
    {
        "RetentionExpired",
        "ErasureExecuted",
        "RequestRejected",
        "RequestFulfilled",
        "DeadlineMissed",
        "ErasureCompleted",
    }
)


class Clock:
    """The one source of "now" for the timer, so tests can move time forward."""

    def __init__(self, offset_ms: int = 0) -> None:
        self.offset_ms = offset_ms

    def now(self) -> int:
        return int(time.time() * 1000) + self.offset_ms

    def advance(self, ms: int) -> None:
        self.offset_ms += ms


def _brokers(bootstrap: str) -> list[str]:
    return [f"kafka://{h.strip()}" for h in bootstrap.split(",") if h.strip()]


def rejection(reason: str, field: str, event: dict | None, message: Any) -> bytes:
    """A dead letter that says where and why, never what: no value of the event is copied."""
    return encode(
        {
            "type": "Rejection",
            "event_id": str((event or {}).get("event_id", "")) if reason != "undecodable" else "",
            "event_type": str((event or {}).get("type", "")),
            "reason": reason,
            "field": field,
            "topic": message.topic,
            "partition": message.partition,
            "offset": message.offset,
            "rejected_at": int(time.time() * 1000),
        }
    )


def create_app(settings: Settings | None = None, policy: Policy | None = None, clock: Clock | None = None) -> faust.App:
    settings = settings or Settings.from_env()
    policy = policy or load_policy(settings.policy_file)
    clock = clock or Clock()
    settings.worker_dir.mkdir(parents=True, exist_ok=True)  # faust creates only the last level
    app = faust.App(
        settings.app_id,
        broker=_brokers(settings.bootstrap),
        store=settings.store,
        datadir=str(settings.worker_dir),
        topic_partitions=settings.partitions,
        topic_replication_factor=1,
        web_host="127.0.0.1",
        web_bind="127.0.0.1",  # the views serve personal data: loopback unless a proxy is put in front
        web_port=settings.web_port,
        consumer_auto_offset_reset="earliest",
        producer_acks=-1,
        key_serializer="raw",
        value_serializer="raw",
    )
    app.lifecycle_settings = settings  # type: ignore[attr-defined]
    app.lifecycle_clock = clock  # type: ignore[attr-defined]

    def topic(name: str, **kw: Any) -> faust.TopicT:
        return app.topic(settings.topic(name), key_type=bytes, value_type=bytes, **kw)

    ingest, events, rejected = topic("ingest"), topic("events"), topic("rejected")
    records, consent, acks = topic("records"), topic("consent"), topic("acks")
    ticks = topic("ticks")
    subjects = app.Table(
        "subjects",
        default=None,
        key_type=bytes,
        value_type=bytes,
        partitions=settings.partitions,
    )
    # deadline index: (deadline, subject) for the subjects this worker folds; rebuilt after a
    # rebalance, so its cost is paid once per assignment, not on every timer wake-up
    index: list[tuple[int, bytes]] = []
    pending_ticks: set[bytes] = set()
    app.lifecycle_index = index  # type: ignore[attr-defined]

    def send(channel: faust.TopicT, key: bytes, value: bytes | None) -> None:
        channel.send_soon(key=key, value=value)

    def emit(outputs: list[Any]) -> None:
        for out in outputs:
            if isinstance(out, lifecycle.Decision):
                ev = out.event
                send(events, ev["subject_id"].encode(), encode(ev))
            elif isinstance(out, lifecycle.RecordChange):
                key = f"{out.subject_id}/{out.record_id}".encode()
                value = None if out.value is None else encode({"type": "Record", **out.value})
                send(records, key, value)
            elif isinstance(out, lifecycle.ConsentChange):
                value = None if out.value is None else encode({"type": "ConsentSnapshot", **out.value})
                send(consent, out.subject_id.encode(), value)

    def fold_one(key: bytes, event: dict, now: int) -> None:
        raw = subjects.get(key)
        state = orjson.loads(raw) if raw else lifecycle.new_state(event["subject_id"])
        state, outputs = lifecycle.apply(state, event, now, policy)
        subjects[key] = orjson.dumps(state)
        emit(outputs)
        due = lifecycle.next_deadline(state)
        if due is not None:
            heapq.heappush(index, (due, key))

    @app.agent(ingest)
    async def guard(stream: faust.StreamT) -> None:
        async for ev in stream.events():
            msg = ev.message
            try:
                event = validate(decode(msg.value, topic=msg.topic, partition=msg.partition, offset=msg.offset))
            except CodecError as exc:
                log.warning("dead letter %s[%s]@%s: %s", msg.topic, msg.partition, msg.offset, exc)
                send(rejected, b"", rejection("undecodable", "", None, msg))
                continue
            except ContractError as exc:
                log.warning("dead letter %s[%s]@%s: %s", msg.topic, msg.partition, msg.offset, exc)
                send(rejected, b"", rejection(exc.code, exc.field, None, msg))
                continue
            refusal = screen(event, policy)
            if refusal is not None:
                log.info("refused %s %s: %s in %s", event["type"], event["event_id"], refusal.reason, refusal.field)
                send(rejected, event["subject_id"].encode(), rejection(refusal.reason, refusal.field, event, msg))
                continue
            send(events, event["subject_id"].encode(), encode(event))

    @app.agent(acks)
    async def acknowledgements(stream: faust.StreamT) -> None:
        """Downstream acknowledgements join the log of record, so a replay sees them too."""
        async for ev in stream.events():
            msg = ev.message
            try:
                event = validate(decode(msg.value, topic=msg.topic, partition=msg.partition, offset=msg.offset))
                if event["type"] != "ErasureAcknowledged":
                    raise ContractError("not an ErasureAcknowledged", code="wrong_type", field="type")
            except (CodecError, ContractError) as exc:
                log.warning("dead letter %s[%s]@%s: %s", msg.topic, msg.partition, msg.offset, exc)
                send(rejected, b"", rejection(getattr(exc, "code", "undecodable"), getattr(exc, "field", ""), None, msg))
                continue
            send(events, event["subject_id"].encode(), encode(event))

    @app.agent(app.topic(settings.topic("events"), settings.topic("ticks"), key_type=bytes, value_type=bytes))
    async def fold(stream: faust.StreamT) -> None:
        async for ev in stream.events():
            msg = ev.message
            if msg.topic == ticks.get_topic_name():
                pending_ticks.discard(msg.key)
                tick = orjson.loads(msg.value)
                fold_one(msg.key, {"type": "Tick", "subject_id": tick["subject_id"]}, tick["now"])
                continue
            try:
                event = decode(msg.value, topic=msg.topic, partition=msg.partition, offset=msg.offset)
            except CodecError as exc:
                # the log of record is written by us alone; an undecodable entry is reported
                # and skipped rather than stalling every subject behind it
                log.error("skipping undecodable log entry: %s", exc)
                continue
            fold_one(msg.key or event["subject_id"].encode(), event, event["occurred_at"])

    @app.timer(settings.timer_interval)
    async def retention_timer() -> None:
        now = clock.now()
        while index and index[0][0] <= now:
            _, key = heapq.heappop(index)
            if key in pending_ticks:
                continue
            raw = subjects.get(key)
            if not raw:
                continue
            state = orjson.loads(raw)
            due = lifecycle.next_deadline(state)
            if due is None or due > now:
                continue  # a stale index entry: the subject changed since
            pending_ticks.add(key)
            await ticks.send(key=key, value=orjson.dumps({"subject_id": state["subject_id"], "now": now}))

    @app.on_rebalance_complete.connect
    async def rebuild_index(sender: Any, **kwargs: Any) -> None:
        index.clear()
        pending_ticks.clear()
        for key, raw in subjects.items():
            if raw:
                due = lifecycle.next_deadline(orjson.loads(raw))
                if due is not None:
                    index.append((due, key))
        heapq.heapify(index)

    expected = f"Bearer {settings.token()}".encode()

    def authorized(request: Any) -> bool:
        header = request.headers.get("Authorization", "")
        return hmac.compare_digest(header.encode(), expected)

    def subject_view(render: Any) -> Any:
        """A view of one subject's state, answered by the worker that owns its partition."""

        @app.table_route(table=subjects, match_info="subject_id")
        async def owned(view: Any, request: Any, subject_id: str) -> Any:
            raw = subjects.get(subject_id.encode())
            body = render(orjson.loads(raw)) if raw else None
            if body is None:
                return view.json({"error": f"no state for subject {subject_id!r}"}, status=404)
            return view.text(orjson.dumps(body, option=orjson.OPT_INDENT_2).decode(), content_type="application/json")

        async def get(view: Any, request: Any, subject_id: str) -> Any:
            # the token is checked before anything is looked up, so an unauthenticated caller
            # cannot learn whether a subject exists
            if not authorized(request):
                return view.json({"error": "unauthorized"}, status=401)
            return await owned(view, request, subject_id=subject_id)

        return get

    consent_get = subject_view(lifecycle.consent_view)
    export_get = subject_view(lifecycle.export)

    @app.page("/subjects/{subject_id}/consent")
    class ConsentView(faust.web.View):
        async def get(self, request: Any, subject_id: str) -> Any:
            return await consent_get(self, request, subject_id)

    @app.page("/subjects/{subject_id}/export")
    class ExportView(faust.web.View):
        async def get(self, request: Any, subject_id: str) -> Any:
            return await export_get(self, request, subject_id)

    app.lifecycle_subjects = subjects  # type: ignore[attr-defined]
    return app


def run(settings: Settings | None = None, loglevel: str = "info") -> None:
    """Run a worker in the foreground until SIGINT/SIGTERM, then shut down cleanly."""
    from faust import Worker

    app = create_app(settings)
    Worker(app, loglevel=loglevel, quiet=True).execute_from_commandline()
