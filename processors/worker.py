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

import asyncio
import heapq
import hmac
import logging
import os
import shutil
import time
import weakref
from pathlib import Path
from typing import Any

import faust
import orjson
from faust.streams import _current_event

from processors import fold as lifecycle
from processors.chain import GENESIS, link
from processors.guard import echoable, screen, wrong_key
from processors.policy import Policy, load_policy
from processors.shredding import SEALED_TYPES, Keyring, Keystore
from schemas.contract import ContractError, validate
from streams.codec import CodecError, decode, encode
from streams.downstream import last_decision
from streams.security import client_kwargs, faust_credentials
from streams.logsafe import logging_config
from streams.settings import Settings

log = logging.getLogger("lifecycle.worker")

STATE_MAX_BYTES = 16 * 1024 * 1024
"""The largest subject state the worker can keep (one message on the state changelog)."""

ROCKSDB_OPTIONS = {
    "write_buffer_size": 16 * 1024 * 1024,
    "max_write_buffer_number": 2,
    "block_cache_size": 16 * 1024 * 1024,
}
"""Sizes of each table partition's RocksDB. faust opens one database per partition, each with
memtables and a block cache of its own, and its defaults (up to 3 × 64 MB of memtables, a 2 GB
block cache) are sized for a single database: across 4 partitions × 2 tables they let a worker
recovering 1M subjects reach 1.9 GB, nearly all memtables filled by the changelog and blocks
cached by the scan that rebuilds the deadline index (data the OS page cache holds anyway)."""


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
            "event_id": echoable((event or {}).get("event_id", "")) if reason != "undecodable" else "",
            "event_type": str((event or {}).get("type", "")),
            "reason": reason,
            "field": field,
            "topic": message.topic,
            "partition": message.partition,
            "offset": message.offset,
            "rejected_at": int(time.time() * 1000),
        }
    )


