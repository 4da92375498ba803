"""Micro-benchmark of the guard's screen on one core.

Why: the guard screens every upstream event before it is sealed and appended, so its cost per
event is part of the pipeline's, and reading free text against the policy's lexicon is the one
scan whose cost grows with what people write. The figure is printed next to a baseline
measured in the same run (``orjson.dumps`` of the same events: one pass in C over every key
and value, about the least a screen that looks at every string could cost), and next to the
same screen with no field read as free text, so that what the lexicon adds shows as a ratio.
The lexicon's worst case is measured too: the longest text the contract allows, made of the
starts of phrases, beside ordinary text of the same length (the ratio shows no text can be
made to cost much more than any other).

    python -m streams.bench.screen [--events N] [--subjects N] [--repeat N] [--seed N]

The events are ``lifecycle bench``'s history as upstream systems publish it, each validated
by the contract as the worker does before it screens (one collection in a hundred carries a
card number and is refused). Its free text is short (a ``message`` or ``cv`` of one word and a
number), as most form fields are; a message of a few sentences costs some 10 µs more.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Callable
from typing import Any

import orjson

from processors.guard import GuardPolicy, screen
from processors.policy import Policy
from schemas.contract import MAX_TEXT, ContractError, validate
from streams.bench.fold import best_cpu_time
from streams.bench.history import history
from streams.settings import load_policy


def validated_history(n_events: int, n_subjects: int, seed: int) -> list[dict[str, Any]]:
    """The bench history's upstream events as the guard receives them: validated."""
    events = []
    for raw in history(n_events, n_subjects, seed):
        try:
            events.append(validate(raw))
        except ContractError:
            continue
    return events


def without_free_text(policy: Policy) -> Policy:
    """The same policy with no field read as free text: the screen beside it, less the lexicon."""
    return dataclasses.replace(policy, free_text_fields=frozenset())


def run(n_events: int, n_subjects: int, repeat: int, seed: int, policy: Policy) -> dict[str, float]:
    """Events per second of ``screen``, of ``screen`` with no free-text fields, and of the
    baseline, over the same events; best CPU time of ``repeat`` runs each (the garbage
    collector off: the screen keeps nothing)."""
    events = validated_history(n_events, n_subjects, seed)
    no_free_text = without_free_text(policy)

    def screening(p: GuardPolicy) -> Callable[[], Callable[[], None]]:
        def make() -> Callable[[], None]:
            def loop() -> None:
                for e in events:
                    screen(e, p)

            return loop

        return make

    def baseline() -> Callable[[], None]:
        def loop() -> None:
            for e in events:
                orjson.dumps(e)

        return loop

    # taken in turns, so that a burst of load on a shared machine falls on all three alike
    loops = {"screen_eps": screening(policy), "screen_no_free_text_eps": screening(no_free_text), "baseline_eps": baseline}
    best = dict.fromkeys(loops, float("inf"))
    for _ in range(repeat):
        for name, make in loops.items():
            best[name] = min(best[name], best_cpu_time(make, 1, collect=False))
    n = float(len(events))
    return {"events": n, **{name: n / seconds for name, seconds in best.items()}, **worst_text(policy, repeat)}


def _as_long_as_allowed(sentence: str) -> str:
    return (sentence * (MAX_TEXT // len(sentence) + 1))[:MAX_TEXT]


WORST_TEXT = _as_long_as_allowed("member of the my ")
"""Every word the start of a term, every "member of the" a wildcard to try: the most attempts
a text can make the lexicon start."""
ORDINARY_TEXT = _as_long_as_allowed("The build fails again after the upgrade, can you look at it? ")


def worst_text(policy: Policy, repeat: int) -> dict[str, float]:
    """The lexicon over the worst text (ms), and as a ratio to ordinary text as long: anyone can
    write into a ``message``, so what a text made to be slow costs must stay what any text costs."""
    lexicon = policy.free_text_lexicon("message")
    if lexicon is None:
        return {"worst_text_ms": 0.0, "worst_text_ratio": 0.0}

    def reading(text: str) -> Callable[[], Callable[[], None]]:
        def make() -> Callable[[], None]:
            def loop() -> None:
                lexicon.category_in(text)

            return loop

        return make

    worst = ordinary = float("inf")
    for _ in range(max(repeat, 3)):  # a few milliseconds each: more runs cost nothing
        worst = min(worst, best_cpu_time(reading(WORST_TEXT), 1, collect=False))
        ordinary = min(ordinary, best_cpu_time(reading(ORDINARY_TEXT), 1, collect=False))
    return {"worst_text_ms": 1000 * worst, "worst_text_ratio": worst / ordinary}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m streams.bench.screen", description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=10_000)
    ap.add_argument("--subjects", type=int, default=1_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--seed", type=int, default=17)
    args = ap.parse_args(argv)
    r = run(args.events, args.subjects, args.repeat, args.seed, load_policy())
    print(f"events:   {int(r['events']):,} validated upstream events (seed {args.seed}), best of {args.repeat}, CPU time")
    print(f"screen:   {r['screen_eps']:,.0f} events/s")
    print(
        f"without free text: {r['screen_no_free_text_eps']:,.0f} events/s "
        f"(the lexicon costs {r['screen_no_free_text_eps'] / r['screen_eps']:.2f}x)"
    )
    print(f"baseline: {r['baseline_eps']:,.0f} events/s  (orjson.dumps of each event)")
    print(f"ratio:    {r['screen_eps'] / r['baseline_eps']:.3f} of baseline")
    print(
        f"worst text: {r['worst_text_ms']:.1f} ms for {MAX_TEXT:,} characters, {r['worst_text_ratio']:.1f}x ordinary text as long"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
