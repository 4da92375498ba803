"""The screen's bench measures what its row says. Not a timing assertion: the figures are
whatever the machine gives; what must hold is that the three loops screen differently, so the
ratios between them mean something."""

from __future__ import annotations

from processors.guard import Refusal, screen
from streams.bench.screen import ORDINARY_TEXT, WORST_TEXT, run, validated_history, without_free_text
from streams.settings import load_policy

POLICY = load_policy()


def test_the_bench_screens_events_that_hold_free_text() -> None:
    events = validated_history(300, 30, 17)
    assert events
    assert any(POLICY.free_text_lexicon(name) for e in events for name in e.get("fields", {}))


def test_the_screen_without_free_text_reads_no_field_as_free_text() -> None:
    no_free_text = without_free_text(POLICY)
    event = {"type": "DataCollected", "subject_id": "s", "purpose": "inquiry", "fields": {"message": "diagnosed with diabetes"}}
    assert screen(event, POLICY) == Refusal("special_category_text", "fields.message")
    assert screen(event, no_free_text) is None


def test_the_worst_and_the_ordinary_text_are_as_long_and_hold_no_term() -> None:
    lexicon = POLICY.free_text_lexicon("message")
    assert lexicon is not None
    assert len(WORST_TEXT) == len(ORDINARY_TEXT)
    assert lexicon.category_in(WORST_TEXT) is None and lexicon.category_in(ORDINARY_TEXT) is None


def test_every_figure_is_measured() -> None:
    r = run(200, 20, 1, 17, POLICY)
    assert r["events"] > 0
    assert all(
        r[name] > 0 for name in ("screen_eps", "screen_no_free_text_eps", "baseline_eps", "worst_text_ms", "worst_text_ratio")
    )
