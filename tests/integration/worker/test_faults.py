"""Crashes on the real broker: a worker SIGKILLed in the middle of folding, again and again,
restarted each time, must end exactly where the pure fold of the input ends.

Each kill lands while a batch is in flight, and the test proves it rather than hoping: the
worker is killed once the group's committed offsets have started to move and before they reach
the end, the lag is above zero after the kill, and at least once some kill falls after a
batch's outputs reached the broker but before its offsets were committed (outputs caused by
events the group has not committed yet are on the downstream topics or the log), the case
at-least-once exists for; exactly once, no kill may leave such outputs visible. The crash and
the checks are ``support.kills``; the cluster's exactly-once test runs the same.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from support.kills import kill_mid_batch

from streams.settings import Settings

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("guarantee", ["at_least_once", "exactly_once"])
def test_a_worker_killed_mid_batch_ends_exactly_where_the_pure_fold_ends(
    settings: Settings, tmp_path: Path, guarantee: str
) -> None:
    """At least once, some kill must fall between a batch's outputs and its commit (what the
    mode exists for), and the replay counts the copies it left. Exactly once, no kill may: a
    batch's outputs are visible only with its offsets, nothing is written twice."""
    kill_mid_batch(dataclasses.replace(settings, guarantee=guarantee), tmp_path)
