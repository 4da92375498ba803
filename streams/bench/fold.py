"""Micro-benchmark of the lifecycle fold on one core.

Why: the worker folds every event of every subject, live and in the auditor's replay, so the
fold's cost per event bounds the pipeline's throughput. The figure is printed next to a
baseline measured in the same run (a dict lookup + dict update per event, the least any
stateful fold could do), so the ratio stays meaningful across machines.

    python -m streams.bench.fold [--events N] [--subjects N] [--repeat N] [--seed N]

The default history gives each subject about ten events, the mix ``lifecycle bench`` feeds the
pipeline. The fold's cost per event grows with a subject's history (an erasure tombstones every
record, a relationship re-dates every record), so ``--subjects 5000`` (sixty events and some
twenty-five records each) is the heavy-tail figure: about 10 % lower.
"""

from __future__ import annotations

import argparse
import gc
import sys
import time
from collections.abc import Callable

from processors.fold import apply, new_state
from processors.policy import Policy
from streams.bench.history import build_history
from streams.settings import load_policy

TARGET = 200_000  # events/s the fold must sustain


def best_cpu_time(make: Callable[[], Callable[[], None]], repeat: int, collect: bool) -> float:
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
    events = build_history(n_events, n_subjects, seed, policy)
    sids = sorted({e["subject_id"] for e in events})

    def fold() -> Callable[[], None]:
        states = {s: new_state(s) for s in sids}

        def loop() -> None:
            for e in events:
                apply(states[e["subject_id"]], e, e["occurred_at"], policy)

        return loop

    def baseline() -> Callable[[], None]:
        states: dict[str, dict[str, int]] = {s: {} for s in sids}

        def loop() -> None:
            for e in events:
                states[e["subject_id"]][e.get("event_id", "")] = e["occurred_at"]

        return loop

    n = float(len(events))
    return {
        "events": n,
        "fold_eps": n / best_cpu_time(fold, repeat, collect=False),
        "baseline_eps": n / best_cpu_time(baseline, repeat, collect=False),
        "fold_gc_eps": n / best_cpu_time(fold, repeat, collect=True),
        "baseline_gc_eps": n / best_cpu_time(baseline, repeat, collect=True),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m streams.bench.fold", description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=300_000)
    ap.add_argument("--subjects", type=int, default=30_000)  # ~10 events each, as in lifecycle bench
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args(argv)
    policy = load_policy()
    r = run(args.events, args.subjects, args.repeat, args.seed, policy)
    ratio = r["fold_eps"] / r["baseline_eps"]
    verdict = "ok" if r["fold_eps"] >= TARGET else "BELOW TARGET"
    print(
        f"history:  {int(r['events']):,} events over {args.subjects:,} subjects (seed {args.seed}), best of {args.repeat}, CPU time"
    )
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
