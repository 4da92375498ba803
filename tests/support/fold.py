"""Driving one subject's fold by hand: events get fresh ids, time is whatever a test says."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from processors.fold import ConsentChange, Decision, Output, RecordChange, apply, new_state
from processors.policy import Policy

DAY = 86_400_000
HOUR = 3_600_000


def ms(text: str) -> int:
    return int(datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp() * 1000)


T0 = ms("2024-01-15T10:00:00")

CONSUMERS = ["ats", "crm-mirror", "mailer", "warehouse"]


class Subject:
    """One subject's fold, driven by hand: events get fresh ids, time is whatever we say."""

    def __init__(self, policy: Policy, sid: str = "s-1") -> None:
        self.policy = policy
        self.sid = sid
        self.state = new_state(sid)
        self.n = 0
        self.log: list[dict] = []

    def event(self, typ: str, at: int, **kw: Any) -> dict:
        self.n += 1
        return {
            "type": typ,
            "event_id": f"{self.sid}-e{self.n}",
            "subject_id": self.sid,
            "occurred_at": at,
            "source": "test",
            **kw,
        }

    def apply(self, event: dict, now: int | None = None) -> list[Output]:
        self.log.append(event)
        state, outs = apply(self.state, event, event["occurred_at"] if now is None else now, self.policy)
        assert state is self.state
        return outs

    def send(self, typ: str, at: int, **kw: Any) -> list[Output]:
        return self.apply(self.event(typ, at, **kw))

    def tick(self, now: int) -> list[Output]:
        return self.apply({"type": "Tick", "subject_id": self.sid}, now)

    # shortcuts -------------------------------------------------------------------------

    def collect(
        self,
        at: int,
        record_id: str = "r-1",
        category: str = "contact",
        purpose: str = "inquiry",
        basis: str | None = None,
        fields: dict[str, str] | None = None,
    ) -> list[Output]:
        basis = basis or self.policy.purposes[purpose].legal_bases[0]
        return self.send(
            "DataCollected",
            at,
            record_id=record_id,
            category=category,
            purpose=purpose,
            legal_basis=basis,
            fields=fields if fields is not None else {"email": "ada@example.org", "name": "Ada"},
        )

    def consent(self, at: int, purpose: str) -> list[Output]:
        return self.send("ConsentGiven", at, purpose=purpose)

    def request(self, typ: str, at: int, request_id: str = "q-1", verify: bool = True, **kw: Any) -> list[Output]:
        outs = self.send(typ, at, request_id=request_id, **kw)
        if verify:
            outs += self.send("IdentityVerified", at + HOUR, request_id=request_id, method="email_link")
        return outs

    def ack(self, at: int, consumer: str, request_id: str = "", record_id: str = "") -> list[Output]:
        return self.send("ErasureAcknowledged", at, consumer=consumer, request_id=request_id, record_id=record_id)

    def ack_all(self, at: int, request_id: str = "q-1") -> list[Output]:
        return [o for c in self.policy.consumer_names for o in self.ack(at, c, request_id=request_id)]

    @property
    def records(self) -> dict[str, dict]:
        return self.state["records"]


def decisions(outs: list[Output], typ: str | None = None) -> list[dict]:
    return [o.event for o in outs if isinstance(o, Decision) and (typ is None or o.event["type"] == typ)]


def only(outs: list[Output], typ: str) -> dict:
    (d,) = decisions(outs, typ)
    return d


def tombstoned(outs: list[Output]) -> list[str]:
    return [o.record_id for o in outs if isinstance(o, RecordChange) and o.value is None]


def upserted(outs: list[Output]) -> dict[str, dict]:
    return {o.record_id: o.value for o in outs if isinstance(o, RecordChange) and o.value is not None}


def consent_changes(outs: list[Output]) -> list[dict | None]:
    return [o.value for o in outs if isinstance(o, ConsentChange)]
