"""The auditor's replay: a faithful log verifies, a tampered copy is caught at the exact offset.

The in-memory tests build a log the way the worker writes one (events appended, the fold's
decisions appended after them with their hash chain, timer decisions placed after the entry
they followed) and hand it to the same audit the ``lifecycle replay`` command runs. The
integration test tampers with a copy of a real worker's log on the real broker and runs the
command.
"""

from __future__ import annotations

import copy

import pytest

from processors.audit import Audit
from processors.chain import GENESIS, link
from processors.envelope import build
from processors.fold import TIMER_DECISIONS, Decision, adopt, adoption, apply, new_state
from processors.policy import Policy, parse_policy
from schemas import BY_NAME
from schemas.codec import decode, encode
from streams.commands.replay import _decode, _encode, audit_partitions
from streams.settings import load_policy

DAY = 86_400_000
T0 = 1_705_312_800_000
FPS = frozenset(BY_NAME[n].fingerprint for n in TIMER_DECISIONS)


@pytest.fixture(scope="module")
def policy() -> Policy:
    return load_policy()


def ev(typ: str, eid: str, sid: str, at: int, **kw: object) -> dict:
    return {"type": typ, "event_id": eid, "subject_id": sid, "occurred_at": at, "source": "test", **kw}


HISTORY = [
    ev(
        "DataCollected",
        "e1",
        "s-1",
        T0,
        record_id="r1",
        category="contact",
        purpose="inquiry",
        legal_basis="legitimate_interest",
        fields={"name": "A"},
    ),
    ev(
        "DataCollected",
        "e2",
        "s-2",
        T0,
        record_id="r1",
        category="contact",
        purpose="inquiry",
        legal_basis="legitimate_interest",
        fields={"name": "B"},
    ),
    ev(
        "DataCollected",
        "e3",
        "s-1",
        T0,
        record_id="r2",
        category="contact",
        purpose="newsletter",
        legal_basis="consent",
        fields={"name": "A"},
    ),
    ev("ErasureRequested", "e4", "s-1", T0 + DAY, request_id="q1"),
    ev("IdentityVerified", "e5", "s-1", T0 + DAY, request_id="q1", method="email_link"),
    ev("AccessRequested", "e6", "s-2", T0 + DAY, request_id="q2"),
]


def write_log(history: list[dict], policy: Policy, tick_at: int | None = None) -> list[tuple[int, int, bytes]]:
    """One partition's log as the worker writes it."""
    states: dict[str, dict] = {}
    log: list[bytes] = []
    head = GENESIS

    def append_decisions(outputs: list) -> None:
        nonlocal head
        for out in outputs:
            if isinstance(out, Decision):
                value = encode({**out.event, "chain": link(head)})
                assert value is not None
                head = value
                log.append(value)

    for event in history:
        value = encode(event)
        assert value is not None
        log.append(value)
        state = states.setdefault(event["subject_id"], new_state(event["subject_id"]))
        append_decisions(apply(state, event, event["occurred_at"], policy)[1])
    if tick_at is not None:
        after = len(log) - 1
        for sid, state in sorted(states.items()):
            append_decisions(apply(state, {"type": "Tick", "subject_id": sid, "after": after}, tick_at, policy)[1])
    return [(i, 0, v) for i, v in enumerate(log)]


def audit(entries: list[tuple[int, int, bytes]], policy: Policy) -> dict:
    a = Audit(policy, _decode, _encode)
    a.partition(0, entries, FPS)
    return a.finish(set())


def decision_offsets(entries: list[tuple[int, int, bytes]]) -> list[int]:
    return [o for o, _, v in entries if (decode(v) or {}).get("source") == "lifecycle"]


def test_a_faithful_log_verifies_with_every_decision_rederived(policy: Policy) -> None:
    entries = write_log(HISTORY, policy, tick_at=T0 + 400 * DAY)
    report = audit(entries, policy)
    assert report["mismatch_count"] == 0, report["mismatches"]
    assert report["decisions_recorded"] == report["decisions_rederived"] >= 4  # executed, 2 fulfilled, expiry, missed
    assert report["erasures"] == report["erasures_proven"] == 1


def test_an_event_taken_although_stamped_after_it_arrived_is_reported(policy: Policy) -> None:
    stamped = [{**e, "received_at": e["occurred_at"] + 1000} for e in HISTORY]  # every one on time
    assert audit(write_log(stamped, policy), policy)["mismatch_count"] == 0
    late = len(stamped) // 2
    stamped[late] = {**stamped[late], "received_at": stamped[late]["occurred_at"] - DAY}  # a day "in the future"
    report = audit(write_log(stamped, policy), policy)
    assert [(m["kind"], m["event_id"]) for m in report["mismatches"]] == [("future_time", stamped[late]["event_id"])]


def test_a_redelivered_decision_is_counted_not_blamed(policy: Policy) -> None:
    entries = write_log(HISTORY, policy)
    last = decision_offsets(entries)[-1]
    again = decode(entries[last][2])
    assert again is not None
    entries.append((len(entries), 0, encode({**again, "chain": link(entries[last][2])})))  # type: ignore[arg-type]
    report = audit(entries, policy)
    assert report["mismatch_count"] == 0 and report["duplicate_decisions"] == 1


