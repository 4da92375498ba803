"""The worker's tables: a local store made durable by a compacted changelog topic per table.

Why our own and not faust's: faust's tables cost a context-variable lookup, a changelog send
through its producer buffer and a callback per write, on every event; the worker writes each
subject's state once per batch instead, to a plain RocksDB (``rocksdict``) or a dict, and the
changelog write is one ``produce`` on librdkafka. The contract is the one faust kept: the
changelog topic is the truth, the local store a cache of it that survives a clean restart.

Layout: local keys are ``<table tag><partition, 2 bytes><key>``, so one partition's entries
are one key range, dropped at once when the partition moves to another worker (it is rebuilt
from the changelog if it comes back, never trusted stale). Each (table, partition) remembers
the changelog offset it holds up to, written only on a clean stop: a worker that comes back
after one reads just what others wrote in between.
"""

from __future__ import annotations

import fcntl
import logging
import os
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

log = logging.getLogger("lifecycle.tables")

CHECKPOINT_MAX_AGE_MS = 30_000
"""A local copy older than this is rebuilt, not caught up: compaction removes a changelog's
tombstones ``delete.retention.ms`` after they were cleaned (a minute, ``streams.plumbing.topics``), and
a deletion missed that way would bring a destroyed data key or an erased state back. So a
worker restarted at once, or keeping its partitions through a rebalance, reads only what
changed; any other takes the whole (compacted) changelog."""

ROCKSDB_WRITE_BUFFER = 16 * 1024 * 1024
ROCKSDB_BLOCK_CACHE = 16 * 1024 * 1024
"""One database per worker with modest memtables and cache: a worker holding a million
subjects stays far under its memory budget, and the OS page cache holds the files anyway."""


class LocalStore:
    """Bytes to bytes, on RocksDB (``rocksdb://``) or in memory (``memory://``)."""

    def __init__(self, url: str, path: Path) -> None:
        self.path = path
        self._rocks: Any = None
        self._dict: dict[bytes, bytes] | None = None
        if url.startswith("memory"):
            self._dict = {}
            return
        from rocksdict import BlockBasedOptions, Cache, Options, Rdict, WriteOptions

        opts = Options(raw_mode=True)
        opts.create_if_missing(True)
        opts.set_write_buffer_size(ROCKSDB_WRITE_BUFFER)
        opts.set_max_write_buffer_number(2)
        table = BlockBasedOptions()
        table.set_block_cache(Cache(ROCKSDB_BLOCK_CACHE))
        opts.set_block_based_table_factory(table)
        path.mkdir(parents=True, exist_ok=True)
        self._rocks = Rdict(str(path), opts)
        # no write-ahead log: the changelog topics are this store's log. A worker that dies
        # leaves its store to be thrown away and rebuilt from them (streams.worker.loop), and a
        # clean stop flushes the memtables to disk before closing
        writes = WriteOptions()
        writes.disable_wal = True  # type: ignore[method-assign,assignment]  # rocksdict: a property set like an attribute
        self._rocks.set_write_options(writes)

    def get(self, key: bytes) -> bytes | None:
        if self._dict is not None:
            return self._dict.get(key)
        found: bytes | None = self._rocks.get(key)
        return found

    def put(self, key: bytes, value: bytes) -> None:
        if self._dict is not None:
            self._dict[key] = value
        else:
            self._rocks[key] = value

    def delete(self, key: bytes) -> None:
        if self._dict is not None:
            self._dict.pop(key, None)
        else:
            del self._rocks[key]

    def scan(self, prefix: bytes) -> Iterator[tuple[bytes, bytes]]:
        if self._dict is not None:
            yield from [(k, v) for k, v in self._dict.items() if k.startswith(prefix)]
            return
        for k, v in self._rocks.items(from_key=prefix):
            if not k.startswith(prefix):
                return
            yield k, v

    def drop(self, prefix: bytes) -> None:
        if self._dict is not None:
            for k in [k for k in self._dict if k.startswith(prefix)]:
                del self._dict[k]
            return
        self._rocks.delete_range(prefix, _after(prefix))

    def close(self) -> None:
        if self._rocks is not None:
            self._rocks.flush()
            self._rocks.close()
            self._rocks = None


def open_store(url: str, path: Path) -> LocalStore:
    """The local store at ``path``; one that cannot be opened (corrupt, files missing, written
    by another version) is removed and started empty, to be rebuilt from the changelogs.

    Why removed and not kept aside: the changelogs are the truth, and a copy kept aside may
    hold values an erasure has since deleted everywhere else.
    """
    try:
        return LocalStore(url, path)
    except Exception as exc:  # noqa: BLE001 - rocksdict raises plain Exception ("Corruption: ...", "IO error: ...")
        reason = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
        log.warning("the local store in %s cannot be opened (%s): removed, rebuilding it from the changelogs", path, reason)
        shutil.rmtree(path, ignore_errors=True)
        return LocalStore(url, path)


class StateDirBusy(RuntimeError):
    """Another worker holds this state directory; the message names the setting to change."""


