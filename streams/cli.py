"""The ``lifecycle`` command line.

    lifecycle demo                       run the whole pipeline once on a sample history
    lifecycle broker start|stop|status   a local Apache Kafka (KRaft); --nodes 3: a cluster; --secure: SASL_SSL + ACLs
    lifecycle worker                     the stream processors (guard, fold, timer)
    lifecycle publish FILE|-             JSON lines → Avro on lifecycle.ingest
    lifecycle consent SUBJECT            a subject's consent snapshot, as JSON
    lifecycle export SUBJECT             everything held about a subject, as JSON
    lifecycle sink sqlite PATH --name N  a downstream copy that honours and acknowledges tombstones
    lifecycle replay [--subject ID]      the auditor's replay: re-derive and check every decision
    lifecycle keys rotate                re-wrap every data key under the current master key
    lifecycle bench [--quick] [--json]   throughput, latency, replay and memory on the real broker

Settings come from ``LIFECYCLE_*`` environment variables (see README).
"""

from __future__ import annotations

import argparse
import sys

from streams.settings import Settings, SettingsError


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="lifecycle", description="Privacy promises enforced on Kafka.")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    d = sub.add_parser("demo", help="start a broker and a worker, publish a sample history, show the result")
    d.add_argument("--keep", action="store_true", help="keep the demo's topics afterwards")
    b = sub.add_parser("broker", help="a local Apache Kafka (KRaft): one node, or a cluster of several")
    b.add_argument("action", choices=["start", "stop", "status"])
    b.add_argument("--secure", action="store_true", help="start with SASL/SCRAM over TLS and ACLs (see README)")
    b.add_argument(
        "--nodes", type=int, metavar="N",
        help="start N KRaft nodes on neighbouring ports (default: what the home has, else 1)",
    )  # fmt: skip
    b.add_argument("--node", type=int, metavar="ID", help="stop only this node of the cluster")
    w = sub.add_parser("worker", help="run the stream processors until interrupted")
    w.add_argument("--loglevel", default="info", choices=["debug", "info", "warning", "error"])
    w.add_argument(
        "--dev",
        action="store_true",
        help="without LIFECYCLE_MASTER_KEY(_FILE), use a development master key kept in LIFECYCLE_HOME",
    )
    pub = sub.add_parser("publish", help="validate JSON lines and publish them as Avro to lifecycle.ingest")
    pub.add_argument("file", help="a file of JSON lines, or - for standard input")
    pub.add_argument(
        "--timeout", type=float, default=300.0, metavar="SECONDS",
        help="how long to wait for the broker to acknowledge every line (default 300)",
    )  # fmt: skip
    c = sub.add_parser("consent", help="a subject's current consent and restriction state, as JSON")
    c.add_argument("subject")
    e = sub.add_parser("export", help="the access / portability export of a subject, as JSON")
    e.add_argument("subject")
    s = sub.add_parser("sink", help="keep a downstream copy (SQLite), honour tombstones, acknowledge them", add_help=False)
    s.add_argument("rest", nargs=argparse.REMAINDER)
    r = sub.add_parser("replay", help="the auditor's replay of lifecycle.events: re-derive and check every decision")
    r.add_argument(
        "--until", metavar="TIME",
        help="replay only what was appended to the log before this ISO-8601 UTC time: what the pipeline knew then",
    )  # fmt: skip
    r.add_argument("--subject", help="print this subject's full audit trail instead of the report")
    r.add_argument("--dev", action="store_true", help="use the development master key to show readable fields")
    r.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    bn = sub.add_parser("bench", help="throughput, latency, replay and memory on the real broker", add_help=False)
    bn.add_argument("rest", nargs=argparse.REMAINDER)
    t = sub.add_parser("topics", help="create the project's topics, or check that the live ones keep the promises")
    t.add_argument("action", choices=["create", "check"])
    k = sub.add_parser("keys", help="master-key operations on lifecycle.keys")
    k.add_argument("action", choices=["rotate"])
    k.add_argument("--dev", action="store_true", help="the development keyring in LIFECYCLE_HOME")
    return p


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in ("sink", "bench"):  # commands with parsers of their own
        return _own_parser(argv[0], argv[1:])
    args = _parser().parse_args(argv)
    if args.command != "worker":
        _quiet_clients()
    try:
        settings = Settings.from_env()
        if args.command != "broker":  # the broker acts as its own admin
            from streams.plumbing.security import client_kwargs

            client_kwargs(settings)  # a principal without a password or CA: said here, in one line
    except SettingsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.command == "broker":
        from streams.broker.local import main_broker

        nodes = ["--nodes", str(args.nodes)] if args.nodes is not None else []
        node = ["--node", str(args.node)] if args.node is not None else []
        return main_broker([args.action, *(["--secure"] if args.secure else []), *nodes, *node])
    if args.command == "worker":
        return _worker(settings, args.loglevel, args.dev)
    if args.command == "replay":
        from streams.commands.replay import main_replay

        return main_replay(settings, until=args.until, subject=args.subject, dev=args.dev, progress=not args.no_progress)
    if args.command == "keys":
        from streams.commands.rotate import main_rotate

        return main_rotate(settings, dev=args.dev)
    if args.command == "publish":
        from streams.commands.publish import main_publish

        return main_publish(args.file, settings, timeout=args.timeout)
    if args.command == "consent":
        from streams.commands.views import main_consent

        return main_consent(args.subject, settings)
    if args.command == "export":
        from streams.commands.views import main_export

        return main_export(args.subject, settings)
    if args.command == "topics":
        from streams.commands.topics import main_topics

        return main_topics(args.action, settings)
    if args.command == "demo":
        from streams.commands.demo import main_demo

        return main_demo(settings, keep=args.keep)
    return 2


