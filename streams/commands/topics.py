"""``lifecycle topics create | check``: the project's topics on any cluster, and whether the
live ones keep the promises.

``create`` makes whatever is missing (the changelog of the worker's state included), with the
replication the settings give; ``check`` prints one line per deviation (topic, setting, found,
needed) and exits 1 if there is any, 0 when every topic keeps its promise. A platform team runs
``check`` after changing a topic by hand; the worker runs it at every start and refuses to run
on a deviation.
"""

from __future__ import annotations

import sys
from typing import IO

from streams.plumbing.topics import ReplicationError, check, create_missing, wanted_topics
from streams.settings import Settings


def main_topics(action: str, settings: Settings, out: IO[str] = sys.stdout, err: IO[str] = sys.stderr) -> int:
    from confluent_kafka import KafkaException
    from kafka.errors import KafkaError

    try:
        if action == "create":
            created = create_missing(settings, wanted_topics(settings))
            for name in created:
                print(f"created {name}", file=out)
            print(f"{len(created)} topic(s) created, {len(wanted_topics(settings)) - len(created)} there already", file=out)
            return 0
        deviations = check(settings)
    except ReplicationError as exc:
        print(f"error: {exc}", file=err)
        return 2
    except (KafkaException, KafkaError, OSError, TimeoutError) as exc:  # the broker away or refusing: one line
        print(f"error: cannot reach the cluster at {settings.bootstrap} (LIFECYCLE_BOOTSTRAP): {type(exc).__name__}", file=err)
        return 2
    for d in deviations:
        print(d.line(), file=out)
    if deviations:
        print(f"{len(deviations)} deviation(s): the topics above would break a promise", file=err)
        return 1
    print("every topic keeps its promise", file=out)
    return 0


__all__ = ["main_topics"]