def create_app(
    settings: Settings | None = None,
    policy: Policy | None = None,
    clock: Clock | None = None,
    keyring: Keyring | None = None,
    dev: bool = False,
) -> faust.App:
    settings = settings or Settings.from_env()
    policy = policy or load_policy(settings.policy_file)
    clock = clock or Clock()
    keyring = keyring or settings.keyring(dev=dev)
    settings.worker_dir.mkdir(parents=True, exist_ok=True)  # faust creates only the last level
    app = faust.App(
        settings.app_id,
        broker=_brokers(settings.bootstrap),
        broker_credentials=faust_credentials(settings),  # None: PLAINTEXT
        store=settings.store,
        datadir=str(settings.worker_dir),
        topic_partitions=settings.partitions,
        topic_replication_factor=1,
        web_host="127.0.0.1",
        web_bind="127.0.0.1",  # the views serve personal data: loopback unless a proxy is put in front
        web_port=settings.web_port,
        consumer_auto_offset_reset="earliest",
        # a worker that died leaves the group after 10 s (faust's default: 60 s), so its
        # partitions move on sooner and a restarted worker joins a group without ghosts
        broker_session_timeout=10.0,
        producer_acks=-1,
        producer_max_request_size=STATE_MAX_BYTES + 64 * 1024,
        key_serializer="raw",
        value_serializer="raw",
    )
    # faust makes an agent wait for a flush (a round trip with acks=all) every 100 buffered
    # sends; a larger buffer lets the producer batch
    app.producer.buffer.max_messages = 5_000
    app.lifecycle_settings = settings  # type: ignore[attr-defined]
    app.lifecycle_clock = clock  # type: ignore[attr-defined]

    def topic(name: str, **kw: Any) -> faust.TopicT:
        return app.topic(settings.topic(name), key_type=bytes, value_type=bytes, **kw)

    ingest, events, rejected = topic("ingest"), topic("events"), topic("rejected")
    records, consent, acks = topic("records"), topic("consent"), topic("acks")
    ticks = topic("ticks")
    def table(name: str, **kw: Any) -> Any:
        return app.Table(
            name,
            default=None,
            key_type=bytes,
            value_type=bytes,
            partitions=settings.partitions,
            options=dict(ROCKSDB_OPTIONS),  # a copy: faust's store pops keys from the mapping it gets
            **kw,
        )

    # a subject's whole state is one changelog message: Kafka's default 1 MB cap would stop
    # the worker on the first subject with a long history (its offset never moves on, so it
    # stops again on every restart)
    subjects = table("subjects", extra_topic_configs={"max.message.bytes": str(STATE_MAX_BYTES)})
    keys_table = table("keys", changelog_topic=topic("keys"))  # DESIGN's lifecycle.keys is its changelog
    keystore = Keystore(keys_table, keyring, encode, decode, clock.now)
    # head of each events partition's decision hash chain: read from the log's tail when a
    # partition is (re)assigned, then carried forward by every decision this worker writes
    chain_heads: dict[int, bytes] = {}
    folded_to: dict[int, int] = {}  # events partition -> offset of the last entry folded
    # deadline index: a heap of _index_entry(deadline, subject) for the subjects this worker
    # folds; rebuilt after a rebalance, so its cost is paid once per assignment, not on every
    # timer wake-up
    index: list[bytes] = []
    pending_ticks: set[bytes] = set()

    def send(channel: faust.TopicT, key: bytes, value: bytes | None, headers: list[tuple[str, bytes]] | None = None) -> Any:
        return channel.send_soon(key=key, value=value, headers=headers)

    async def chain_head(partition: int) -> bytes:
        head = chain_heads.get(partition)
        if head is None:
            loop = asyncio.get_running_loop()
            found = await loop.run_in_executor(
                None, last_decision, settings.bootstrap, settings.topic("events"), partition, 512, client_kwargs(settings)
            )
            head = chain_heads[partition] = found or GENESIS
        return head

    async def emit(outputs: list[Any], partition: int) -> list[Any]:
        """Send the fold's outputs; returns their delivery futures."""
        # tombstones caused by an erasure name its request, so a consumer's acknowledgement
        # of a deletion is matched to the request it completes
        erasure = next(
            (o.event["request_id"] for o in outputs if isinstance(o, lifecycle.Decision) and o.event["type"] == "ErasureExecuted"),
            None,
        )
        headers = [("request_id", erasure.encode())] if erasure else None
        sent = []
        for out in outputs:
            if isinstance(out, lifecycle.Decision):
                ev = out.event
                value = encode({**ev, "chain": link(await chain_head(partition))})
                assert value is not None
                chain_heads[partition] = value
                # the decision's own partition, explicitly: the chain is per partition
                sent.append(events.send_soon(key=ev["subject_id"].encode(), value=value, partition=partition))
                destroyed = ev.get("keys_destroyed")
                if destroyed:
                    keystore.destroy(destroyed)
            elif isinstance(out, lifecycle.RecordChange):
                key = f"{out.subject_id}/{out.record_id}".encode()
                if out.value is None:
                    sent.append(send(records, key, None, headers))
                else:
                    plain = {**out.value, "fields": keystore.open(out.value["fields"])}
                    sent.append(send(records, key, encode({"type": "Record", **plain})))
            elif isinstance(out, lifecycle.ConsentChange):
                if out.value is None:
                    sent.append(send(consent, out.subject_id.encode(), None, headers))
                else:
                    sent.append(send(consent, out.subject_id.encode(), encode({"type": "ConsentSnapshot", **out.value})))
        return sent

    async def fold_batch(batch: list[tuple[Any, bytes, dict, int, int]]) -> None:
        """Fold a batch of (faust event, key, event, now, partition), one delivery wait for all.

        Each subject's state is read once, folded through all its events of the batch, and
        written once after every output of the batch is acknowledged by the broker. Should
        the worker die in between, the batch is folded again and re-sends what may already
        be out (idempotent), rather than being seen in the state with its tombstones never
        sent. Queueing both and letting the producer sort it out is not enough: a crash was
        seen to deliver the state's changelog write and lose the consent update queued
        before it. One wait per batch instead of one per event is what lets the fold keep up.
        """
        states: dict[bytes, tuple[dict, Any]] = {}
        sent: list[Any] = []
        for faust_event, key, event, now, partition in batch:
            _make_current(faust_event)  # for the keys table's deletions in emit()
            held = states.get(key)
            if held is None:
                raw = subjects.get(key)
                state = orjson.loads(raw) if raw else lifecycle.new_state(event["subject_id"])
            else:
                state = held[0]
            state, outputs = lifecycle.apply(state, event, now, policy)
            states[key] = (state, faust_event)
            if outputs:
                sent += await emit(outputs, partition)
        if sent:
            await asyncio.gather(*sent)
        owned = app.consumer.assignment()
        for key, (state, faust_event) in states.items():
            if faust_event.message.tp not in owned:
                # the partition moved to another worker while this batch was out: that
                # worker folds these events again from the last commit (the outputs sent here
                # are the same, and idempotent), so writing a state it did not read would
                # only race its own
                continue
            # the table writes to the changelog partition of the "current" event: the one
            # that last touched this subject, whose partition is the subject's
            _make_current(faust_event)
            subjects[key] = orjson.dumps(state)
            due = lifecycle.next_deadline(state)
            if due is not None:
                heapq.heappush(index, _index_entry(due, key))

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
            refusal = wrong_key(msg.key, event) or screen(event, policy)
            if refusal is not None:
                log.info("refused %s %s: %s in %s", event["type"], echoable(event["event_id"]), refusal.reason, refusal.field)
                send(rejected, echoable(event["subject_id"]).encode(), rejection(refusal.reason, refusal.field, event, msg))
                continue
            if event["type"] in SEALED_TYPES and _already_folded(subjects.get(event["subject_id"].encode()), event["event_id"]):
                # a redelivery of an event the fold has taken: appending it again would only
                # mint a data key nothing ever destroys
                log.info("duplicate %s %s dropped", event["type"], event["event_id"])
                continue
            sealed = keystore.seal(event, "obligation" if _obligation(event, policy) else "standard")
            send(events, event["subject_id"].encode(), encode(sealed))

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
        tick_topic = ticks.get_topic_name()
        async for events_in in stream.take_events(settings.fold_batch, within=settings.fold_linger):
            batch: list[tuple[Any, bytes, dict, int, int]] = []
            for ev in events_in:
                msg = ev.message
                if msg.topic == tick_topic:
                    pending_ticks.discard(msg.key)
                    tick = orjson.loads(msg.value)
                    # the tick's place in the log: after the last entry of this partition
                    # folded so far, which its decisions record so that a replay applies
                    # it there too
                    after = folded_to.get(msg.partition, -1)
                    tick_event = {"type": "Tick", "subject_id": tick["subject_id"], "after": after}
                    batch.append((ev, msg.key, tick_event, tick["now"], msg.partition))
                    continue
                try:
                    event = decode(msg.value, topic=msg.topic, partition=msg.partition, offset=msg.offset)
                except CodecError as exc:
                    # the log of record is written by us alone; an undecodable entry is
                    # reported and skipped rather than stalling every subject behind it
                    log.error("skipping undecodable log entry: %s", exc)
                    continue
                batch.append((ev, msg.key or event["subject_id"].encode(), event, event["occurred_at"], msg.partition))
                folded_to[msg.partition] = msg.offset
            if batch:
                await fold_batch(batch)

    @app.timer(settings.timer_interval)
    async def retention_timer() -> None:
        now = clock.now()
        while index and _index_due(index[0]) <= now:
            key = heapq.heappop(index)[_DUE_BYTES:]
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
        chain_heads.clear()  # another worker may have written to our partitions meanwhile
        folded_to.clear()
        loop = asyncio.get_running_loop()
        folded_to.update(await loop.run_in_executor(None, committed_positions, settings))
        index.clear()
        pending_ticks.clear()
        for key, raw in subjects.items():
            if raw:
                due = lifecycle.next_deadline(orjson.loads(raw))
                if due is not None:
                    index.append(_index_entry(due, key))
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

    def export_plain(state: dict) -> dict:
        doc = lifecycle.export(state)
        for rec in doc["records"]:
            rec["fields"] = keystore.open(rec["fields"])
        return doc

    consent_get = subject_view(lifecycle.consent_view)
    export_get = subject_view(export_plain)

    @app.page("/subjects/{subject_id}/consent")
    class ConsentView(faust.web.View):
        async def get(self, request: Any, subject_id: str) -> Any:
            return await consent_get(self, request, subject_id)

    @app.page("/subjects/{subject_id}/export")
    class ExportView(faust.web.View):
        async def get(self, request: Any, subject_id: str) -> Any:
            return await export_get(self, request, subject_id)

    return app


