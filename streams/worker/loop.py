"""The worker: one batch loop around the pure guard and fold, on librdkafka.

Run it with ``lifecycle worker``; settings come from ``LIFECYCLE_*`` variables. Data flow::

    lifecycle.ingest ──guard──► lifecycle.events ──fold──► lifecycle.records / .consent
                       └──────► lifecycle.rejected     └──► lifecycle.events (decisions)
    lifecycle.acks ───────────► lifecycle.events ──fold     timer ──► fold (retention)

The worker owns partition *p* of ``lifecycle.ingest`` and ``lifecycle.acks`` together (the range
assignor gives co-partitioned topics to the same member) and is then the only writer of
partition *p* of ``lifecycle.events``. So it folds each entry as it appends it: the log's order
is the order it produced in, and a replay of the log folds exactly what the worker folded,
without the worker reading its own log back (which doubled every event's cost).

A batch is: consume up to ``fold_batch`` messages, guard and fold them, sending the downstream
outputs and new data keys as they come but holding the log's entries back; once the keys are
acknowledged, append the entries; once everything is acknowledged, write each touched
subject's state to its changelog, wait again, then commit the input offsets. A worker killed
anywhere folds the batch again from the last commit: the outputs are re-sent (idempotent), a
log entry never reached the broker before the data key it is sealed under, and the states were
written only after what they claim was out. Nothing here decides anything: a bad message is
dead-lettered with a reason and the batch goes on.

Why not faust (which this worker was written on first): measured with ``lifecycle bench`` on
the same machine, faust's per-message stream, table and producer machinery held the pipeline
near 1,000 events/s; see the README's Performance section.
"""

from __future__ import annotations

import contextlib
import gc
import heapq
import logging
import threading
import time
from collections.abc import Mapping
from typing import Any

import orjson

from processors import fold as lifecycle
from processors.chain import GENESIS
from processors.guard import echoable, future_time, screen, wrong_key
from processors.messages import CONSENT, EVENTS, RECORDS, decision_value, feed, to_messages
from processors.policy import Policy
from processors.shredding import SEALED_TYPES, KeyCache, Keyring, Keystore
from processors.state import Event, State
from schemas import UPSTREAM_EVENTS
from schemas.codec import CodecError, decode, encode
from schemas.contract import ContractError, Where, is_valid_id, validate
from streams.plumbing.topics import changelog_topic, partition_for
from streams.settings import Settings
from streams.worker.clients import Clients, KafkaClients, OffsetUnavailable
from streams.worker.tables import Table, open_store

log = logging.getLogger("lifecycle.worker")


VIEW_PATIENCE = 5.0
"""How long a view waits for the batch in hand; a batch waiting on an absent broker holds the
tables for as long as the broker is away, and the caller is better told so than left hanging."""

READY = "worker ready"

POLICY_KEY = b"\x00policy"
"""The key, in each partition of the subjects table, of the policy version the partition was
last folded under (no subject id can be it: ids are printable)."""


def _rules() -> str:
    """The version of the code that applies the policy, as PolicyAdopted records it."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("data-lifecycle")
    except PackageNotFoundError:
        return ""


"""Logged once the first assignment is recovered: the worker folds from here on."""


def now_ms() -> int:
    """Wall time, for the retention timer and the data keys' creation times."""
    return int(time.time() * 1000)


def rejection(reason: str, field: str, event: Event | None, where: Where) -> bytes:
    """A dead letter that says where and why, never what: no value of the event is copied."""
    value = encode(
        {
            "type": "Rejection",
            "event_id": echoable((event or {}).get("event_id", "")) if reason != "undecodable" else "",
            "event_type": str((event or {}).get("type", "")),
            "reason": reason,
            "field": field,
            "topic": where.topic,
            "partition": where.partition,
            "offset": where.offset,
            "rejected_at": int(time.time() * 1000),
        }
    )
    assert value is not None
    return value


class DeliveryError(RuntimeError):
    """The broker refused or lost an output: the batch is not committed, the worker stops."""


