"""GETs on a worker's views, the way a support agent's tool or a self-service page asks."""

from __future__ import annotations

import urllib.error
import urllib.request

from streams.settings import Settings


def http_get(settings: Settings, path: str, authorization: str | None) -> tuple[int, bytes]:
    """Status and body of a GET on the worker, errors included (a 401 is an answer too)."""
    headers = {} if authorization is None else {"Authorization": authorization}
    req = urllib.request.Request(f"{settings.worker_url.rstrip('/')}{path}", headers=headers)  # noqa: S310 - the test's worker
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:  # noqa: S310 - the test's own worker
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        try:
            return exc.code, exc.read()
        finally:
            exc.close()


def bearer(settings: Settings) -> str:
    return f"Bearer {settings.token()}"
