"""The ``lifecycle`` command line.

    lifecycle demo                       run the whole pipeline once on a sample history
    lifecycle broker start|stop|status   a local single-node Apache Kafka (KRaft)
    lifecycle worker                     the stream processors (guard, fold, timer)
    lifecycle publish FILE|-             JSON lines → Avro on lifecycle.ingest
    lifecycle consent SUBJECT            a subject's consent snapshot, as JSON
    lifecycle export SUBJECT             everything held about a subject, as JSON

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
    b = sub.add_parser("broker", help="a local single-node Apache Kafka (KRaft)")
    b.add_argument("action", choices=["start", "stop", "status"])
    w = sub.add_parser("worker", help="run the stream processors until interrupted")
    w.add_argument("--loglevel", default="info", choices=["debug", "info", "warning", "error"])
    pub = sub.add_parser("publish", help="validate JSON lines and publish them as Avro to lifecycle.ingest")
    pub.add_argument("file", help="a file of JSON lines, or - for standard input")
    c = sub.add_parser("consent", help="a subject's current consent and restriction state, as JSON")
    c.add_argument("subject")
    e = sub.add_parser("export", help="the access / portability export of a subject, as JSON")
    e.add_argument("subject")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        settings = Settings.from_env()
    except SettingsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.command == "broker":
        from streams.broker import main_broker

        return main_broker([args.action])
    if args.command == "worker":
        from processors.worker import run

        run(settings, loglevel=args.loglevel)
        return 0
    if args.command == "publish":
        from streams.publish import main_publish

        return main_publish(args.file, settings)
    if args.command == "consent":
        from streams.views import main_consent

        return main_consent(args.subject, settings)
    if args.command == "export":
        from streams.views import main_export

        return main_export(args.subject, settings)
    if args.command == "demo":
        from streams.demo import main_demo

        return main_demo(settings, keep=args.keep)
    return 2


if __name__ == "__main__":
    sys.exit(main())