class Worker:
    """One worker process's consumer, producer, tables and timer; ``run`` drives it."""

    def __init__(self, settings: Settings, policy: Policy, keyring: Keyring, clients: Clients | None = None) -> None:
        """``clients``: the worker's Kafka (``streams.worker.clients``); librdkafka's by default,
        a stand-in that can stop after any step in the crash tests."""
        self.settings = settings
        self.policy = policy
        t = settings.topic
        self.t_ingest, self.t_events, self.t_rejected = t("ingest"), t("events"), t("rejected")
        self.t_records, self.t_consent, self.t_acks, self.t_keys = t("records"), t("consent"), t("acks"), t("keys")
        # the topic of every output's short name: the complete feeds and each consumer's own
        self.t_outputs = {RECORDS: self.t_records, CONSENT: self.t_consent}
        for c in policy.consumer_names:
            for short in (feed(RECORDS, c), feed(CONSENT, c)):
                self.t_outputs[short] = t(short)
        self.t_changelog = changelog_topic(settings)
        self._failed: list[str] = []
        self.kafka: Clients = clients if clients is not None else KafkaClients(settings, self._delivered)
        self.producer = self.kafka.producer
        self.consumer = self.kafka.consumer
        self.store = open_store(settings.store, settings.worker_dir / "store")
        self.subjects = Table(self.store, b"S", self.t_changelog, self._produce)
        self.keys = Table(self.store, b"K", self.t_keys, self._produce)
        # one keystore per partition (a subject's keys live in its partition), one cache
        cache = KeyCache()
        self.keystores = [Keystore(self.keys.at(p), keyring, encode, decode, now_ms, cache) for p in range(settings.partitions)]
        self.owned: set[int] = set()
        self.chain_heads: dict[int, bytes] = {}
        # deadline index: _index_entry(deadline, partition, subject) for the subjects this
        # worker folds; rebuilt per assigned partition, so the timer never scans the state
        self.index: list[bytes] = []
        self._homes: dict[bytes, int] = {}
        self._revoked_at: dict[int, float] = {}
        self.lock = threading.Lock()  # the views read the tables between batches
        self.stopping = False
        # set when the loop leaves on an error: then nothing is committed or checkpointed on the
        # way out, so the batch that failed is folded again by the next worker (at-least-once)
        self.failed = False
        # (topic, partition) -> the next offset after the last message folded and delivered
        self._done: dict[tuple[str, int], int] = {}
        self.ready = False
        self.folded_at = self.folded_cpu = 0.0
        # the plaintext of the fields this batch sealed, by envelope: the records it puts on
        # lifecycle.records need not be decrypted again
        self._sealed_now: dict[str, str] = {}
        # this batch's log entries (key, value, partition), in fold order, and whether any is
        # sealed: they go out once the data keys are acknowledged (_flush_log)
        self._log: list[tuple[bytes, bytes, int]] = []
        self._log_sealed = False
        # exactly once: every batch (and each timer run, each policy adoption) is one transaction
        self.eos = settings.guarantee == "exactly_once"
        self._txn = False
        self._debug = log.isEnabledFor(logging.DEBUG)  # per-event lines cost even when off

    # -- Kafka plumbing -------------------------------------------------------------------

    def _delivered(self, err: Any, msg: Any) -> None:
        if err is not None:  # only errors are reported (delivery.report.only.error)
            self._failed.append(f"{msg.topic()}[{msg.partition()}]: {err.str()}")

    def _produce(self, topic: str, key: bytes | None, value: bytes | None, partition: int = -1, headers: Any = None) -> None:
        while True:
            try:
                self.producer.produce(topic, value, key, partition, headers=headers)
                return
            except BufferError:
                self.producer.poll(0.05)  # the local queue is full: let deliveries drain it

    def _deliver(self) -> None:
        """Wait until every queued output is acknowledged by the broker (acks=all)."""
        while self.producer.flush(30.0):
            log.warning("outputs still unacknowledged after 30 s; waiting for the broker")
            if self.stopping:
                break
        if self._failed:
            first, count = self._failed[0], len(self._failed)
            raise DeliveryError(f"{count} output(s) not delivered, first {first}")

    def partition_of(self, key: bytes) -> int:
        """The subject's partition, as the Java client and kafka-python compute it."""
        found = self._homes.get(key)
        if found is None:
            found = partition_for(key, self.settings.partitions)
            if len(self._homes) > 200_000:
                self._homes.clear()
            self._homes[key] = found
        return found

    # -- rebalancing ----------------------------------------------------------------------

    def _on_assign(self, consumer: Any, partitions: list[Any]) -> None:
        mine = sorted({tp.partition for tp in partitions if tp.topic == self.t_ingest})
        started = time.monotonic()
        for p in mine:
            # a local copy is caught up only at start or when this worker held the partition
            # moments ago; otherwise it may have missed deletions (streams.worker.tables)
            trusted = not self.ready or time.monotonic() - self._revoked_at.get(p, -1e9) < 20.0
            for table in (self.subjects, self.keys):
                start = table.checkpoint(p) if trusted else None
                if start is None:
                    table.forget(p)
                restored = self._restore(table, p, 0 if start is None else start + 1)
                log.debug("restored %d entries of %s[%d]", restored, table.changelog, p)
            # the head of the partition's decision chain, from what the log really holds
            # (whatever a crashed predecessor managed to write), read now rather than on the
            # partition's first decision, which would wait for it
            self.chain_heads[p] = self._log_tail_decision(p)
            self._adopt_policy(p)
            for key, raw in self.subjects.items(p):
                if key == POLICY_KEY:
                    continue
                due = lifecycle.next_deadline(lifecycle.upgrade(orjson.loads(raw), self.policy))
                if due is not None:
                    self.index.append(_index_entry(due, p, key))
            self.owned.add(p)
        heapq.heapify(self.index)
        log.info("assigned partitions %s (recovered in %.1f s)", mine, time.monotonic() - started)
        if not self.ready:
            self.ready = True
            # what is alive now (code, policy, caches, the index) lives for the process: the
            # collector stops scanning it, and collects young objects less often (each batch
            # allocates thousands of short-lived, acyclic state dicts). Measured with the fold
            # benchmark, the default collector halves the fold's rate.
            gc.freeze()
            gc.set_threshold(50_000, 20, 100)
            log.info(READY)

    def _adopt_policy(self, p: int) -> None:
        """Before folding anything of a partition under a policy it has not had, say so on its
        log (``PolicyAdopted``, a link of its chain, carrying the policy's text) and mark the
        consents the new policy's meanings leave in need of renewal. The auditor folds the
        partition's later entries with that policy, so no edit of the policy file makes older
        decisions mismatch. A crash before the marker is written adopts once more: the replay
        takes a second adoption of the same policy as a no-op."""
        version = self.policy.version
        if self.subjects.get(p, POLICY_KEY) == version.encode():
            return
        self._begin()
        now = now_ms()
        event = lifecycle.adoption(self.policy, p, self.kafka.end_offset(self.t_events, p) - 1, now, _rules())
        value = decision_value(event, self.chain_heads[p])
        self.chain_heads[p] = value
        self._log.append((b"", value, p))
        states: dict[tuple[int, bytes], State] = {}
        for key, raw in self.subjects.items(p):
            if key == POLICY_KEY:
                continue
            state = lifecycle.upgrade(orjson.loads(raw), self.policy)
            outputs = lifecycle.adopt(state, self.policy, now, event["event_id"])
            if outputs:
                states[(p, key)] = state
                self._emit(outputs, p)
        self._write(states)
        self.subjects.put(p, POLICY_KEY, version.encode())
        self._deliver()
        self._end_transaction()
        log.info("partition %d now folds under policy %s (%d subjects changed by it)", p, version, len(states))

    def _on_revoke(self, consumer: Any, partitions: list[Any]) -> None:
        if self.failed:  # leaving on an error: hand the partitions back as they were last committed
            self._drop({tp.partition for tp in partitions if tp.topic == self.t_ingest} & self.owned)
            return
        gone = {tp.partition for tp in partitions if tp.topic == self.t_ingest} & self.owned
        if not gone:
            return
        # every batch was delivered before consume() ran this callback; what the changelogs
        # hold now is what the local copy holds
        self._deliver()
        self._commit(wait=True)
        for p in gone:
            try:
                ends = [(table, self.kafka.end_offset(table.changelog, p)) for table in (self.subjects, self.keys)]
            except OffsetUnavailable as exc:
                # no checkpoint: the local copy is rebuilt if the partition comes back
                log.warning("no checkpoint for partition %d (%s)", p, exc)
                self._revoked_at.pop(p, None)
                continue
            for table, end in ends:
                table.save_checkpoint(p, end - 1)
            self._revoked_at[p] = time.monotonic()
        revoked_at = dict(self._revoked_at)
        self._drop(gone)  # committed above; from now on they are another member's
        self._revoked_at.update({p: t for p, t in revoked_at.items() if p in gone})
        log.info("revoked partitions %s", sorted(gone))

    def _on_lost(self, consumer: Any, partitions: list[Any]) -> None:
        """The group took the partitions without a clean hand-over (this worker's session
        timed out, say while the broker was away): another worker may already write to them, so
        nothing is committed or checkpointed, and the local copy is rebuilt if they come back."""
        gone = {tp.partition for tp in partitions if tp.topic == self.t_ingest} & self.owned
        self._drop(gone)
        log.warning("lost partitions %s: their state is rebuilt from the changelogs if they come back", sorted(gone))

    def _drop(self, gone: set[int]) -> None:
        """Forget partitions without committing or checkpointing anything of them (from now on
        they are another member's: a commit for one of them could only move it backwards)."""
        self._done = {tp: offset for tp, offset in self._done.items() if tp[1] not in gone}
        self.owned -= gone
        for p in gone:
            self._revoked_at.pop(p, None)
        self.index = [e for e in self.index if _index_partition(e) not in gone]
        heapq.heapify(self.index)

    def _restore(self, table: Table, partition: int, start: int) -> int:
        """Read a changelog partition from ``start`` to its end into the local table."""
        count = 0
        for key, value in self.kafka.read(table.changelog, partition, start):
            table.apply(partition, key, value)
            count += 1
        return count

    # -- the batch ------------------------------------------------------------------------

    def process(self, messages: list[Any]) -> None:
        """Guard and fold a batch; returns once its outputs and states are on the broker."""
        states: dict[tuple[int, bytes], State] = {}
        for m in messages:
            err = m.error()
            if err is not None:
                log.warning("consumer error on %s[%s]: %s", m.topic(), m.partition(), err.str())
                continue
            if m.topic() == self.t_ingest:
                self._guard(m, states)
            else:
                self._acknowledgement(m, states)
        self._sealed_now.clear()  # plaintext kept no longer than the batch needs it
        self.folded_at, self.folded_cpu = time.perf_counter(), time.thread_time()
        self._write(states)
        for m in messages:  # done: everything the batch led to is on the broker
            self._done[(m.topic(), m.partition())] = m.offset() + 1

    def _flush_log(self) -> None:
        """Append the batch's log entries, after the data keys they are sealed under.

        Why wait for the keys: an entry acknowledged without its key (a worker killed between
        the two) would be re-sealed under a new key when the batch is folded again, leaving the
        first copy in the log unreadable for good. The wait costs a round trip per batch that
        sealed anything; entries and keys were sent together before.
        """
        if not self._log:
            return
        if self._log_sealed:
            self._deliver()
        for key, value, p in self._log:
            self._produce(self.t_events, key, value, p)
        self._log.clear()
        self._log_sealed = False

    def _write(self, states: dict[tuple[int, bytes], State]) -> None:
        # the states go out only once everything they claim was sent is acknowledged: a crash
        # in between folds the batch again rather than leaving its tombstones unsent
        self._flush_log()
        self._deliver()
        for (p, key), state in states.items():
            self.subjects.put(p, key, orjson.dumps(state))
            due = lifecycle.next_deadline(state)
            if due is not None:
                heapq.heappush(self.index, _index_entry(due, p, key))
        self._deliver()

    def _state(self, p: int, key: bytes, subject_id: str, states: dict[tuple[int, bytes], State]) -> State:
        state = states.get((p, key))
        if state is None:
            raw = self.subjects.get(p, key)
            state = lifecycle.upgrade(orjson.loads(raw), self.policy) if raw else lifecycle.new_state(subject_id)
            states[(p, key)] = state
        return state

    def _reject(self, reason: str, field: str, event: Event | None, where: Where, key: bytes = b"") -> None:
        self._produce(self.t_rejected, key, rejection(reason, field, event, where))

    def _decoded(self, m: Any, where: Where) -> Event | None:
        try:
            raw = decode(m.value(), where)
        except CodecError as exc:
            log.warning("dead letter %s", exc)
            self._reject("undecodable", "", None, where)
            return None
        try:
            return validate(raw, where)  # type: ignore[arg-type]  # None (a tombstone) is refused there, not_an_object
        except ContractError as exc:
            log.warning("dead letter %s", exc)
            self._reject(exc.code, exc.field, _identified(raw, exc.field), where)
        return None

    def _misplaced(self, m: Any, key: bytes, topic: str) -> bool:
        """Moves a message keyed right but on another partition than its subject's (a producer
        with another partitioner) to the subject's partition; True if it did."""
        home = self.partition_of(key)
        if home == m.partition():
            return False
        log.info("%s[%s]@%s belongs to partition %s: moved there", topic, m.partition(), m.offset(), home)
        self._produce(topic, key, m.value(), home, headers=m.headers())
        return True

    def _guard(self, m: Any, states: dict[tuple[int, bytes], State]) -> None:
        p = m.partition()
        where = Where(self.t_ingest, p, m.offset())
        event = self._decoded(m, where)
        if event is None:
            return
        key = m.key()
        event["received_at"] = received_at(m)
        refusal = (
            wrong_key(key, event)
            or future_time(event, event["received_at"], self.settings.clock_skew_ms)
            or screen(event, self.policy)
        )
        if refusal is not None:
            log.info("refused %s %s: %s in %s", event["type"], echoable(event["event_id"]), refusal.reason, refusal.field)
            self._reject(refusal.reason, refusal.field, event, where, echoable(event["subject_id"]).encode())
            return
        if self._misplaced(m, key, self.t_ingest):
            return
        state = self._state(p, key, event["subject_id"], states)
        held = lifecycle.republished(state, event) if event["type"] == "DataCollected" else None
        like = held["fields"] if held is not None and self.keystores[p].held_as(event, held["fields"]) else None
        if lifecycle.seen(state, event["event_id"]):
            # a redelivery of an event the fold has taken: appending it again would only mint a
            # data key nothing ever destroys. One whose content differs is another event under a
            # reused id, which upstream must hear about instead of losing it without a word. A
            # first copy that re-published its record unchanged has no key of its own: its
            # digest is keyed by the record's
            digest = self.keystores[p].digest(event)
            if digest is None and held is not None:
                digest = self.keystores[p].digest(event, held["fields"])
            if lifecycle.redelivered(state, event["event_id"], digest) == "different":
                log.info("refused %s %s: conflicting_duplicate", event["type"], echoable(event["event_id"]))
                self._reject("conflicting_duplicate", "event_id", event, where, echoable(event["subject_id"]).encode())
            else:
                log.info("duplicate %s %s dropped", event["type"], echoable(event["event_id"]))
            return
        if event["type"] == "DataCollected":
            # the record re-published exactly (a nightly sync): only the worker can tell, as only
            # it holds the keys; the fold then keeps the record, and its clock, as they are
            event["unchanged"] = like is not None  # the worker's to say, whatever upstream wrote
        sealed = self.keystores[p].seal(event, "obligation" if _obligation(event, self.policy) else "standard", like)
        if event["type"] in SEALED_TYPES and event.get("fields"):
            self._sealed_now.update(zip(sealed["fields"].values(), event["fields"].values(), strict=True))
            self._log_sealed = True
        self._log.append((key, encode(sealed), p))  # type: ignore[arg-type]  # an event always encodes
        if self._debug:
            log.debug("appended %s %s to partition %d", event["type"], echoable(event["event_id"]), p)
        self._fold(p, state, sealed, sealed["occurred_at"])

    def _acknowledgement(self, m: Any, states: dict[tuple[int, bytes], State]) -> None:
        """Downstream acknowledgements join the log of record, so a replay sees them too."""
        where = Where(self.t_acks, m.partition(), m.offset())
        event = self._decoded(m, where)
        if event is None:
            return
        if event["type"] != "ErasureAcknowledged":
            log.warning("dead letter %s: not an ErasureAcknowledged", where)
            self._reject("wrong_type", "type", None, where)
            return
        key = event["subject_id"].encode()
        event["received_at"] = received_at(m)
        refusal = future_time(event, event["received_at"], self.settings.clock_skew_ms)
        if refusal is not None:
            log.info("refused %s %s: %s", event["type"], echoable(event["event_id"]), refusal.reason)
            self._reject(refusal.reason, refusal.field, event, where, echoable(event["subject_id"]).encode())
            return
        if self._misplaced(m, key, self.t_acks):
            return
        p = m.partition()
        state = self._state(p, key, event["subject_id"], states)
        if lifecycle.seen(state, event["event_id"]):
            return  # a consumer re-sending an acknowledgement after a crash: the first one counts
        event = self.keystores[p].seal(event)  # no personal fields: only the digest is stamped
        self._log.append((key, encode(event), p))  # type: ignore[arg-type]  # an event always encodes
        self._fold(p, state, event, event["occurred_at"])

    def _fold(self, p: int, state: State, event: Event, now: int) -> None:
        _, outputs = lifecycle.apply(state, event, now, self.policy)
        if outputs:
            self._emit(outputs, p)

    def _log_tail_decision(self, p: int) -> bytes:
        self._flush_log()
        self._deliver()  # the log's tail must hold what this worker wrote
        found = self.kafka.last_decision(self.t_events, p)
        return found or GENESIS

    def _chain_head(self, p: int) -> bytes:
        head = self.chain_heads.get(p)
        if head is None:
            head = self.chain_heads[p] = self._log_tail_decision(p)
        return head

    def _emit(self, outputs: list[Any], p: int) -> None:
        """Send one fold step's messages (``processors.messages``): decisions held for the log
        in fold order, the rest at once; then destroy the keys the decisions name, once every
        record of the step was opened."""
        messages, self.chain_heads[p] = to_messages(
            outputs, self._chain_head(p), self.policy, lambda fields: self._open(p, fields)
        )
        topics = self.t_outputs
        for m in messages:
            if m.topic == EVENTS:
                self._log.append((m.key, m.value, p))  # type: ignore[arg-type]  # a decision is never a tombstone
            else:
                self._produce(topics[m.topic], m.key, m.value, headers=m.headers)
        for out in outputs:
            if not isinstance(out, lifecycle.Decision):
                continue
            if self._debug:
                log.debug("decided %s %s on partition %d", out.event["type"], echoable(out.event["event_id"]), p)
            destroyed = out.event.get("keys_destroyed")
            if destroyed:
                self.keystores[p].destroy(destroyed)
                self._sealed_now.clear()

    def _open(self, p: int, fields: Mapping[str, str]) -> dict[str, str]:
        known = self._sealed_now
        try:
            return {name: known[value] for name, value in fields.items()}
        except KeyError:  # sealed by an earlier batch
            return self.keystores[p].open(fields)

    # -- the views ------------------------------------------------------------------------

    def view(self, subject_id: str, name: str) -> tuple[int, bytes] | None:
        """(status, JSON body) of one view of a subject this worker owns; None if it does not.

        Read between two batches (the views' thread shares the loop's lock), waiting at most
        ``VIEW_PATIENCE`` for the batch in hand. 404 bodies say which it is (``"never_seen"``,
        ``"erased"``): a subject whose state is held but who never gave consent has a consent
        view all the same, with no purposes in it."""
        key = subject_id.encode("utf-8", "surrogatepass")
        p = self.partition_of(key)
        if p not in self.owned:
            return None
        if not self.lock.acquire(timeout=VIEW_PATIENCE):
            return 503, orjson.dumps(
                {"error": "the worker is waiting for the broker to acknowledge a batch; try again", "reason": "busy"}
            )
        try:
            raw = self.subjects.get(p, key)
            if not raw:
                return 404, orjson.dumps({"error": f"no state for subject {subject_id!r}", "reason": "never_seen"})
            state = lifecycle.upgrade(orjson.loads(raw), self.policy)
            if name == "consent":
                body: Any = lifecycle.consent_view(state)
                if body is None and state["status"] == "erased":
                    return 404, orjson.dumps({"error": f"subject {subject_id!r} was erased", "reason": "erased"})
                if body is None:  # held, but no consent ever given or withdrawn
                    body = {"subject_id": subject_id, "purposes": {}, "stopped": {}, "updated_at": None, "caused_by": None}
            else:
                body = lifecycle.export(state, self.policy)
                for rec in body["records"]:
                    rec["fields"] = self.keystores[p].open(rec["fields"])
        finally:
            self.lock.release()
        return 200, orjson.dumps(body, option=orjson.OPT_INDENT_2)

    # -- the retention timer ----------------------------------------------------------------

    def timer(self) -> None:
        """Fold a Tick into every owned subject whose next deadline has passed."""
        now = now_ms()
        due: list[tuple[int, bytes]] = []
        seen: set[bytes] = set()
        while self.index and _index_due(self.index[0]) <= now:
            entry = heapq.heappop(self.index)
            p, key = _index_partition(entry), entry[_DUE_BYTES + 2 :]
            if p in self.owned and entry[_DUE_BYTES:] not in seen:
                seen.add(entry[_DUE_BYTES:])
                due.append((p, key))
        if not due:
            return
        self._deliver()
        self._begin()
        after: dict[int, int] = {}
        states: dict[tuple[int, bytes], State] = {}
        for p, key in due:
            raw = self.subjects.get(p, key)
            if not raw:
                continue
            state = lifecycle.upgrade(orjson.loads(raw), self.policy)
            deadline = lifecycle.next_deadline(state)
            if deadline is None or deadline > now:
                continue  # a stale index entry: the subject changed since
            if p not in after:
                # the tick's place in the log: after its last entry, which the decisions
                # record so that a replay applies the tick there too
                after[p] = self.kafka.end_offset(self.t_events, p) - 1
            states[(p, key)] = state
            self._fold(p, state, {"type": "Tick", "subject_id": state["subject_id"], "after": after[p]}, now)
        self._write(states)
        self._end_transaction()

    # -- the loop -------------------------------------------------------------------------

    def run(self, until_idle: bool = False) -> None:
        """Fold batches until ``stopping`` (a signal), then leave the group. ``until_idle``: also
        return the first time a poll brings nothing (a test's stand-in Kafka, drained)."""
        self.consumer.subscribe(
            [self.t_ingest, self.t_acks], on_assign=self._on_assign, on_revoke=self._on_revoke, on_lost=self._on_lost
        )
        next_tick = time.monotonic() + self.settings.timer_interval
        batch, linger = self.settings.fold_batch, self.settings.fold_linger
        try:
            while not self.stopping:
                messages = self.consumer.consume(batch, linger)
                if not messages and until_idle:
                    break
                if messages:
                    started, cpu = time.perf_counter(), time.thread_time()
                    with self.lock:
                        self._begin()
                        self.process(messages)
                    delivered = time.perf_counter()
                    self._commit()
                    log.debug(
                        "batch of %d messages: folded in %.1f ms (%.1f ms CPU), delivered in %.1f ms, committed in %.1f ms",
                        len(messages), (self.folded_at - started) * 1000, (self.folded_cpu - cpu) * 1000,
                        (delivered - self.folded_at) * 1000,
                        (time.perf_counter() - delivered) * 1000,
                    )  # fmt: skip
                if time.monotonic() >= next_tick:
                    with self.lock:
                        self.timer()
                    next_tick = time.monotonic() + self.settings.timer_interval
        except BaseException:
            self.failed = True
            raise
        finally:
            self.close()

    def _commit(self, wait: bool = False) -> None:
        """Commit the offsets of what was folded and delivered, by value: the offsets are fixed
        here, not read when the commit is sent.

        Why by value: librdkafka's commit of "the current offsets" sends whatever the consumer
        has handed out when its background thread gets to the request. Not waited for (the
        loop does not wait), such a commit went out after the next batch was consumed and
        covered it before it was folded; a worker killed then lost that batch for good (the
        crash tests found 300 events so). Commits are sent in order and cover only what was
        delivered, so the loop need not wait; a revocation or a stop does."""
        if self.eos:
            self._end_transaction()
        elif self._done:
            self.kafka.commit(dict(self._done), wait)

    def _begin(self) -> None:
        if self.eos and not self._txn:
            self.kafka.begin()
            self._txn = True

    def _end_transaction(self) -> None:
        """Commit the open transaction, with the offsets of what it folded: the batch and its
        place in the input become visible together, or not at all."""
        if self._txn:
            self._txn = False
            self.kafka.commit_transaction(dict(self._done))

    def close(self) -> None:
        """Leave the group. After a clean stop, with everything delivered and committed; after
        an error (``failed``), with nothing committed: what the last commit covers is all that
        counts as done, and the next worker folds the rest again."""
        try:
            if not self.failed:
                self._deliver()
                if self.owned or self._txn:
                    self._commit(wait=True)
            elif self._txn:  # what the failed batch wrote is thrown away, not left to time out
                self._txn = False
                with contextlib.suppress(Exception):  # the error that stopped the loop is the one to report
                    self.kafka.abort()
        finally:
            self.consumer.close()  # leaves the group; on_revoke saves the checkpoints (clean stops only)
            self.store.close()