def test_a_deleted_decision_is_reported_where_the_chain_breaks(policy: Policy) -> None:
    entries = write_log(HISTORY, policy)
    first, second = decision_offsets(entries)[:2]
    tampered = [e for e in entries if e[0] != first]
    report = audit(tampered, policy)
    kinds = {(m["kind"], m.get("offset")) for m in report["mismatches"]}
    assert ("chain_broken", second) in kinds
    assert any(m["kind"] == "not_recorded" for m in report["mismatches"])


def test_an_altered_decision_is_reported_at_its_offset(policy: Policy) -> None:
    entries = write_log(HISTORY, policy)
    offsets = decision_offsets(entries)
    target = next(o for o in offsets if (decode(entries[o][2]) or {})["type"] == "ErasureExecuted")
    event = decode(entries[target][2])
    assert event is not None
    forged = encode({**event, "erased": [], "retained": {"r1": "legal_hold:h"}})
    assert forged is not None
    tampered = [(o, t, forged if o == target else v) for o, t, v in entries]
    report = audit(tampered, policy)
    differs = [m for m in report["mismatches"] if m["kind"] == "differs"]
    assert [(m["offset"], m["event_id"]) for m in differs] == [(target, event["event_id"])]
    assert "erased" in differs[0]["detail"] and "retained" in differs[0]["detail"]
    later = [o for o in offsets if o > target]
    if later:  # the decision after it no longer chains to what is there
        assert any(m["kind"] == "chain_broken" and m["offset"] == later[0] for m in report["mismatches"])


def test_reordered_decisions_break_the_chain(policy: Policy) -> None:
    entries = write_log(HISTORY, policy)
    a, b = decision_offsets(entries)[:2]
    values = {o: v for o, _, v in entries}
    values[a], values[b] = values[b], values[a]
    report = audit([(o, 0, values[o]) for o, _, _ in entries], policy)
    assert {m["offset"] for m in report["mismatches"] if m["kind"] == "chain_broken"} >= {a}


def test_a_decision_no_event_justifies_is_not_rederived(policy: Policy) -> None:
    entries = write_log(HISTORY[:3], policy)  # no erasure was ever requested
    head = entries[decision_offsets(entries)[-1]][2] if decision_offsets(entries) else GENESIS
    forged = encode(
        {
            "type": "ErasureExecuted",
            "event_id": "x/ErasureExecuted/q9",
            "subject_id": "s-2",
            "occurred_at": T0 + DAY,
            "source": "lifecycle",
            "caused_by": "x",
            "chain": link(head),
            "request_id": "q9",
            "erased": ["r1"],
            "retained": {},
        }
    )
    assert forged is not None
    report = audit([*entries, (len(entries), 0, forged)], policy)
    assert [(m["kind"], m["offset"]) for m in report["mismatches"]] == [("not_rederived", len(entries))]


def test_a_key_that_survives_its_erasure_is_reported(policy: Policy) -> None:
    sealed = copy.deepcopy(HISTORY)
    sealed[0]["fields"] = {"name": "enc1:cy0xL2Ux:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"}  # key id s-1/e1
    entries = write_log(sealed, policy)
    a = Audit(policy, _decode, _encode)
    a.partition(0, entries, FPS)
    report = a.finish({"s-1/e1"})
    assert [m["kind"] for m in report["mismatches"]] == ["key_not_destroyed"]
    assert report["erasures_proven"] == 0


def test_a_log_audited_in_several_processes_gives_the_same_report(policy: Policy) -> None:
    """A big log is audited one group of partitions per process: the merged verdict must be the
    one a single process reaches, a tampered partition's mismatch included, at its offset."""

    def renamed(p: int) -> list[dict]:
        events = [{**e, "subject_id": f"{e['subject_id']}-p{p}", "event_id": f"{e['event_id']}-p{p}"} for e in HISTORY]
        events[0]["fields"] = {"name": build(f"s-1-p{p}/e1-p{p}", bytes(24))}  # sealed, as the worker writes it
        return events

    log = {p: write_log(renamed(p), policy, tick_at=T0 + 400 * DAY) for p in range(4)}
    target = next(o for o in decision_offsets(log[2]) if (decode(log[2][o][2]) or {})["type"] == "ErasureExecuted")
    event = decode(log[2][target][2])
    assert event is not None
    forged = encode({**event, "erased": []})
    log[2] = [(o, t, forged if o == target else v) for o, t, v in log[2]]
    live = {f"s-1-p{p}/e1-p{p}" for p in range(4)}  # an erased subject's key still live: a key check fires

    reports = []
    for jobs, parallel_from in ((1, 0), (2, 0)):
        a = Audit(policy, _decode, _encode)
        used, got = audit_partitions(a, log, None, jobs=jobs, parallel_from=parallel_from, meanwhile=lambda: "keys")
        assert (used, got) == (jobs, "keys")
        report = a.finish(live)
        reports.append({k: v for k, v in report.items() if k not in ("elapsed_s", "events_per_second")})
    single, several = reports
    assert several == single
    assert several["partitions"] == 4 and several["subjects"] == 8
    assert {"kind": "differs", "partition": 2, "offset": target}.items() <= several["mismatches"][0].items()
    assert any(m["kind"] == "key_not_destroyed" for m in several["mismatches"])


