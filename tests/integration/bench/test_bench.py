"""``lifecycle bench --quick --json`` runs on the real broker and reports every figure with a
sane value. Not a timing assertion: the figures themselves are whatever the machine gives;
what must hold is that each one was measured (positive), ratios are ratios, and the
pipeline's output equals the pure fold's."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import orjson
import pytest

from streams.settings import Settings

pytestmark = pytest.mark.integration


def test_quick_bench_reports_every_figure_and_a_correct_pipeline(settings: Settings) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LIFECYCLE_")}
    env.update(settings.to_env())
    done = subprocess.run(
        [sys.executable, "-m", "streams.cli", "bench", "--quick", "--json"], env=env, capture_output=True, timeout=600
    )
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    r = orjson.loads(done.stdout)
    for name in (
        "limit_produce_eps",
        "limit_consume_eps",
        "pipeline_1_eps",
        "pipeline_2_eps",
        "pipeline_1_eos_eps",
        "replay_eps",
        "fold_eps",
        "screen_eps",
        "screen_no_free_text_eps",
        "screen_baseline_eps",
        "screen_worst_text_ms",
        "memory_peak_rss_mb",
    ):
        assert r[name] > 0, name
    for name in ("pipeline_1_cpu", "pipeline_2_cpu", "pipeline_1_eos_cpu"):  # where the wall is: busy cores, workers and machine
        assert 0 < r[name]["workers_cores"] <= r[name]["machine_cores"] + 0.5, r[name]
    for name in ("ratio_pipeline_limit", "ratio_replay_limit", "ratio_eos_alo"):
        assert 0 < r[name] < 5, name
    assert all(v > 0 for v in r["codec"].values())
    lat = r["erasure_latency_ms"]
    assert lat["count"] > 0 and 0 < lat["p50"] <= lat["p99"] <= lat["max"]
    assert r["correct"] is True and r["replay_mismatches"] == 0
    assert "bench: pipeline with 2 worker(s)" in done.stderr.decode()  # progress goes to stderr

    # its topics (some 200 partitions a run) do not pile up on the user's broker
    from kafka.admin import KafkaAdminClient

    admin = KafkaAdminClient(bootstrap_servers=settings.bootstrap)
    try:
        deadline = time.monotonic() + 15
        mine = (f"{settings.topic_prefix}bench-", "bench-")  # its topics, its changelogs
        while (left := [t for t in admin.list_topics() if t.startswith(mine)]) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert not left, left
    finally:
        admin.close()
