"""Documents for people: epoch milliseconds (what the wire and the state carry) shown as
ISO-8601 UTC, everywhere in a document, by the name of the key that holds them."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any


def iso(ms: int | None) -> str | None:
    if ms is None:
        return None
    return datetime.fromtimestamp(ms / 1000, tz=UTC).isoformat().replace("+00:00", "Z")


TIME_KEYS = frozenset(
    {
        "at",
        "updated_at",
        "collected_at",
        "retention_deadline",
        "deadline",
        "received_at",
        "verified_at",
        "fulfilled_at",
        "erased_at",
        "occurred_at",
        "started_at",
        "ended_at",
        "placed_at",
        "released_at",
        "extended_at",
        "expired_at",
    }
)


def _is_time_key(key: str) -> bool:
    # by name, so a time field added to the state later is never printed as a bare number
    return key in TIME_KEYS or key.endswith(("_at", "deadline"))


def humane(value: Any, key: str = "") -> Any:
    """Epoch milliseconds under a time key become ISO-8601 UTC, everywhere in a document."""
    if isinstance(value, dict):
        return {k: humane(v, k) for k, v in value.items()}
    if isinstance(value, list):
        return [humane(v, key) for v in value]
    if _is_time_key(key) and isinstance(value, int) and not isinstance(value, bool):
        return iso(value)
    return value
