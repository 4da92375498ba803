"""The text form of an encrypted personal-data field, as it sits in ``lifecycle.events``.

Why a self-describing string: the Avro contract keeps ``fields`` a plain string map, so an
encrypted value must still be a string, and whoever holds it (the fold's state, the replay,
an auditor) must be able to tell which data key it needs without any other lookup::

    enc1:<key_id, base64url>:<nonce (12 bytes) | AES-GCM ciphertext and tag, base64url>

This module only builds and parses that form; it holds no key and does no cryptography, so
the pure fold can ask which keys a record depends on (``key_of``) without importing a cipher.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from functools import lru_cache

PREFIX = "enc1:"
ERASED = "[erased]"
"""What a field whose data key was destroyed reads as, everywhere it is shown."""


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.b64decode(text + "=" * (-len(text) % 4), altchars=b"-_", validate=True)


def build(key_id: str, sealed: bytes) -> str:
    return f"{PREFIX}{_b64(key_id.encode('utf-8'))}:{_b64(sealed)}"


def parse(value: str) -> tuple[str, bytes] | None:
    """``(key_id, nonce|ciphertext)`` of an envelope; None for a value that is not one."""
    if not value.startswith(PREFIX):
        return None
    try:
        kid, _, body = value[len(PREFIX) :].partition(":")
        key_id = _unb64(kid).decode("utf-8")
        sealed = _unb64(body)
    except (ValueError, UnicodeDecodeError):
        return None
    if not key_id or not sealed:
        return None
    return key_id, sealed


@lru_cache(maxsize=65_536)
def _key_id(encoded: str) -> str | None:
    try:
        key_id = _unb64(encoded).decode("utf-8")
    except (ValueError, UnicodeDecodeError):
        return None
    return key_id or None


def key_of(value: str) -> str | None:
    """The data key an envelope needs, or None for plaintext (and for anything malformed).

    Reads only the key id, never the ciphertext: the fold asks this of every field of every
    record a decision looks at, so it must stay cheap."""
    if not value.startswith(PREFIX):
        return None
    end = value.find(":", len(PREFIX))
    if end <= len(PREFIX) or end == len(value) - 1:
        return None
    return _key_id(value[len(PREFIX) : end])


def keys_of(fields: Mapping[str, str] | None) -> set[str]:
    """Every data key a field map depends on."""
    out: set[str] = set()
    for value in (fields or {}).values():
        if value.startswith(PREFIX):
            k = key_of(value)
            if k is not None:
                out.add(k)
    return out
