"""What a downstream topic holds against what the pure fold says it should, readably."""

from __future__ import annotations

from schemas.codec import decode


def differences(got: dict[bytes, bytes | None], want: dict[bytes, bytes | None]) -> list[str]:
    """The first three keys whose last value differs (test data only: values are decoded)."""
    out = []
    for key in sorted(set(got) | set(want)):
        g, w = got.get(key, "missing"), want.get(key, "missing")
        if g != w:
            show = lambda v: v if v in ("missing", None) else decode(v)  # noqa: E731
            out.append(f"{key!r}: got {show(g)} want {show(w)}")
    return out[:3]
