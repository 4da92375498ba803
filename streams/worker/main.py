"""The worker process: ``lifecycle worker`` runs ``run`` until SIGINT or SIGTERM.

    LIFECYCLE_MASTER_KEY_FILE=/etc/lifecycle/master-keys lifecycle worker

Settings come from ``LIFECYCLE_*`` variables (``streams.settings``). Before the loop starts the
process claims its state directory (one worker per ``LIFECYCLE_HOME``), binds its views' port,
and makes whichever topic is missing; every one of them fails in one line naming the setting.
"""

from __future__ import annotations

import faulthandler
import logging
import signal
from typing import Any

from streams.plumbing.logsafe import hold_payload_loggers
from streams.plumbing.security import librdkafka_security
from streams.plumbing.topics import Deviation, changelog_config, changelog_topic, check, create_missing, ensure_topics
from streams.settings import Settings, load_policy
from streams.worker.loop import Worker
from streams.worker.tables import StateDir
from streams.worker.views import bind

log = logging.getLogger("lifecycle.worker")


class TopicsBreakPromises(RuntimeError):
    """A live topic has a setting that would break a promise (``lifecycle topics check``)."""

    def __init__(self, deviations: list[Deviation]) -> None:
        self.deviations = deviations
        super().__init__(
            f"the worker refuses to run: {len(deviations)} topic setting(s) would break a promise, "
            f"first {deviations[0].line()} (lifecycle topics check lists them all)"
        )


def ensure_changelog(settings: Settings) -> None:
    """The subjects changelog, made if missing (``lifecycle.keys`` is the keys table's)."""
    create_missing(settings, {changelog_topic(settings): changelog_config()})


def configure_logging(loglevel: str) -> None:
    logging.basicConfig(
        level=getattr(logging, loglevel.upper(), logging.INFO),
        format="[%(asctime)s] [%(process)d] [%(levelname)s] %(name)s: %(message)s",
    )
    hold_payload_loggers()  # kafka-python's debug output holds message values
    # a crash inside librdkafka's binding aborts the process in C, with no Python traceback:
    # the threads' stacks (code lines only, no values) say where it happened
    faulthandler.enable()


def run(settings: Settings | None = None, loglevel: str = "info", dev: bool = False) -> None:
    """Run a worker in the foreground until SIGINT/SIGTERM, then shut down cleanly.

    Raises ``StateDirBusy`` (another worker on this home), ``ViewsPortBusy`` (the views' port
    is taken) before anything else happens, and whatever stopped the loop otherwise; only a
    clean stop marks the local state as trustworthy for the next start (``StateDir``): the
    local tables are written as each batch is folded, before its offsets are committed, so a
    worker that died or failed left them ahead of what Kafka holds.
    """
    configure_logging(loglevel)
    settings = settings or Settings.from_env()
    state_dir = StateDir(settings.worker_dir)
    state_dir.claim()
    clean = False
    server = None
    try:
        server = bind(settings)
        ensure_topics(settings)
        ensure_changelog(settings)
        deviations = check(settings)
        if deviations:
            raise TopicsBreakPromises(deviations)
        worker = Worker(settings, load_policy(settings.policy_file), settings.keyring(dev=dev))
        security = librdkafka_security(settings)
        log.info(
            "connecting to %s as %s over %s%s",
            settings.bootstrap, settings.kafka_user or "(no principal)", security.get("security.protocol", "PLAINTEXT"),
            f" ({security['sasl.mechanisms']})" if "sasl.mechanisms" in security else "",
        )  # fmt: skip

        def stop(signum: int, frame: Any) -> None:
            worker.stopping = True

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        server.start(worker.view, worker.partition_of)
        try:
            worker.run()
        finally:
            server.shutdown()
        clean = not worker.failed
    finally:
        if server is not None:
            server.server_close()
        state_dir.release(clean)
    log.info("worker stopped")


__all__ = ["TopicsBreakPromises", "configure_logging", "ensure_changelog", "run"]