# -- index entries ----------------------------------------------------------------------

_DUE_BYTES = 8
_DUE_BIAS = 1 << 63  # any signed 64-bit deadline, still ordered as unsigned bytes


def _index_entry(due: int, partition: int, key: bytes) -> bytes:
    """One deadline-index entry: the deadline in fixed-width big-endian, the partition, the key.

    Why: the index holds one entry per subject with a deadline, a million on a big worker. A
    tuple costs a tuple, two ints and the key (~150 bytes each); one bytes object ~60. Compared
    as bytes, entries order by deadline first.
    """
    return (due + _DUE_BIAS).to_bytes(_DUE_BYTES, "big") + partition.to_bytes(2, "big") + key


def _index_due(entry: bytes) -> int:
    return int.from_bytes(entry[:_DUE_BYTES], "big") - _DUE_BIAS


def _index_partition(entry: bytes) -> int:
    return int.from_bytes(entry[_DUE_BYTES : _DUE_BYTES + 2], "big")


def _identified(raw: Event | None, refused_field: str) -> Event | None:
    """What of an event the contract refused its dead letter may name, so upstream can tell
    which event it was: its id, when it is one (the contract may have stopped before looking at
    it; free text there may be anything), and its type, when it is one of ours; ``rejection``
    screens the id once more for contact and payment data."""
    if not isinstance(raw, dict):
        return None
    eid, kind = raw.get("event_id"), raw.get("type")
    return {
        "event_id": eid if refused_field != "event_id" and is_valid_id(eid) else "",
        "type": kind if kind in UPSTREAM_EVENTS else "",
    }


def received_at(m: Any) -> int:
    """When the broker took the message in: its LogAppendTime, which ``lifecycle.ingest`` and
    ``lifecycle.acks`` are created with. On a topic left at CreateTime the producer's stamp is
    all there is; capped at this worker's clock, so a producer's clock can only make its own
    events look earlier (and so stricter to judge), never later."""
    from confluent_kafka import TIMESTAMP_LOG_APPEND_TIME

    kind, ts = m.timestamp()
    now = int(time.time() * 1000)
    if kind == TIMESTAMP_LOG_APPEND_TIME and ts > 0:
        return int(ts)
    return min(int(ts), now) if ts > 0 else now


def _obligation(event: Event, policy: Policy) -> bool:
    return event["type"] == "DataCollected" and policy.is_obligation(event["purpose"])


__all__ = ["READY", "DeliveryError", "Worker", "received_at", "rejection"]
