"""The auditor's check of ``lifecycle.events``: rebuild every subject with the live fold,
re-derive every decision, compare it with the one recorded, and verify the hash chain.

Why it is its own module with no Kafka in it: the replay command feeds it what it read from
the broker, and a test feeds it a tampered copy in memory; both get the same verdict.

How a recorded decision is judged, per partition in log order:

- its ``chain`` must be the hash of the previous decision of the partition as written
  (``chain_broken`` otherwise: a decision was deleted, reordered or altered before it);
- the fold must have derived a decision with the same id from the events before it, with
  the same content (``not_rederived``, ``differs``); a decision the live timer took says in
  ``caused_by`` (``timer@<offset>``) after which log entry it was taken, and the replay
  ticks its clock there, at the decision's ``occurred_at``;
- a second copy of a decision already matched (an at-least-once redelivery) is counted,
  not blamed, when it is byte-for-byte the same decision.

Each upstream event is also held against the guard's clock rule: its ``occurred_at`` may not be
later than the time the broker received it (``received_at``, stamped by the guard) plus the
allowed skew (``future_time``); entries written before the stamp existed carry 0 and pass.

A ``PolicyAdopted`` entry is a link of the chain too, and from it on the partition is folded
with the policy it carries (its text, held against its version: ``policy_altered`` when they
disagree), its consents of changed meaning marked for renewal as the worker marked them: the
replay takes each decision under the policy that was in force, so an edit of the policy file
never makes older decisions mismatch. Before a partition's first adoption, the configured
policy is used (a log written before policies were versioned).

At the end, every decision the fold derived but the log lacks is ``not_recorded`` (the
worker lost it, or has not caught up), and the keys: every data key a decision destroyed,
and every key of a subject's sealed events that no live data still needs, must be gone from
``lifecycle.keys`` (``key_not_destroyed``, ``key_survives``). An erasure is *proven* when
it was re-derived and every key its subject's erased data needed is gone.

Mismatches carry partition, offset, subject and event ids and field names, never values.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import orjson

from processors import fold as lifecycle
from processors.chain import GENESIS, link
from processors.envelope import keys_of
from processors.policy import Policy, PolicyError, parse_policy, policy_version
from processors.state import Event, State

Entry = tuple[int, int, "bytes | None"]
"""(offset, Kafka timestamp ms, value bytes) of one log entry."""

Decode = Callable[[bytes, int, int], Event]
"""(value, partition, offset) -> event dict; raises ValueError on a bad entry."""

Encode = Callable[[Event], bytes]

MAX_LISTED = 200


@dataclass
class Mismatch:
    kind: str
    partition: int
    offset: int
    subject_id: str = ""
    event_id: str = ""
    detail: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if v not in ("", None)}


@dataclass
class Audit:
    policy: Policy
    decode: Decode
    encode: Encode
    skew_ms: int = 300_000  # the clock skew the guard allowed (LIFECYCLE_CLOCK_SKEW_MS)
    states: dict[str, State] = field(default_factory=dict)
    mismatches: list[Mismatch] = field(default_factory=list)
    events_read: int = 0
    decisions_recorded: int = 0
    decisions_matched: int = 0
    duplicates: int = 0
    partitions: int = 0
    erasures: dict[str, tuple[str, list[str]]] = field(default_factory=dict)  # decision id -> (subject, keys)
    destroyed: dict[str, tuple[int, int]] = field(default_factory=dict)  # key id -> where destroyed
    sealed_keys: dict[str, set[str]] = field(default_factory=dict)  # subject -> key ids of its envelopes
    policies_adopted: int = 0
    _pending: dict[str, tuple[str, Event, int]] = field(default_factory=dict)  # id -> (subject, decision, partition)
    _matched: dict[str, bytes] = field(default_factory=dict)
    _current: Policy | None = None  # the policy in force at this point of the partition
    _subjects: set[str] = field(default_factory=set)  # the subjects of the partition so far
    _parsed: dict[str, Policy] = field(default_factory=dict)  # version -> policy, across partitions

    # -- per partition ------------------------------------------------------------------

    def partition(self, partition: int, entries: list[Entry], decision_fingerprints: frozenset[bytes]) -> None:
        """Fold one partition's entries in offset order (``entries`` sorted by offset)."""
        self.partitions += 1
        self._current = self.policy
        self._subjects = set()
        schedule = self._timer_schedule(partition, entries, decision_fingerprints)
        due = sorted(schedule)
        next_due = 0
        head = GENESIS
        for offset, _ts, value in entries:
            while next_due < len(due) and due[next_due] < offset:  # ticks placed before this entry
                self._ticks(schedule[due[next_due]], due[next_due], partition)
                next_due += 1
            if value is None:
                continue
            self.events_read += 1
            try:
                event = self.decode(value, partition, offset)
            except ValueError as exc:
                self._miss("undecodable", partition, offset, detail=str(exc))
                continue
            if event["type"] in lifecycle.CHAINED_TYPES:
                if event.get("chain", "") != link(head):
                    self._miss(
                        "chain_broken",
                        partition,
                        offset,
                        event,
                        "the previous decision of this partition is not the one it chains to",
                    )
                head = value
                if event["type"] in lifecycle.DECISION_TYPES:
                    self.decisions_recorded += 1
                    self._judge(event, value, partition, offset)
                else:
                    self._adopt(event, partition, offset)
            else:
                received = event.get("received_at") or 0
                if received and event["occurred_at"] > received + self.skew_ms:
                    self._miss("future_time", partition, offset, event, "stamped later than the broker received it, yet taken")
                self._fold(event, event["occurred_at"], partition, offset)
            if next_due < len(due) and due[next_due] == offset:
                self._ticks(schedule[due[next_due]], offset, partition)
                next_due += 1
        for k in due[next_due:]:
            self._ticks(schedule[k], k, partition)

    def _timer_schedule(
        self, partition: int, entries: list[Entry], fingerprints: frozenset[bytes]
    ) -> dict[int, list[tuple[str, int]]]:
        """after-offset -> [(subject, now)] of every tick the live timer took on this partition."""
        schedule: dict[int, list[tuple[str, int]]] = {}
        previous = -1
        for offset, _ts, value in entries:
            if value is not None and value[2:10] in fingerprints:
                try:
                    event = self.decode(value, partition, offset)
                except ValueError:
                    continue  # reported in the main pass
                cause = event.get("caused_by", "")
                if cause.startswith(lifecycle.TIMER):
                    _, _, at = cause.partition("@")
                    after = int(at) if at.lstrip("-").isdigit() else previous  # an unplaced tick: just before it
                    tick = (event["subject_id"], event["occurred_at"])
                    ticks = schedule.setdefault(after, [])
                    if tick not in ticks:
                        ticks.append(tick)
            previous = offset
        return schedule

    def _ticks(self, ticks: list[tuple[str, int]], after: int, partition: int) -> None:
        for subject, now in ticks:
            self._fold({"type": "Tick", "subject_id": subject, "after": after}, now, partition, after)

    def _state(self, subject: str) -> State:
        state = self.states.get(subject)
        if state is None:
            state = self.states[subject] = lifecycle.new_state(subject)
        self._subjects.add(subject)
        return state

    def _in_force(self) -> Policy:
        return self._current or self.policy

    def _adopt(self, event: Event, partition: int, offset: int) -> None:
        """Fold the rest of the partition with the policy this entry carries."""
        self.policies_adopted += 1
        text, version = event["text"], event["version"]
        if policy_version(text) != version:
            self._miss("policy_altered", partition, offset, event, "its text is not the policy of its version")
            return
        policy = self._parsed.get(version)
        if policy is None:
            try:
                policy = self._parsed[version] = parse_policy(text, f"policy {version}")
            except PolicyError as exc:
                self._miss("policy_unreadable", partition, offset, event, str(exc))
                return
        self._current = policy
        for subject in sorted(self._subjects):
            lifecycle.adopt(self.states[subject], policy, event["occurred_at"], event["event_id"])

    def _fold(self, event: Event, now: int, partition: int, offset: int) -> None:
        subject = event["subject_id"]
        fields = event.get("fields")
        if fields:
            self.sealed_keys.setdefault(subject, set()).update(keys_of(fields))
        _, outputs = lifecycle.apply(self._state(subject), event, now, self._in_force())
        for out in outputs:
            if isinstance(out, lifecycle.Decision):
                self._pending[out.event["event_id"]] = (subject, out.event, partition)

    def _judge(self, recorded: Event, value: bytes, partition: int, offset: int) -> None:
        eid = recorded["event_id"]
        body = _without_chain(recorded)
        found = self._pending.pop(eid, None)
        if found is None:
            first = self._matched.get(eid)
            if first is not None and first == self._canonical(body):
                self.duplicates += 1
            elif first is not None:
                self._miss("differs", partition, offset, recorded, "a second copy of this decision says something else")
            else:
                self._miss(
                    "not_rederived", partition, offset, recorded, f"no event before it leads the fold to a {recorded['type']}"
                )
        else:
            _, derived, _ = found
            expected = _without_chain(self.decode(self.encode(derived), partition, offset))
            if expected != body:
                names = sorted(k for k in expected.keys() | body.keys() if expected.get(k) != body.get(k))
                self._miss("differs", partition, offset, recorded, "fields differ: " + ", ".join(names))
            else:
                self.decisions_matched += 1
            self._matched[eid] = self._canonical(body)
        for key_id in recorded.get("keys_destroyed") or ():
            self.destroyed.setdefault(key_id, (partition, offset))
        if recorded["type"] == "ErasureExecuted" and found is not None:
            self.erasures[eid] = (recorded["subject_id"], list(recorded.get("keys_destroyed") or ()))
        # what the log says was decided is what the live fold went on from
        lifecycle.apply(self._state(recorded["subject_id"]), recorded, recorded["occurred_at"], self._in_force())

    def _canonical(self, body: Event) -> bytes:
        return orjson.dumps(body, option=orjson.OPT_SORT_KEYS)

    def _miss(self, kind: str, partition: int, offset: int, event: Event | None = None, detail: str = "") -> None:
        ev = event or {}
        self.mismatches.append(
            Mismatch(kind, partition, offset, str(ev.get("subject_id", "")), str(ev.get("event_id", "")), detail)
        )

    def forget_policies(self) -> None:
        """Drop the policies parsed from the log (to send the audit to another process: they
        hold read-only mappings, which do not pickle, and the verdict does not need them)."""
        self._current = None
        self._parsed = {}

    def merge(self, other: Audit) -> None:
        """Take in the audit of other partitions, made apart (another process): partitions are
        independent (each has its own chain, and a subject lives in one), so their results add."""
        self.states.update(other.states)
        self.mismatches.extend(other.mismatches)
        self.events_read += other.events_read
        self.decisions_recorded += other.decisions_recorded
        self.decisions_matched += other.decisions_matched
        self.duplicates += other.duplicates
        self.policies_adopted += other.policies_adopted
        self.partitions += other.partitions
        self.erasures.update(other.erasures)
        for key_id, where in other.destroyed.items():
            self.destroyed.setdefault(key_id, where)
        for subject, keys in other.sealed_keys.items():
            self.sealed_keys.setdefault(subject, set()).update(keys)
        self._pending.update(other._pending)
        self._matched.update(other._matched)

    # -- the verdict --------------------------------------------------------------------

    def finish(self, live_keys: Iterable[str], complete: bool = True) -> dict[str, Any]:
        """The report. ``live_keys``: data key ids with a value on ``lifecycle.keys``.
        ``complete``: the whole log was read (not ``--until``), so a derived decision the log
        lacks is a mismatch rather than one taken later."""
        live = set(live_keys)
        if complete:
            for eid, (subject, derived, partition) in sorted(self._pending.items()):
                self.mismatches.append(
                    Mismatch("not_recorded", partition, -1, subject, eid, f"the fold derives a {derived['type']} the log lacks")
                )
        for key_id, (partition, offset) in sorted(self.destroyed.items()):
            if key_id in live:
                self.mismatches.append(Mismatch("key_not_destroyed", partition, offset, key_id.split("/", 1)[0], "", key_id))
        proven = 0
        for _eid, (subject, keys) in sorted(self.erasures.items()):
            state = self.states[subject]
            needed = self.sealed_keys.get(subject, set()) - set(state["keys"])
            if not (set(keys) | needed) & live:
                proven += 1
        for subject, sealed in sorted(self.sealed_keys.items()):
            held = self.states.get(subject)
            if held is None:
                continue
            for key_id in sorted((sealed - set(held["keys"])) & live):
                if key_id not in self.destroyed:
                    self.mismatches.append(Mismatch("key_survives", -1, -1, subject, "", key_id))
        return {
            "events_read": self.events_read,
            "partitions": self.partitions,
            "subjects": len(self.states),
            "policies_adopted": self.policies_adopted,
            "decisions_recorded": self.decisions_recorded,
            "decisions_rederived": self.decisions_matched,
            "duplicate_decisions": self.duplicates,
            "erasures": len(self.erasures),
            "erasures_proven": proven,
            "keys_destroyed": len(self.destroyed),
            "mismatch_count": len(self.mismatches),
            "mismatches": [m.as_dict() for m in self.mismatches[:MAX_LISTED]],
        }


def _without_chain(event: Event) -> Event:
    return {k: v for k, v in event.items() if k != "chain"}
