"""Crypto-shredding: personal fields encrypted under data keys that an erasure can destroy.

Why: ``lifecycle.events`` is kept forever and cannot be edited, so erasing a subject from it
means making its ciphertext unreadable. Every upstream event that carries personal fields
(``DataCollected``, ``RectificationRequested``) gets a data key of its own (AES-256-GCM), named
``<subject_id>/<event_id>``. A key per event rather than per subject and class, because then
destroying exactly the data that went (one expired record, a refused collection, a rectified
value) never takes live data with it, and a key is never reused across an erasure: an event
that the guard encrypted a moment before the erasure that destroys its key can only be one
that the erasure covers.

Data keys are stored wrapped (AES-GCM under a master key, the key id as associated data so a
wrapped key cannot be passed off as another) in ``lifecycle.keys``, compacted; destroying one
is a tombstone there. Master keys are named by a short id derived from their bytes, which each
wrapped key records, so rotating the master key re-wraps keys without touching the log.

Each field is sealed with its field name and key id as associated data: a ciphertext moved to
another field or another event does not decrypt. Nothing here logs, and no error message
carries a key or a value.
"""

from __future__ import annotations

import base64
import hashlib
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import orjson
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from processors import envelope
from schemas.contract import STAMPED

KEY_BYTES = 32
NONCE_BYTES = 12


class KeyringError(Exception):
    """A master key cannot be read or a wrapped key cannot be opened; the message says which, never the key."""


def master_key_id(key: bytes) -> str:
    """A short public name for a master key: the first 8 bytes of its SHA-256, hex."""
    return hashlib.sha256(b"lifecycle-master-key-id\0" + key).hexdigest()[:16]


def parse_master_key(text: str, where: str) -> bytes:
    """A master key is 32 random bytes written as base64 (standard or URL-safe, padding optional)."""
    raw = text.strip()
    try:
        key = base64.urlsafe_b64decode(raw.replace("+", "-").replace("/", "_") + "=" * (-len(raw) % 4))
    except ValueError:
        raise KeyringError(f"{where}: not base64") from None
    if len(key) != KEY_BYTES:
        raise KeyringError(f"{where}: a master key is {KEY_BYTES} bytes of base64, this is {len(key)} bytes")
    return key


def new_master_key_text() -> str:
    return base64.urlsafe_b64encode(os.urandom(KEY_BYTES)).decode("ascii")


@dataclass
class Keyring:
    """Master keys by id; ``current`` wraps new data keys, the others only unwrap old ones."""

    keys: dict[str, bytes]
    current: str
    # one cipher object per master key: building it costs twice the encryption of a data key
    _ciphers: dict[str, AESGCM] = field(default_factory=dict, repr=False, compare=False)

    def _cipher(self, master_id: str) -> AESGCM:
        found = self._ciphers.get(master_id)
        if found is None:
            found = self._ciphers[master_id] = AESGCM(self.keys[master_id])
        return found

    @classmethod
    def of(cls, *keys: bytes) -> Keyring:
        """The first key is the current one; later ones are kept to unwrap keys they wrapped."""
        if not keys:
            raise KeyringError("a keyring needs at least one master key")
        ids = [master_key_id(k) for k in keys]
        return cls(dict(zip(ids, keys, strict=True)), ids[0])

    @classmethod
    def from_lines(cls, text: str, where: str) -> Keyring:
        """One base64 key a line (``#`` comments allowed); the first is current."""
        keys = [
            parse_master_key(line, f"{where} line {n}")
            for n, line in enumerate(text.splitlines(), start=1)
            if line.strip() and not line.lstrip().startswith("#")
        ]
        if not keys:
            raise KeyringError(f"{where}: no master key in it")
        return cls.of(*keys)

    def wrap(self, key_id: str, data_key: bytes) -> tuple[bytes, str]:
        nonce = os.urandom(NONCE_BYTES)
        sealed = self._cipher(self.current).encrypt(nonce, data_key, key_id.encode("utf-8"))
        return nonce + sealed, self.current

    def unwrap(self, key_id: str, wrapped: bytes, master_id: str) -> bytes:
        if master_id not in self.keys:
            raise KeyringError(f"data key {key_id!r} is wrapped by master key {master_id}, which this keyring lacks")
        try:
            return self._cipher(master_id).decrypt(wrapped[:NONCE_BYTES], wrapped[NONCE_BYTES:], key_id.encode("utf-8"))
        except InvalidTag:
            raise KeyringError(f"data key {key_id!r} does not open with master key {master_id}") from None


def key_id_for(subject_id: str, event_id: str) -> str:
    return f"{subject_id}/{event_id}"


