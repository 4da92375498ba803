"""Micro-benchmark of the lifecycle fold on one core.

Why: the worker folds every event of every subject, live and in the auditor's replay, so the
fold's cost per event bounds the pipeline's throughput. The figure is printed next to a
baseline measured in the same run (a dict lookup + dict update per event, the least any
stateful fold could do), so the ratio stays meaningful across machines.

    python -m processors.fold_bench [--events N] [--subjects N] [--repeat N] [--seed N]

The default history gives each subject about ten events, the mix ``lifecycle bench`` feeds the
pipeline. The fold's cost per event grows with a subject's history (an erasure tombstones every
record, a relationship re-dates every record), so ``--subjects 5000`` (sixty events and some
twenty-five records each) is the heavy-tail figure: about 10 % lower.
"""

from __future__ import annotations

import argparse
import gc
import random
import sys
import time
from typing import Callable

from processors.fold import apply, new_state
from processors.policy import Policy, load_policy

TARGET = 200_000  # events/s the fold must sustain

_T0 = 1_704_067_200_000  # 2024-01-01T00:00:00Z
_CONSENT_PURPOSES = ("marketing_email", "newsletter", "analytics_cookies")
# (purpose, category, legal basis, fields) for collections that need no consent
_OTHER = (
    ("inquiry", "contact", "legitimate_interest", ("name", "email", "company", "message")),
    ("crm", "contact", "legitimate_interest", ("name", "email", "phone", "company", "job_title")),
    ("crm", "third_party", "legitimate_interest", ("name", "company", "linkedin")),
    ("service_delivery", "contact", "contract", ("name", "email", "phone")),
    ("invoicing", "billing", "legal_obligation", ("name", "billing_address", "vat_id")),
    ("recruitment", "employment", "legitimate_interest", ("name", "email", "cv")),
)
_CONSENT_SHAPES = {
    "marketing_email": ("contact", ("email", "name")),
    "newsletter": ("contact", ("email",)),
    "analytics_cookies": ("analytics", ("ip_address", "browser", "pages_viewed")),
}


def build_history(n_events: int, n_subjects: int, seed: int = 7) -> list[dict]:
    """A random but realistic interleaved history of ``n_events`` over ``n_subjects``."""
    rng = random.Random(seed)
    subjects = [f"s-{i:06d}" for i in range(n_subjects)]
    granted: dict[str, set[str]] = {s: set() for s in subjects}
    records: dict[str, list[str]] = {s: [] for s in subjects}
    pending: dict[str, list[str]] = {s: [] for s in subjects}
    erasures: dict[str, list[str]] = {s: [] for s in subjects}
    rels: dict[str, int] = {s: 0 for s in subjects}
    events: list[dict] = []
    t = _T0
    seq = 0

    def ev(typ: str, sid: str, **extra: object) -> None:
        nonlocal seq
        seq += 1
        base = {"type": typ, "event_id": f"e-{seq:09d}", "subject_id": sid, "occurred_at": t, "source": "web"}
        base.update(extra)
        events.append(base)

    while len(events) < n_events:
        t += rng.randint(1, 120_000)  # a couple of minutes between events, over months
        sid = subjects[rng.randrange(n_subjects)]
        r = rng.random()
        if r < 0.45:
            if rng.random() < 0.55:
                purpose = rng.choice(_CONSENT_PURPOSES)
                category, names = _CONSENT_SHAPES[purpose]
                basis = "consent"
            else:
                purpose, category, basis, names = rng.choice(_OTHER)
            rid = f"r-{seq}"
            records[sid].append(rid)
            fields = {k: f"{k}-{rng.randrange(10**6)}" for k in names}
            ev("DataCollected", sid, record_id=rid, category=category, purpose=purpose, legal_basis=basis, fields=fields)
        elif r < 0.75:
            purpose = rng.choice(_CONSENT_PURPOSES)
            granted[sid].add(purpose)
            ev("ConsentGiven", sid, purpose=purpose)
        elif r < 0.79:
            purpose = rng.choice(_CONSENT_PURPOSES)
            granted[sid].discard(purpose)
            ev("ConsentWithdrawn", sid, purpose=purpose)
        elif r < 0.81:
            ev("Unsubscribed", sid, channel="email")
        elif r < 0.84:
            if rels[sid] and rng.random() < 0.5:
                ev("RelationshipEnded", sid, relationship_id=f"rel-{sid}-{rels[sid]}", kind="client")
            else:
                rels[sid] += 1
                ev("RelationshipStarted", sid, relationship_id=f"rel-{sid}-{rels[sid]}", kind="client")
        elif r < 0.89:
            kind = rng.choice(("AccessRequested", "ErasureRequested", "RectificationRequested", "RestrictionRequested"))
            req = f"q-{seq}"
            extra: dict[str, object] = {}
            if kind == "RectificationRequested":
                extra = {"record_id": rng.choice(records[sid]) if records[sid] else "r-none", "fields": {"name": "Fixed"}}
            elif kind == "RestrictionRequested":
                extra = {"purpose": rng.choice(_CONSENT_PURPOSES)}
            pending[sid].append(req)
            if kind == "ErasureRequested":
                erasures[sid].append(req)
            ev(kind, sid, request_id=req, **extra)
        elif r < 0.94:
            if pending[sid]:
                ev("IdentityVerified", sid, request_id=pending[sid].pop(0), method="email_link")
            else:
                ev("ConsentGiven", sid, purpose=rng.choice(_CONSENT_PURPOSES))
        elif r < 0.97:
            if erasures[sid]:
                req = erasures[sid][-1]
                ev("ErasureAcknowledged", sid, consumer=rng.choice(("crm-mirror", "mailer", "warehouse")), request_id=req, record_id="")
            else:
                ev("AccessRequested", sid, request_id=f"q-{seq}")
        elif r < 0.98:
            hold = f"h-{sid}"
            ev(rng.choice(("LegalHoldPlaced", "LegalHoldReleased")), sid, hold_id=hold, reason="litigation")
        else:
            events.append({"type": "Tick", "subject_id": sid, "occurred_at": t})
    return events