# --------------------------------------------------------------------------------------
# a log spanning a policy change
# --------------------------------------------------------------------------------------


def edited(policy: Policy) -> Policy:
    """The next edition: inquiries kept 6 months, not 12, and the newsletter means more."""
    text = policy.text.replace("no_relationship_months = 12", "no_relationship_months = 6")
    text = text.replace("(the policy's own example of consent)", "(now with partner offers)")
    assert text != policy.text
    return parse_policy(text)


def write_log_across(segments: list[tuple[Policy, list[dict]]], tick_at: int) -> list[tuple[int, int, bytes]]:
    """One partition's log as the worker writes it across restarts under new policies: each
    segment opens with its ``PolicyAdopted`` (chained, the consents of changed meaning marked),
    and the timer ticks under the last policy."""
    states: dict[str, dict] = {}
    log: list[bytes] = []
    head = GENESIS

    def chained(event: dict) -> None:
        nonlocal head
        value = encode({**event, "chain": link(head)})
        assert value is not None
        head = value
        log.append(value)

    def decided(outputs: list) -> None:
        for out in outputs:
            if isinstance(out, Decision):
                chained(out.event)

    policy = segments[0][0]
    for policy, events in segments:
        adopted = adoption(policy, 0, len(log) - 1, events[0]["occurred_at"], "test")
        chained(adopted)
        for state in states.values():
            adopt(state, policy, adopted["occurred_at"], adopted["event_id"])
        for event in events:
            value = encode(event)
            assert value is not None
            log.append(value)
            state = states.setdefault(event["subject_id"], new_state(event["subject_id"]))
            decided(apply(state, event, event["occurred_at"], policy)[1])
    after = len(log) - 1
    for sid, state in sorted(states.items()):
        decided(apply(state, {"type": "Tick", "subject_id": sid, "after": after}, tick_at, policy)[1])
    return [(i, 0, v) for i, v in enumerate(log)]


def across_a_change(policy: Policy) -> tuple[Policy, list[tuple[int, int, bytes]]]:
    newer = edited(policy)
    collect = {"category": "contact", "legal_basis": "consent", "purpose": "newsletter", "fields": {"name": "A"}}
    before = [
        ev("ConsentGiven", "c1", "s-1", T0, purpose="newsletter"),
        ev("DataCollected", "c2", "s-1", T0, record_id="r1", **collect),
        ev("DataCollected", "c3", "s-2", T0, record_id="r1", **{**collect, "purpose": "inquiry", "legal_basis": "contract"}),
        ev("AccessRequested", "c7", "s-2", T0 + DAY, request_id="q1"),
        ev("IdentityVerified", "c8", "s-2", T0 + DAY, request_id="q1", method="email_link"),
    ]
    after = [  # the consent was given to the old meaning: no collection until renewed
        ev("DataCollected", "c4", "s-1", T0 + 30 * DAY, record_id="r2", **collect),
        ev("ConsentGiven", "c5", "s-1", T0 + 31 * DAY, purpose="newsletter"),
        ev("DataCollected", "c6", "s-1", T0 + 32 * DAY, record_id="r3", **collect),
    ]
    return newer, write_log_across([(policy, before), (newer, after)], tick_at=T0 + 200 * DAY)


def test_a_log_spanning_a_policy_change_replays_each_stretch_under_its_policy(policy: Policy) -> None:
    newer, entries = across_a_change(policy)
    decided = [e for e in (decode(v) for _, _, v in entries) if e and e["source"] == "lifecycle" and "policy" in e]
    # the premise: decisions under both versions, and the newer rules decided something
    assert {d["policy"] for d in decided} == {policy.version, newer.version}
    assert ("RequestRejected", "consent_needs_renewal") in {(d["type"], d.get("reason")) for d in decided}
    assert "RetentionExpired" in {d["type"] for d in decided}  # the inquiry, 6 months on
    for configured in (policy, newer):  # whichever file the auditor has: the log says which ruled
        report = audit(entries, configured)
        assert report["mismatch_count"] == 0, report["mismatches"]
        assert report["policies_adopted"] == 2 and report["decisions_rederived"] == len(decided)


def test_a_policy_whose_text_was_altered_in_the_log_is_reported(policy: Policy) -> None:
    _, entries = across_a_change(policy)
    at = next(o for o, _, v in entries if (decode(v) or {}).get("type") == "PolicyAdopted" and o > 0)
    event = decode(entries[at][2])
    assert event is not None
    forged = encode({**event, "text": event["text"].replace("no_relationship_months = 6", "no_relationship_months = 60")})
    assert forged is not None
    report = audit([(o, t, forged if o == at else v) for o, t, v in entries], policy)
    assert {(m["kind"], m["offset"]) for m in report["mismatches"]} >= {("policy_altered", at)}