def new_data_key() -> bytes:
    # what AESGCM.generate_key(256) returns, without its argument checks (one per event sealed)
    return os.urandom(KEY_BYTES)


_DIGEST_BYTES = 8


def content_digest(event: Mapping[str, object], data_key: bytes | None) -> str:
    """A short digest of an event's content as received (its plaintext, before sealing), which
    tells a redelivery from another event reusing its id.

    Keyed by the event's own data key when it has one, so the digest, which outlives the data in
    the log and the state, says nothing about erased values once that key is destroyed (an
    unkeyed hash of an email address could be matched against guesses). Events without personal
    fields are digested unkeyed. The stamps the worker adds (``schemas.contract.STAMPED``) are
    not part of the content: a redelivery arrives later.
    """
    body = {k: v for k, v in event.items() if k not in STAMPED}
    raw = orjson.dumps(body, option=orjson.OPT_SORT_KEYS)
    if data_key is None:
        return hashlib.blake2b(raw, digest_size=_DIGEST_BYTES, person=b"lc-digest").hexdigest()
    mac_key = hashlib.blake2b(b"lifecycle digest key", key=data_key, digest_size=32).digest()
    return hashlib.blake2b(raw, digest_size=_DIGEST_BYTES, key=mac_key, person=b"lc-digest").hexdigest()


def _aad(key_id: str, name: str) -> bytes:
    return key_id.encode("utf-8") + b"\0" + name.encode("utf-8")


def seal_fields(fields: Mapping[str, str], key_id: str, data_key: bytes) -> dict[str, str]:
    """Each value becomes an envelope; names stay readable (they say what, not whose)."""
    aead = AESGCM(data_key)
    out = {}
    for name, value in fields.items():
        nonce = os.urandom(NONCE_BYTES)
        out[name] = envelope.build(key_id, nonce + aead.encrypt(nonce, value.encode("utf-8"), _aad(key_id, name)))
    return out


def _seal_one(name: str, value: str, key_id: str, data_key: bytes) -> str:
    nonce = os.urandom(NONCE_BYTES)
    return envelope.build(key_id, nonce + AESGCM(data_key).encrypt(nonce, value.encode("utf-8"), _aad(key_id, name)))


def _digest_key(like: Mapping[str, str]) -> str | None:
    """The key a re-published event's digest is keyed by: its first field's, by name."""
    return envelope.key_of(like[min(like)]) if like else None


KeyLookup = Callable[[str], "bytes | None"]
"""key_id -> the unwrapped data key, or None when it was destroyed (or never existed)."""


def open_field(name: str, value: str, lookup: KeyLookup) -> str:
    """The plaintext of one field; ``[erased]`` when its key is gone. Plaintext passes through."""
    found = envelope.parse(value)
    if found is None:
        return value
    key_id, sealed = found
    data_key = lookup(key_id)
    if data_key is None:
        return envelope.ERASED
    try:
        return AESGCM(data_key).decrypt(sealed[:NONCE_BYTES], sealed[NONCE_BYTES:], _aad(key_id, name)).decode("utf-8")
    except (InvalidTag, ValueError, UnicodeDecodeError):
        return envelope.ERASED  # tampered or moved: as unreadable as an erased one


def open_fields(fields: Mapping[str, str], lookup: KeyLookup) -> dict[str, str]:
    return {name: open_field(name, value, lookup) for name, value in fields.items()}


@dataclass
class KeyCache:
    """Unwrapped data keys by id, bounded; a destroyed key must be ``forget``-ed at once."""

    limit: int = 100_000
    _keys: dict[str, bytes] = field(default_factory=dict)

    def get(self, key_id: str) -> bytes | None:
        return self._keys.get(key_id)

    def put(self, key_id: str, data_key: bytes) -> None:
        if len(self._keys) >= self.limit:
            self._keys.pop(next(iter(self._keys)))  # oldest first: dicts keep insertion order
        self._keys[key_id] = data_key

    def forget(self, key_id: str) -> None:
        self._keys.pop(key_id, None)


class KeyTable(Protocol):
    """Where a ``Keystore`` keeps wrapped keys: a dict in tests, the worker's table of one
    partition (``streams.worker.tables.PartitionView``), whose writes go to ``lifecycle.keys``."""

    def get(self, key: bytes, /) -> bytes | None: ...

    def __setitem__(self, key: bytes, value: bytes) -> None: ...

    def __delitem__(self, key: bytes) -> None: ...

    def __contains__(self, key: object) -> bool: ...


SEALED_TYPES = frozenset({"DataCollected", "RectificationRequested"})
"""The upstream events that carry personal fields, so get a data key of their own."""


