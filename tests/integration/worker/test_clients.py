"""The worker's librdkafka clients on the real broker, where confluent-kafka's own rules bite.

Restores run inside the consumer's rebalance callback. A call of that consumer that takes
callbacks, made from one of its callbacks, ends the per-thread state confluent-kafka keeps
for the client, and the next callback of the same ``consume`` aborts the whole process in C
(no exception, no clean stop, exit -6): the rolling restart of the cluster's fault suite found
it, when a restore asked a changelog's end offset of a broker that no longer led it.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from streams.settings import Settings

pytestmark = pytest.mark.integration

ASKS_INSIDE_THE_REBALANCE = """
import os, time
import confluent_kafka
from streams.settings import Settings
from streams.worker.clients import KafkaClients, OffsetUnavailable

settings = Settings.from_env(os.environ)
plain = confluent_kafka.Consumer

def consumer(conf):
    # the group's consumer also reports statistics, ten times a second: callbacks that queue
    # up while the rebalance callback runs, and that the same consume serves once it returned
    if conf.get("group.id") == settings.app_id:
        conf = {**conf, "statistics.interval.ms": 100, "stats_cb": lambda stats: None}
    return plain(conf)

confluent_kafka.Consumer = consumer
clients = KafkaClients(settings, on_delivery=lambda err, msg: None)
asked = []

def on_assign(consumer, partitions):
    # a partition no broker leads: its end offset is asked again and again, then given up
    try:
        clients.end_offset(settings.topic("ingest"), 99, patience=3.0)
    except OffsetUnavailable:
        asked.append("gave up")

clients.consumer.subscribe([settings.topic("ingest")], on_assign=on_assign)
deadline = time.monotonic() + 60
while not asked and time.monotonic() < deadline:
    clients.consumer.consume(100, 1.0)
clients.consumer.consume(100, 1.0)
clients.consumer.close()
print(*asked)
"""


def test_an_end_offset_asked_again_inside_the_rebalance_callback_does_not_abort_the_worker(settings: Settings) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LIFECYCLE_")} | settings.to_env()
    done = subprocess.run([sys.executable, "-c", ASKS_INSIDE_THE_REBALANCE], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, f"exit {done.returncode}: {done.stderr.strip().splitlines()[-1:]}"
    assert done.stdout.strip() == "gave up"