def _worker(settings: Settings, loglevel: str, dev: bool) -> int:
    """``lifecycle worker``: 0 after a clean stop; 2 when it cannot start (a setting to fix);
    1 when it stopped on an error, with nothing of the batch in hand committed. Every one of
    them says why in one line."""
    import logging

    from processors.shredding import KeyringError
    from streams.plumbing.topics import ReplicationError
    from streams.worker.loop import DeliveryError
    from streams.worker.main import TopicsBreakPromises, run
    from streams.worker.tables import StateDirBusy
    from streams.worker.views import ViewsPortBusy

    try:
        settings.keyring(dev=dev)  # refuse to start without a master key, in one line
    except KeyringError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        run(settings, loglevel=loglevel, dev=dev)
    except (StateDirBusy, ViewsPortBusy, TopicsBreakPromises, ReplicationError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyringError as exc:
        print(f"error: {exc}: the master keys in LIFECYCLE_MASTER_KEY(_FILE) must include the one "
              "that wrapped it; nothing of the batch was committed", file=sys.stderr)  # fmt: skip
        return 1
    except DeliveryError as exc:
        print(f"error: {exc}; nothing of the batch was committed", file=sys.stderr)
        return 1
    except Exception as exc:
        logging.getLogger("lifecycle.worker").debug("the worker stopped on an error", exc_info=True)
        print(f"error: the worker stopped on {type(exc).__name__}; nothing of the batch was committed, "
              "the next worker folds it again (--loglevel debug shows where)", file=sys.stderr)  # fmt: skip
        return 1
    return 0


def _quiet_clients() -> None:
    """The commands say what went wrong in one line of their own; kafka-python would otherwise
    print its connection warnings (a line per retry while a broker is away) on stderr too."""
    import logging

    from streams.plumbing.logsafe import KAFKA_CLIENT_LOGGER

    for name in ("kafka", KAFKA_CLIENT_LOGGER):
        logging.getLogger(name).setLevel(logging.CRITICAL + 1)


def _own_parser(command: str, rest: list[str]) -> int:
    _quiet_clients()
    if command == "sink":
        from streams.commands.sink import main_sink

        return main_sink(rest)
    try:
        settings = Settings.from_env()
    except SettingsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    from streams.bench.measure import main_bench

    return main_bench(rest, settings)


if __name__ == "__main__":
    sys.exit(main())