class Keystore:
    """Data keys over any mutable mapping ``key_id bytes -> WrappedKey bytes`` (the worker's
    table, whose changelog is ``lifecycle.keys``; a dict in tests), with unwrapped keys cached.

    ``encode``/``decode`` are the Avro codec's, passed in so this module needs no Kafka code.
    """

    def __init__(
        self,
        table: KeyTable,
        ring: Keyring,
        encode: Callable[[dict[str, Any]], bytes | None],
        decode: Callable[[bytes], dict[str, Any] | None],
        now_ms: Callable[[], int],
        cache: KeyCache | None = None,
    ) -> None:
        self.table = table
        self.ring = ring
        self._encode = encode
        self._decode = decode
        self._now = now_ms
        self.cache = cache or KeyCache()

    def lookup(self, key_id: str) -> bytes | None:
        found = self.cache.get(key_id)
        if found is not None:
            return found
        raw = self.table.get(key_id.encode("utf-8"))
        if not raw:
            return None
        wrapped = self._decode(raw)
        assert wrapped is not None
        data_key = self.ring.unwrap(key_id, wrapped["wrapped"], wrapped["master_key_id"])
        self.cache.put(key_id, data_key)
        return data_key

    def digest(self, event: dict[str, Any], like: Mapping[str, str] | None = None) -> str | None:
        """``content_digest`` of a plaintext event, keyed by its data key if it has personal
        fields (``like``: by the key of the record it re-publishes, see ``seal``); None when
        that key is gone (destroyed: the first copy can no longer be told)."""
        if event["type"] not in SEALED_TYPES or not event.get("fields"):
            return content_digest(event, None)
        key_id = _digest_key(like) if like is not None else key_id_for(event["subject_id"], event["event_id"])
        data_key = None if key_id is None else self.lookup(key_id)
        return None if data_key is None else content_digest(event, data_key)

    def held_as(self, event: Mapping[str, Any], held: Mapping[str, str]) -> bool:
        """Whether the plaintext ``fields`` of ``event`` are exactly those the sealed ``held``
        ones open to (a record re-published unchanged). False when any of them cannot be
        opened: an erased value is never "the same"."""
        fields = event.get("fields") or {}
        if fields.keys() != held.keys() or not all(envelope.key_of(v) for v in held.values()):
            return False
        for name, sealed in held.items():
            plain = open_field(name, sealed, self.lookup)
            if plain == envelope.ERASED or plain != fields[name]:
                return False
        return True

    def seal(self, event: dict[str, Any], key_class: str = "standard", like: Mapping[str, str] | None = None) -> dict[str, Any]:
        """The event with its personal fields sealed under its own data key (created on first
        need; an event seen again reuses its key, so a redelivery decrypts the same), and its
        ``digest`` stamped.

        ``like``: the sealed fields of the record the event re-publishes unchanged (``held_as``);
        each value is then sealed under the key its namesake there is sealed under, so a nightly
        sync mints no key, and its copy in the log goes unreadable with the record's."""
        if event["type"] not in SEALED_TYPES or not event.get("fields"):
            return {**event, "digest": content_digest(event, None)}
        if like:
            sealed: dict[str, str] = {}
            for name, value in event["fields"].items():
                held_key = envelope.key_of(like[name])
                data_key = self.lookup(held_key) if held_key else None
                if held_key is None or data_key is None:
                    raise KeyringError("the record re-published has a field whose key is gone")
                sealed[name] = _seal_one(name, value, held_key, data_key)
            return {**event, "fields": sealed, "digest": self.digest(event, like)}
        key_id = key_id_for(event["subject_id"], event["event_id"])
        data_key = self.lookup(key_id)
        if data_key is None:
            data_key = new_data_key()
            wrapped, master = self.ring.wrap(key_id, data_key)
            self.table[key_id.encode("utf-8")] = self._encode(  # type: ignore[assignment]  # a WrappedKey always encodes
                {
                    "type": "WrappedKey",
                    "subject_id": event["subject_id"],
                    "key_class": key_class,
                    "wrapped": wrapped,
                    "master_key_id": master,
                    "created_at": self._now(),
                    "key_id": key_id,
                }
            )
            self.cache.put(key_id, data_key)
        digest = content_digest(event, data_key)
        return {**event, "fields": seal_fields(event["fields"], key_id, data_key), "digest": digest}

    def open(self, fields: Mapping[str, str]) -> dict[str, str]:
        return open_fields(fields, self.lookup)

    def destroy(self, key_ids: Iterable[str]) -> None:
        for key_id in key_ids:
            self.cache.forget(key_id)
            raw_id = key_id.encode("utf-8")
            if raw_id in self.table:
                del self.table[raw_id]  # a table deletion: a tombstone on lifecycle.keys