def committed_positions(settings: Settings) -> dict[int, int]:
    """events partition -> offset of the last entry this group has folded and committed."""
    from kafka import KafkaAdminClient
    from kafka.errors import KafkaError

    from streams.runner import group_offsets

    admin = KafkaAdminClient(
        bootstrap_servers=settings.bootstrap.split(","), client_id="lifecycle-positions", **client_kwargs(settings)
    )
    try:
        offsets = group_offsets(admin, settings.app_id)
    except KafkaError:
        return {}
    finally:
        admin.close()
    topic = settings.topic("events")
    return {tp.partition: meta.offset - 1 for tp, meta in offsets.items() if tp.topic == topic and meta.offset >= 0}


def _make_current(event: Any) -> None:
    """Make ``event`` the one faust's table writes take their changelog partition from.

    Why: faust finds the partition of a table write through a context variable holding the
    stream's current event; a batched agent has none (the stream is read in another task). Pointing it at the event that touched the subject keeps each subject's state
    in the changelog partition its events come from, which recovery and rebalancing rely on.
    """
    _current_event.set(weakref.ref(event))


_DUE_BYTES = 8
_DUE_BIAS = 1 << 63  # any signed 64-bit deadline, still ordered as unsigned bytes


def _index_entry(due: int, key: bytes) -> bytes:
    """One deadline-index entry: the deadline in fixed-width big-endian, then the subject key.

    Why: the index holds one entry per subject with a deadline, a million on a big worker. A
    (deadline, key) tuple costs a tuple, an int and the key (~140 bytes each); one bytes object
    ~60. Compared as bytes, entries order exactly as the tuples did: by deadline, then key.
    """
    return (due + _DUE_BIAS).to_bytes(_DUE_BYTES, "big") + key


