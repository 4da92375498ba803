"""``lifecycle keys rotate``: re-wrap every data key under the current master key.

    LIFECYCLE_MASTER_KEY_FILE=ring lifecycle keys rotate   # ring: the new key first, then the old

The log is not touched: only the wrapping in ``lifecycle.keys`` changes, so everything the
old master key could open stays readable, and a destroyed key (a tombstone) stays destroyed,
because only keys that still have a value are rewritten. Run it with the workers stopped:
a worker destroys keys by writing tombstones to the same topic, and a re-wrapped copy written
after such a tombstone would bring the key back. The command checks that no worker of this
``LIFECYCLE_APP_ID`` is running and refuses otherwise. After it, drop the old key from the ring.
"""

from __future__ import annotations

import sys
from typing import IO

from processors.shredding import KeyringError
from schemas.codec import decode, encode
from streams.plumbing.admin import opened
from streams.plumbing.security import client_kwargs
from streams.plumbing.topics import partition_for
from streams.settings import Settings


def workers_running(settings: Settings) -> int:
    """Members of the worker's consumer group right now."""
    with opened(settings, "lifecycle-rotate") as admin:
        described = admin.describe_groups([settings.app_id])
    return len(described.get(settings.app_id, {}).get("members") or [])  # {group_id: {...}} since 3.0.12


def rotate(settings: Settings, dev: bool = False) -> tuple[int, int]:
    """(re-wrapped, already current). Raises KeyringError when a key does not open."""
    from kafka import KafkaProducer

    from streams.plumbing.scan import live_keys

    ring = settings.keyring(dev=dev)
    keys = live_keys(settings)
    producer = KafkaProducer(
        bootstrap_servers=settings.bootstrap.split(","), client_id="lifecycle-rotate", acks="all", **client_kwargs(settings)
    )
    rewrapped = current = 0
    futures = []
    try:
        for key_id, raw in sorted(keys.items()):
            wrapped = decode(raw)
            assert wrapped is not None
            if wrapped["master_key_id"] == ring.current:
                current += 1
                continue
            data_key = ring.unwrap(key_id, wrapped["wrapped"], wrapped["master_key_id"])
            again, master = ring.wrap(key_id, data_key)
            value = encode({**wrapped, "wrapped": again, "master_key_id": master})
            # the subject's partition, where the worker that owns the subject looks it up
            partition = partition_for(wrapped["subject_id"].encode("utf-8"), len(producer.partitions_for(settings.topic("keys"))))
            futures.append(producer.send(settings.topic("keys"), key=key_id.encode("utf-8"), value=value, partition=partition))
            rewrapped += 1
        producer.flush()
        for fut in futures:
            fut.get(timeout=30)
    finally:
        producer.close()
    return rewrapped, current


def main_rotate(settings: Settings, dev: bool = False, out: IO[str] = sys.stdout, err: IO[str] = sys.stderr) -> int:
    from kafka.errors import KafkaError

    try:
        running = workers_running(settings)
        if running:
            print(
                f"error: {running} worker(s) of {settings.app_id} are running: stop them first (see `lifecycle keys rotate --help`)",
                file=err,
            )
            return 2
        rewrapped, current = rotate(settings, dev=dev)
    except KeyringError as exc:
        print(f"error: {exc}", file=err)
        return 2
    except KafkaError as exc:
        print(f"error: Kafka at {settings.bootstrap}: {type(exc).__name__}", file=err)
        return 2
    print(f"re-wrapped {rewrapped} data keys under the current master key ({current} were already)", file=out)
    return 0