class StateDir:
    """One worker per state directory, and whether its local store may be trusted.

    Two workers on one directory would write one RocksDB and throw each other's state away, so
    a worker holds an exclusive ``flock`` on ``.lock`` for as long as it runs: the kernel lets go
    when the process ends, however it ends, so no marker a crash leaves behind can lock anyone
    out. The local store is trusted only after a clean stop, which leaves ``clean-stop`` behind;
    a worker that died (or left on an error) left its store ahead of what Kafka acknowledged, so
    it is rebuilt from the changelogs instead.
    """

    def __init__(self, root: Path, setting: str = "LIFECYCLE_HOME") -> None:
        self.root = root
        self.store = root / "store"
        self.setting = setting
        self._fd: int | None = None

    def claim(self) -> bool:
        """Lock the directory; returns whether the store left in it may be used as it is."""
        self.root.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.root / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise StateDirBusy(
                f"another worker is running on the state in {self.root}: give each worker its own {self.setting}"
            ) from None
        self._fd = fd
        marker = self.root / "clean-stop"
        clean = marker.exists()
        marker.unlink(missing_ok=True)
        if not clean and self.store.exists():
            log.warning("the previous worker did not stop cleanly: rebuilding its state from the changelogs")
            shutil.rmtree(self.store, ignore_errors=True)
        return clean

    def release(self, clean: bool) -> None:
        """Let go of the directory; ``clean``: everything the store holds reached Kafka."""
        if clean:
            (self.root / "clean-stop").write_text(f"{os.getpid()}\n")
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def _after(prefix: bytes) -> bytes:
    """The smallest key greater than every key starting with ``prefix``."""
    trimmed = prefix.rstrip(b"\xff")
    return trimmed[:-1] + bytes([trimmed[-1] + 1]) if trimmed else prefix + b"\xff" * 8


def _part(partition: int) -> bytes:
    return partition.to_bytes(2, "big")


Produce = Callable[[str, bytes, bytes | None, int], None]
"""(topic, key, value or None for a tombstone, partition): queue a changelog write."""


class Table:
    """One table: ``get``/``put``/``delete`` by (partition, key), every write also queued to
    the changelog partition of the same number (the subject's partition)."""

    def __init__(self, store: LocalStore, tag: bytes, changelog: str, produce: Produce) -> None:
        self.store = store
        self.tag = tag
        self.changelog = changelog
        self._produce = produce

    def _k(self, partition: int, key: bytes) -> bytes:
        return self.tag + _part(partition) + key

    def get(self, partition: int, key: bytes) -> bytes | None:
        return self.store.get(self._k(partition, key))

    def put(self, partition: int, key: bytes, value: bytes) -> None:
        self.store.put(self._k(partition, key), value)
        self._produce(self.changelog, key, value, partition)

    def delete(self, partition: int, key: bytes) -> None:
        self.store.delete(self._k(partition, key))
        self._produce(self.changelog, key, None, partition)

    def items(self, partition: int) -> Iterator[tuple[bytes, bytes]]:
        skip = len(self.tag) + 2
        for k, v in self.store.scan(self.tag + _part(partition)):
            yield k[skip:], v

    def at(self, partition: int) -> PartitionView:
        return PartitionView(self, partition)

    # -- recovery -------------------------------------------------------------------------

    def _checkpoint_key(self, partition: int) -> bytes:
        return b"\x00checkpoint" + self.tag + _part(partition)

    def checkpoint(self, partition: int) -> int | None:
        """The changelog offset the local copy holds up to (None: rebuild it)."""
        raw = self.store.get(self._checkpoint_key(partition))
        if raw is None or len(raw) != 16:
            return None
        offset, at = int.from_bytes(raw[:8], "big", signed=True), int.from_bytes(raw[8:], "big")
        if time.time() * 1000 - at > CHECKPOINT_MAX_AGE_MS:
            return None
        return offset

    def save_checkpoint(self, partition: int, offset: int) -> None:
        stamp = offset.to_bytes(8, "big", signed=True) + int(time.time() * 1000).to_bytes(8, "big")
        self.store.put(self._checkpoint_key(partition), stamp)

    def forget(self, partition: int) -> None:
        """Drop the local copy of a partition that moved away (and its checkpoint)."""
        self.store.drop(self.tag + _part(partition))
        self.store.delete(self._checkpoint_key(partition))

    def apply(self, partition: int, key: bytes | None, value: bytes | None) -> None:
        """One changelog entry read back during recovery."""
        if key is None:
            return
        if value is None:
            self.store.delete(self._k(partition, key))
        else:
            self.store.put(self._k(partition, key), value)


class PartitionView:
    """A table seen as the mapping of one partition (what ``Keystore`` expects)."""

    def __init__(self, table: Table, partition: int) -> None:
        self.table = table
        self.partition = partition

    def get(self, key: bytes, default: bytes | None = None) -> bytes | None:
        found = self.table.get(self.partition, key)
        return default if found is None else found

    def __getitem__(self, key: bytes) -> bytes:
        found = self.table.get(self.partition, key)
        if found is None:
            raise KeyError(key)
        return found

    def __setitem__(self, key: bytes, value: bytes) -> None:
        self.table.put(self.partition, key, value)

    def __delitem__(self, key: bytes) -> None:
        self.table.delete(self.partition, key)

    def __contains__(self, key: object) -> bool:
        return isinstance(key, bytes) and self.table.get(self.partition, key) is not None