def _index_due(entry: bytes) -> int:
    return int.from_bytes(entry[:_DUE_BYTES], "big") - _DUE_BIAS


def _already_folded(raw_state: bytes | None, event_id: str) -> bool:
    if not raw_state:
        return False
    # the guard asks this for every sealed event: a byte search for the id as the state's JSON
    # spells it settles the common answer (never seen) without decoding the whole state
    if orjson.dumps(event_id) not in raw_state:
        return False
    return event_id in orjson.loads(raw_state)["seen"]


def _obligation(event: dict, policy: Policy) -> bool:
    return event["type"] == "DataCollected" and policy.is_obligation(event["category"], event["legal_basis"])


def run(settings: Settings | None = None, loglevel: str = "info", dev: bool = False) -> None:
    """Run a worker in the foreground until SIGINT/SIGTERM, then shut down cleanly."""
    from faust import Worker

    running = _claim_state_dir(settings)
    app = create_app(settings, dev=dev)
    try:
        # the Kafka clients' debug output holds message values: see streams.logsafe
        Worker(app, loglevel=loglevel, quiet=True, logging_config=logging_config()).execute_from_commandline()
    finally:
        running.unlink(missing_ok=True)  # a clean stop: the local state matches what was sent


def _claim_state_dir(settings: Settings) -> Path:
    """Mark the local state as in use, and throw it away if the last worker died holding it.

    Why: the table stores on disk are written as each event is folded, before its outputs
    are delivered and its offset committed. A worker killed in between leaves a local state
    that is ahead of what downstream received; folding the uncommitted events again would
    find them already seen and send nothing, losing their tombstones. Rebuilt from the
    changelog topics instead, the state is only ever as far as what Kafka holds.
    """
    marker = settings.worker_dir / "RUNNING"
    if marker.exists():
        log.warning("the previous worker did not stop cleanly: rebuilding its state from the changelogs")
        shutil.rmtree(settings.worker_dir, ignore_errors=True)
    settings.worker_dir.mkdir(parents=True, exist_ok=True)
    marker.write_text(f"{os.getpid()}\n")
    return marker