def _time(make: Callable[[], Callable[[], None]], repeat: int, collect: bool) -> float:
    """Best CPU time of ``repeat`` runs; ``make`` sets a run up untimed and returns its loop."""
    best = float("inf")
    for _ in range(repeat):
        loop = make()
        gc.collect()
        if not collect:
            gc.disable()
        try:
            start = time.process_time()
            loop()
            best = min(best, time.process_time() - start)
        finally:
            gc.enable()
    return best


def run(n_events: int, n_subjects: int, repeat: int, seed: int, policy: Policy) -> dict[str, float]:
    """Events per second of the fold and of the baseline over the same history.

    Both are timed twice: with the garbage collector off during the loop, as ``timeit`` does
    (the bench keeps every subject's state alive in one heap, which a worker whose states
    live in a table does not, so cyclic collections here cost more than they would there),
    and with it on, the pessimistic figure.
    """
    events = build_history(n_events, n_subjects, seed)
    sids = sorted({e["subject_id"] for e in events})

    def fold() -> Callable[[], None]:
        states = {s: new_state(s) for s in sids}

        def loop() -> None:
            for e in events:
                apply(states[e["subject_id"]], e, e["occurred_at"], policy)

        return loop

    def baseline() -> Callable[[], None]:
        states: dict[str, dict] = {s: {} for s in sids}

        def loop() -> None:
            for e in events:
                states[e["subject_id"]][e.get("event_id", "")] = e["occurred_at"]

        return loop

    n = float(len(events))
    return {
        "events": n,
        "fold_eps": n / _time(fold, repeat, collect=False),
        "baseline_eps": n / _time(baseline, repeat, collect=False),
        "fold_gc_eps": n / _time(fold, repeat, collect=True),
        "baseline_gc_eps": n / _time(baseline, repeat, collect=True),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m processors.fold_bench", description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=300_000)
    ap.add_argument("--subjects", type=int, default=30_000)  # ~10 events each, as in lifecycle bench
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args(argv)
    policy = load_policy()
    r = run(args.events, args.subjects, args.repeat, args.seed, policy)
    ratio = r["fold_eps"] / r["baseline_eps"]
    verdict = "ok" if r["fold_eps"] >= TARGET else "BELOW TARGET"
    print(f"history:  {int(r['events']):,} events over {args.subjects:,} subjects (seed {args.seed}), best of {args.repeat}, CPU time")
    print(f"fold:     {r['fold_eps']:,.0f} events/s  (target {TARGET:,}: {verdict})")
    print(f"baseline: {r['baseline_eps']:,.0f} events/s  (dict lookup + dict update per event)")
    print(f"ratio:    {ratio:.3f} of baseline ({1 / ratio:.1f}x its cost per event)")
    print(
        f"with the garbage collector on: fold {r['fold_gc_eps']:,.0f} events/s, "
        f"baseline {r['baseline_gc_eps']:,.0f} events/s, ratio {r['fold_gc_eps'] / r['baseline_gc_eps']:.3f}"
    )
    return 0 if r["fold_eps"] >= TARGET else 1

if __name__ == "__main__":
    sys.exit(main())
