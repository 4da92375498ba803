"""Read-only views for people: a subject's consent snapshot and export, as JSON.

Both come from the worker that owns the subject (its HTTP views, behind the bearer token in
``LIFECYCLE_API_TOKEN``). When no worker answers, ``consent`` falls back to the compacted
``lifecycle.consent`` topic, which holds the same snapshot; the export needs the worker's state.
Dates are printed as ISO-8601 UTC; the wire carries epoch milliseconds.
"""

from __future__ import annotations

import sys
import urllib.error
import urllib.parse
import urllib.request
from typing import IO, Any

import orjson

from streams.plumbing.reading import latest_by_key, read_topic
from streams.plumbing.text import humane
from streams.settings import Settings


class WorkerUnreachable(Exception):
    pass


class NotFound(Exception):
    """No state for the subject; ``reason`` is the worker's word for why (never_seen, erased)."""

    def __init__(self, subject: str, reason: str = "") -> None:
        super().__init__(subject)
        self.reason = reason


def fetch_view(settings: Settings, subject: str, view: str) -> dict[str, Any]:
    url = f"{settings.worker_url.rstrip('/')}/subjects/{urllib.parse.quote(subject, safe='')}/{view}"
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {settings.token()}"})  # noqa: S310 - our worker's URL
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:  # noqa: S310 - our own worker's URL
            doc: dict[str, Any] = orjson.loads(resp.read())
            return doc
    except urllib.error.HTTPError as exc:
        try:
            said = orjson.loads(exc.read())
        except (orjson.JSONDecodeError, OSError):
            said = {}
        finally:
            exc.close()
        if exc.code == 404:
            raise NotFound(subject, str(said.get("reason", ""))) from None
        if exc.code == 401:
            raise PermissionError("the worker refused the token: set LIFECYCLE_API_TOKEN to the worker's") from None
        raise WorkerUnreachable(
            f"the worker at {settings.worker_url} answered {exc.code}: {said.get('error', 'no reason given')}"
        ) from None
    except (urllib.error.URLError, OSError) as exc:
        raise WorkerUnreachable(f"no worker answers at {settings.worker_url}") from exc


def consent_from_topic(settings: Settings, subject: str) -> dict[str, Any] | None:
    entry = latest_by_key(read_topic(settings, "consent")).get(subject.encode())
    if entry is None:
        raise NotFound(subject)
    return entry.decoded()


def _print(doc: dict[str, Any], out: IO[str]) -> None:
    out.write(orjson.dumps(humane(doc), option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS).decode() + "\n")


def main_consent(subject: str, settings: Settings, out: IO[str] = sys.stdout, err: IO[str] = sys.stderr) -> int:
    try:
        shown: dict[str, Any] | None
        try:
            shown = fetch_view(settings, subject, "consent")
        except WorkerUnreachable as exc:
            print(f"note: {exc}; reading {settings.topic('consent')} instead", file=err)
            shown = consent_from_topic(settings, subject)
            if shown is None:
                print(f"error: no consent state for subject {subject!r}: erased", file=err)
                return 1
    except NotFound as exc:
        why = {"erased": "erased", "never_seen": "never seen by the pipeline"}.get(
            exc.reason, "never seen by the pipeline, or erased"
        )
        print(f"error: no consent state for subject {subject!r}: {why}", file=err)
        return 1
    except PermissionError as exc:
        print(f"error: {exc}", file=err)
        return 2
    except Exception as exc:  # noqa: BLE001 - one clear line instead of a traceback
        print(f"error: cannot read the consent state at {settings.bootstrap}: {type(exc).__name__}", file=err)
        return 2
    assert shown is not None
    _print(shown, out)
    return 0


def main_export(subject: str, settings: Settings, out: IO[str] = sys.stdout, err: IO[str] = sys.stderr) -> int:
    try:
        doc = fetch_view(settings, subject, "export")
    except NotFound:
        print(f"error: nothing held about subject {subject!r}", file=err)
        return 1
    except PermissionError as exc:
        print(f"error: {exc}", file=err)
        return 2
    except WorkerUnreachable as exc:
        print(f"error: {exc} (the export is served by a running `lifecycle worker`, LIFECYCLE_WORKER_URL)", file=err)
        return 2
    _print(doc, out)
    return 0
