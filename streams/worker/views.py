"""The worker's HTTP views: ``/subjects/<id>/consent`` and ``/subjects/<id>/export``.

Why a thread with the standard library's server: the views are rare, small reads of one
subject's state, answered between two batches of the worker's loop (they share its lock), and
this keeps the worker free of a web framework. A subject whose partition another worker owns
is fetched from that worker: each worker's consumer names its views' URL in its client id, so
the group's description says who owns what.

Every view needs the bearer token, checked before anything is looked up, so an unauthenticated
caller learns nothing, not even whether a subject exists. The views serve personal data, so the
server binds to loopback unless a proxy is put in front.
"""

from __future__ import annotations

import hmac
import logging
import threading
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import orjson

from streams.plumbing.group import ingest_owners
from streams.settings import Settings

Answer = Callable[[str, str], "tuple[int, bytes] | None"]
"""(subject, view) -> (status, JSON body) from this worker's tables, or None: not its subject."""
PartitionOf = Callable[[bytes], int]

log = logging.getLogger("lifecycle.views")

VIEWS = ("consent", "export")
CLIENT_PREFIX = "lifecycle-worker "


def owner_url(settings: Settings, partition: int) -> str | None:
    """The views URL of the group member that owns ``partition`` of ``lifecycle.ingest``."""
    for client_id, held in ingest_owners(settings)[1]:
        if partition in held and client_id.startswith(CLIENT_PREFIX):
            return client_id[len(CLIENT_PREFIX) :]
    return None


class ViewsPortBusy(RuntimeError):
    """The views' port cannot be bound; the message names the setting to change."""


class ViewsServer(ThreadingHTTPServer):
    """The views' server, bound before the worker exists (so a taken port fails the start in
    one line, before the worker joins its group) and serving once ``start`` hands it the
    worker's answers: it knows nothing of the worker but these two functions."""

    answer: Answer | None = None
    partition_of: PartitionOf | None = None

    def start(self, answer: Answer, partition_of: PartitionOf) -> None:
        self.answer, self.partition_of = answer, partition_of
        threading.Thread(target=self.serve_forever, name="views", daemon=True).start()


def bind(settings: Settings) -> ViewsServer:
    """The views' server on ``settings.web_port`` (loopback), bound, not serving yet."""
    expected = f"Bearer {settings.token()}".encode()

    class Handler(BaseHTTPRequestHandler):
        server_version = "lifecycle"
        sys_version = ""

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the standard library's signature
            pass  # request lines name subjects: the access log is not ours to keep

        def _send(self, status: int, body: bytes) -> None:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:
            header = self.headers.get("Authorization", "")
            if not hmac.compare_digest(header.encode(), expected):
                self._send(401, orjson.dumps({"error": "unauthorized"}))
                return
            parts = urllib.parse.urlsplit(self.path).path.split("/")
            if len(parts) != 4 or parts[1] != "subjects" or parts[3] not in VIEWS:
                self._send(404, orjson.dumps({"error": "no such view"}))
                return
            subject = urllib.parse.unquote(parts[2])
            assert server.answer is not None  # serve_forever runs only once start() set it
            try:
                answer = server.answer(subject, parts[3])
                if answer is None:
                    answer = self._from_owner(subject, header)
            except Exception as exc:  # noqa: BLE001 - the view fails, the worker does not
                log.warning("view %s failed: %s", parts[3], type(exc).__name__)
                answer = 503, orjson.dumps({"error": "the view failed; try again"})
            self._send(*answer)

        def _from_owner(self, subject: str, header: str) -> tuple[int, bytes]:
            assert server.partition_of is not None
            url = owner_url(settings, server.partition_of(subject.encode("utf-8", "surrogatepass")))
            if url is None:
                return 503, orjson.dumps({"error": "no worker owns this subject's partition yet; try again"})
            if url.rstrip("/") == settings.worker_url.rstrip("/"):
                return 503, orjson.dumps({"error": "this worker is still recovering the subject's partition; try again"})
            req = urllib.request.Request(url.rstrip("/") + self.path, headers={"Authorization": header})  # noqa: S310 - a worker of our group
            try:
                with urllib.request.urlopen(req, timeout=10) as resp:  # noqa: S310 - a worker of our group
                    return resp.status, resp.read()
            except urllib.error.HTTPError as exc:
                return exc.code, exc.read()

    try:
        server = ViewsServer(("127.0.0.1", settings.web_port), Handler)
    except OSError as exc:
        raise ViewsPortBusy(
            f"cannot serve the views on 127.0.0.1:{settings.web_port} ({exc.strerror or exc}): "
            "set LIFECYCLE_WEB_PORT to a free port (each worker on a machine needs its own)"
        ) from None
    server.daemon_threads = True
    return server
