"""``lifecycle bench``: how fast the pipeline is, measured on the real broker, in one run.

    lifecycle bench                 # the full run (a few minutes), a table on stdout
    lifecycle bench --quick --json  # under a minute, one JSON document

Every figure is measured in the same run as its baseline, so the ratios hold on a shared,
noisy machine: the plain kafka-python consume rate of a topic holding the same events is the
*limit*, and the pipeline, the replay and the erasure latency are set against it. Progress
goes to stderr. What each figure is:

- limit: produce and consume rates of kafka-python on a pre-filled topic (no processing);
- pipeline_1 / pipeline_2: upstream events per second from ``lifecycle.ingest`` through guard
  and fold to the downstream topics, with one and with two worker processes, from a
  pre-filled ingest topic (the worker's start-up excluded: the clock starts at its first
  committed offset);
- erasure latency: from publishing the ``IdentityVerified`` that completes an erasure to a
  downstream consumer reading its tombstone on its own feed, while the pipeline is fed at half
  its measured rate;
- replay: ``lifecycle replay`` over the log the pipeline wrote;
- fold: the pure fold on one core, no broker (``streams.bench.fold``);
- screen: the guard's ``screen`` on one core over the history's validated events, beside
  ``orjson.dumps`` of the same events and the same screen reading no field as free text,
  and the lexicon over the worst text the contract allows beside ordinary text as long
  (``streams.bench.screen``);
- codec: our Avro codec beside the ``avro`` package and orjson on the same records;
- memory: peak RSS of a worker (RocksDB store) recovering a table of N subjects;
- correct: the downstream topics after the pipeline run equal what the pure fold computes
  for the same input (records and consent, the complete feeds and every consumer's own, last
  value per key; decisions by id).
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import os
import statistics
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import IO, Any

import orjson

from processors import fold as lifecycle
from processors.messages import downstream_of
from processors.policy import Policy
from processors.shredding import new_master_key_text
from processors.state import Event, State
from schemas.codec import decode, encode
from schemas.contract import MAX_TEXT, ContractError, validate
from streams.bench.fold import run as fold_run
from streams.bench.history import history
from streams.bench.screen import run as screen_run
from streams.plumbing.net import free_port, reachable
from streams.plumbing.security import client_kwargs
from streams.plumbing.topics import feeds
from streams.settings import Settings, load_policy


def _say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


# -- the input --------------------------------------------------------------------------


# -- plumbing ---------------------------------------------------------------------------


def _producer(settings: Settings) -> Any:
    from kafka import KafkaProducer

    return KafkaProducer(
        bootstrap_servers=settings.bootstrap.split(","),
        linger_ms=20,
        batch_size=512 * 1024,
        acks="all",
        client_id="lifecycle-bench",
        **client_kwargs(settings),
    )


def fill(settings: Settings, name: str, values: list[tuple[bytes, bytes]]) -> float:
    """Produce ``values`` to ``lifecycle.<name>``; returns messages per second (until all acked)."""
    producer = _producer(settings)
    try:
        t0 = time.perf_counter()
        for key, value in values:
            producer.send(settings.topic(name), key=key, value=value)
        producer.flush()
        return len(values) / (time.perf_counter() - t0)
    finally:
        producer.close()


def _fill_at_once(settings: Settings, name: str, values: list[tuple[bytes, bytes]]) -> None:
    """Produce ``values`` with librdkafka, some ten times faster than ``fill``: the input of a
    measured pipeline run, which must not share the machine with a slow producer for long."""
    from confluent_kafka import Producer

    from streams.plumbing.security import librdkafka_security

    producer = Producer(
        {
            "bootstrap.servers": settings.bootstrap, "client.id": "lifecycle-bench", "acks": "all",
            "linger.ms": 50, "partitioner": "murmur2_random",  # upstream's partitions (kafka-python's)
            "queue.buffering.max.messages": max(100_000, len(values)), **librdkafka_security(settings),
        }
    )  # fmt: skip
    topic = settings.topic(name)
    for key, value in values:
        producer.produce(topic, value, key)
    producer.flush(120)


def consume_rate(settings: Settings, name: str) -> tuple[float, int]:
    """A plain kafka-python consumer reading the whole topic: (messages per second, messages)."""
    from kafka import KafkaConsumer, TopicPartition

    topic = settings.topic(name)
    consumer = KafkaConsumer(
        bootstrap_servers=settings.bootstrap.split(","), enable_auto_commit=False, client_id="lifecycle-bench",
        max_poll_records=50_000, fetch_max_bytes=64 * 1024 * 1024, max_partition_fetch_bytes=16 * 1024 * 1024,
        **client_kwargs(settings),
    )  # fmt: skip
    try:
        tps = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        end = consumer.end_offsets(tps)
        n = 0
        t0 = time.perf_counter()
        while any(consumer.position(tp) < end[tp] for tp in tps):
            for msgs in consumer.poll(timeout_ms=500).values():
                n += len(msgs)
        return n / (time.perf_counter() - t0), n
    finally:
        consumer.close()


def _workers(settings: Settings, count: int, logs: Path) -> list[Any]:
    """``count`` worker processes with homes and web ports of their own, started together."""
    from streams.worker.processes import spawn_worker

    procs = []
    for i in range(count):
        port = free_port()
        own = dataclasses.replace(settings, home=settings.home / f"w{i}", web_port=port, worker_url=f"http://127.0.0.1:{port}")
        procs.append(spawn_worker(own, logs / f"worker-{i}.log"))
    return procs


def _cpu_seconds(pid: int | None = None) -> float:
    """CPU seconds used so far by one process, or (None) by the whole machine (Linux /proc)."""
    try:
        if pid is None:
            fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
            busy = sum(int(x) for x in fields) - int(fields[3]) - int(fields[4])  # all but idle, iowait
            return busy / os.sysconf("SC_CLK_TCK")
        stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(stat[11]) + int(stat[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime
    except (OSError, ValueError, IndexError):
        return 0.0


def pipeline_rate(
    settings: Settings, wire: list[tuple[bytes, bytes]], workers: int, logs: Path, timeout: float, broker: int | None = None
) -> tuple[float, dict[str, float]]:
    """Upstream events per second through the pipeline: ``wire`` is written to the ingest topic
    at once when every worker holds its partitions, and the clock stops when the group has
    committed all of it. Also the cores the workers and the whole machine kept busy meanwhile,
    which says whether more workers could help at all; and, given the pid of a broker on this
    machine, the cores it took to carry the pipeline's traffic.

    Why start from a settled group: workers started together join one after the other, and the
    first folds alone until the second's join moves half its partitions (a rebalance of about a
    second). In a run of a few seconds that start-up would be a third of the figure, which is
    meant to say how much traffic a running group keeps up with.
    """
    from streams.worker.processes import LagProbe, stop_worker

    procs = _workers(settings, workers, logs)
    lag = LagProbe(settings)
    try:
        deadline = time.monotonic() + timeout
        while lag.members_holding() < workers:
            if time.monotonic() > deadline or any(p.poll() is not None for p in procs):
                raise RuntimeError(f"the workers did not start (see {logs})")
            time.sleep(0.05)
        t0 = time.monotonic()
        cpu0 = [_cpu_seconds(p.pid) for p in procs], _cpu_seconds(), _cpu_seconds(broker) if broker else 0.0
        _fill_at_once(settings, "ingest", wire)
        wall = 0.0
        while True:
            if time.monotonic() > deadline:
                raise RuntimeError(f"the pipeline did not catch up within {timeout:.0f} s (lag {lag()})")
            if any(p.poll() is not None for p in procs):
                raise RuntimeError(f"a worker stopped during the run (see {logs})")
            if lag() == 0:
                if wall:  # read twice: a rebalance can briefly show an old commit
                    break
                wall = time.monotonic() - t0
                used = sum(_cpu_seconds(p.pid) for p in procs) - sum(cpu0[0]), _cpu_seconds() - cpu0[1]
                broker_used = _cpu_seconds(broker) - cpu0[2] if broker else 0.0
            else:
                wall = 0.0
            time.sleep(0.1)  # each look costs the bench some CPU, which the workers share
        cores = {"workers_cores": used[0] / wall, "machine_cores": used[1] / wall}
        if broker:
            cores["broker_cores"] = broker_used / wall
        return len(wire) / wall, cores
    finally:
        lag.close()
        for p in procs:
            stop_worker(p)


def check_correct(settings: Settings, events: list[Event], policy: Policy) -> tuple[bool, dict[str, int]]:
    from streams.plumbing.reading import latest_by_key, read_topic

    want = downstream_of(events, policy)
    want_records, want_consent, want_decisions = want.records, want.consent, set(want.decisions)

    def last_values(name: str) -> dict[bytes, bytes | None]:
        return {k: e.value for k, e in latest_by_key(read_topic(settings, name, timeout_s=120)).items()}

    def differ(want: dict[bytes, bytes | None], got: dict[bytes, bytes | None]) -> int:
        return sum(1 for k in want.keys() | got.keys() if want.get(k, b"?") != got.get(k, b"!"))

    got_records, got_consent = last_values("records"), last_values("consent")
    got_decisions = set()
    for e in read_topic(settings, "events", timeout_s=120):
        ev = e.decoded()
        if ev is not None and ev["type"] in lifecycle.DECISION_TYPES and not ev["caused_by"].startswith(lifecycle.TIMER):
            got_decisions.add(ev["event_id"])
    wrong = {
        "records": differ(want_records, got_records),
        "consent": differ(want_consent, got_consent),
        # what each consumer was sent, and nothing it was not
        "feeds": sum(differ(want.feeds.get(name, {}), last_values(name)) for name in feeds(policy)),
        "decisions": len(want_decisions ^ got_decisions),
    }
    return not any(wrong.values()), wrong


def erasure_latency(settings: Settings, rate: float, seconds: float, n_subjects: int, logs: Path, policy: Policy) -> list[float]:
    """Feed the pipeline at ``rate`` events/s for ``seconds`` with erasures mixed in; returns
    the latency (s) of each erasure, from its IdentityVerified to its first tombstone read by a
    consumer it went to."""
    from kafka import KafkaConsumer, TopicPartition

    from streams.worker.processes import stop_worker, wait_caught_up

    feed = history(int(rate * seconds) + 1000, n_subjects, seed=23, policy=policy)
    published: dict[str, float] = {}
    seen: dict[str, float] = {}
    stop = threading.Event()

    def watch() -> None:
        consumer = KafkaConsumer(
            bootstrap_servers=settings.bootstrap.split(","),
            enable_auto_commit=False,
            client_id="lifecycle-bench-watch",
            **client_kwargs(settings),
        )
        tps = [  # as the recipients read them: each consumer its own feeds
            TopicPartition(settings.topic(name), p)
            for name in feeds(policy)
            for p in sorted(consumer.partitions_for_topic(settings.topic(name)) or ())
        ]
        consumer.assign(tps)
        consumer.seek_to_end(*tps)
        try:
            while not stop.is_set():
                for msgs in consumer.poll(timeout_ms=100).values():
                    now = time.monotonic()
                    for m in msgs:
                        if m.value is None:
                            for name, value in m.headers or ():
                                if name == "request_id" and value:
                                    seen.setdefault(value.decode(), now)
        finally:
            consumer.close()

    procs = _workers(settings, 1, logs)
    watcher = threading.Thread(target=watch, daemon=True)
    producer = _producer(settings)
    try:
        wait_caught_up(settings, timeout=120, proc=procs[0])
        watcher.start()
        time.sleep(1.0)
        interval = 1.0 / rate
        t_next = time.monotonic()
        end = t_next + seconds
        topic = settings.topic("ingest")
        holders: list[str] = []  # subjects holding data that needs no consent: an erasure deletes something
        for n, ev in enumerate(feed):
            if time.monotonic() >= end:
                break
            if ev["type"] == "DataCollected" and ev["legal_basis"] != "consent" and "note" not in ev["fields"]:
                holders.append(ev["subject_id"])
            producer.send(topic, key=ev["subject_id"].encode(), value=encode(ev))
            if n % 40 == 39 and holders:  # one verified erasure every 40 events
                sid = holders.pop(0)
                rid = f"bench-erasure-{n}"
                base = {"subject_id": sid, "occurred_at": ev["occurred_at"], "source": "bench", "request_id": rid}
                producer.send(topic, key=sid.encode(), value=encode({"type": "ErasureRequested", "event_id": f"{rid}-r", **base}))
                verified = {"type": "IdentityVerified", "event_id": f"{rid}-v", "method": "email_link", **base}
                producer.send(topic, key=sid.encode(), value=encode(verified))
                producer.flush()  # the clock starts when the broker has it
                published[rid] = time.monotonic()
            t_next += interval
            delay = t_next - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        producer.flush()
        wait_caught_up(settings, timeout=120, proc=procs[0])
        time.sleep(1.0)
    finally:
        stop.set()
        producer.close()
        for p in procs:
            stop_worker(p)
    return sorted(seen[r] - t for r, t in published.items() if r in seen)


def codec_rates(events: list[Event], seconds: float = 1.0) -> dict[str, float]:
    """Records per second encoded and decoded by our codec, the ``avro`` package and orjson."""
    import avro.io
    import avro.schema

    from schemas import BY_NAME

    sample = [e for e in events if e["type"] == "DataCollected"][:2000]
    schema = avro.schema.parse(BY_NAME["DataCollected"].json)
    writer, reader = avro.io.DatumWriter(schema), avro.io.DatumReader(schema)
    defaults = dict(BY_NAME["DataCollected"].defaults)  # the avro package does not fill them in
    bodies = [{**defaults, **{k: v for k, v in e.items() if k != "type"}} for e in sample]

    def avro_encode(body: Event) -> bytes:
        buf = io.BytesIO()
        writer.write(body, avro.io.BinaryEncoder(buf))
        return buf.getvalue()

    ours = [encode(e) for e in sample]
    theirs = [avro_encode(b) for b in bodies]
    jsons = [orjson.dumps(e) for e in sample]

    def rate(fn: Any, items: list[Any]) -> float:
        n = 0
        t0 = time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            for x in items:
                fn(x)
            n += len(items)
        return n / (time.perf_counter() - t0)

    return {
        "ours_encode": rate(encode, sample),
        "ours_decode": rate(decode, ours),
        "avro_encode": rate(avro_encode, bodies),
        "avro_decode": rate(lambda b: reader.read(avro.io.BinaryDecoder(io.BytesIO(b))), theirs),
        "orjson_encode": rate(orjson.dumps, sample),
        "orjson_decode": rate(orjson.loads, jsons),
    }


def memory(settings: Settings, subjects: int, logs: Path, timeout: float) -> float:
    """Peak RSS (MB) of a worker that recovered a subjects table of ``subjects`` states into
    RocksDB: the changelog is filled directly with realistic states, then a worker starts."""
    from streams.worker.processes import spawn_worker, stop_worker

    policy = load_policy(settings.policy_file)
    events = history(6 * 200, 200, seed=5, policy=policy)
    states: dict[str, State] = {}
    for raw in events:
        try:
            event = validate(raw)
        except ContractError:
            continue
        state = states.setdefault(event["subject_id"], lifecycle.new_state(event["subject_id"]))
        lifecycle.apply(state, event, event["occurred_at"], policy)
    templates = [orjson.dumps(s) for s in states.values()]
    from streams.plumbing.topics import changelog_topic
    from streams.worker.loop import READY
    from streams.worker.main import ensure_changelog

    changelog = changelog_topic(settings)
    ensure_changelog(settings)
    producer = _producer(settings)
    try:
        for i in range(subjects):
            sid = f"m-{i:08d}"
            value = templates[i % len(templates)]
            producer.send(changelog, key=sid.encode(), value=value, partition=i % settings.partitions)
        producer.flush()
    finally:
        producer.close()
    proc = spawn_worker(dataclasses.replace(settings, web_port=free_port()), logs / "worker-memory.log")
    peak = 0.0
    try:
        deadline = time.monotonic() + timeout
        status = Path(f"/proc/{proc.pid}/status")
        ready = False
        while time.monotonic() < deadline and proc.poll() is None:
            text = status.read_text()
            peak = max(peak, int(text.split("VmHWM:")[1].split()[0]) / 1024)
            if (logs / "worker-memory.log").read_text(errors="replace").count(READY):
                ready = True
                break
            time.sleep(0.5)
        if not ready:
            raise RuntimeError(f"the worker did not recover {subjects} subjects within {timeout:.0f} s")
        time.sleep(2.0)
        peak = max(peak, int(status.read_text().split("VmHWM:")[1].split()[0]) / 1024)
    finally:
        stop_worker(proc)
    return peak


# -- the run ----------------------------------------------------------------------------


@dataclasses.dataclass
class Sizes:
    events: int
    subjects: int
    latency_seconds: float
    memory_subjects: int
    timeout: float
    repeat: int  # best of how many runs of the fold (CPU time)
    codec_seconds: float


FULL = Sizes(
    events=60_000, subjects=6_000, latency_seconds=30.0, memory_subjects=1_000_000, timeout=900.0, repeat=3, codec_seconds=1.0
)
QUICK = Sizes(events=1_500, subjects=400, latency_seconds=4.0, memory_subjects=5_000, timeout=120.0, repeat=1, codec_seconds=0.3)


def run(base: Settings, sizes: Sizes, workdir: Path) -> dict[str, Any]:
    """Every measurement on topics of its own, deleted at the end (some 200 partitions a run)."""
    from streams.plumbing.topics import delete_prefixed

    tag = uuid.uuid4().hex[:6]
    try:
        return _measure(base, sizes, workdir, tag)
    finally:
        _say("bench: deleting the benchmark's topics ...")
        for prefix in {f"{base.topic_prefix}bench-{tag}-", f"bench-{tag}-"}:  # topics, changelogs
            try:
                delete_prefixed(base, prefix)
            except Exception as exc:  # noqa: BLE001 - the figures stand; the user may delete them by hand
                _say(f"bench: could not delete the topics named {prefix}*: {exc}")


def _measure(base: Settings, sizes: Sizes, workdir: Path, tag: str) -> dict[str, Any]:
    from streams.broker.local import running_pid

    policy = load_policy(base.policy_file)
    key = base.master_key or new_master_key_text()

    def fresh(name: str) -> Settings:
        s = dataclasses.replace(
            base,
            topic_prefix=f"{base.topic_prefix}bench-{tag}-{name}.",
            app_id=f"bench-{tag}-{name}",
            home=workdir / name,
            master_key=key,
            api_token=base.api_token or "bench",
            store="rocksdb://",
            timer_interval=3600.0,  # no retention wake-up mid-run: the pure fold takes none either
        )
        from streams.plumbing.topics import ensure_topics

        ensure_topics(s)
        time.sleep(0.5)
        return s

    _say(f"bench: building a history of {sizes.events:,} events over {sizes.subjects:,} subjects ...")
    events = history(sizes.events, sizes.subjects, seed=17, policy=policy)
    wire = [(e["subject_id"].encode(), value) for e in events if (value := encode(e)) is not None]
    out: dict[str, Any] = {"events": len(events), "subjects": sizes.subjects}

    _say("bench: limit (plain kafka-python produce and consume) ...")
    limit = fresh("limit")
    out["limit_produce_eps"] = fill(limit, "ingest", wire)
    out["limit_consume_eps"], _ = consume_rate(limit, "ingest")

    # A broker that just started runs its produce and fetch paths interpreted until the JIT has
    # compiled them: measured on a fresh broker, it spent twice the CPU per event in the first
    # pipeline runs as from the third on. A cluster the pipeline runs against is warm.
    _say("bench: warming the broker up (a short pipeline run, not measured) ...")
    warm = fresh("warmup")
    pipeline_rate(warm, wire[:10_000], 1, workdir / "warmup", sizes.timeout)

    for count in (1, 2):
        _say(f"bench: pipeline with {count} worker(s) ...")
        s = fresh(f"p{count}")
        out[f"pipeline_{count}_eps"], out[f"pipeline_{count}_cpu"] = pipeline_rate(
            s,
            wire,
            count,
            workdir / f"p{count}",
            sizes.timeout,
            running_pid(base),
        )
        if count == 1:
            _say("bench: checking the downstream topics against the pure fold ...")
            out["correct"], out["wrong"] = check_correct(s, events, policy)
            from streams.commands.replay import run_replay

            _say("bench: replay of the pipeline's log ...")
            report, _ = run_replay(s)
            out["replay_eps"] = report["events_per_second"]
            out["replay_events"] = report["events_read"]
            out["replay_mismatches"] = report["mismatch_count"]
    # exactly once beside at least once, one worker each, on the same history in the same run:
    # what a transaction per batch costs (LIFECYCLE_GUARANTEE; README, Reliability)
    _say("bench: pipeline with 1 worker, exactly once ...")
    eos = dataclasses.replace(fresh("p1eos"), guarantee="exactly_once")
    out["pipeline_1_eos_eps"], out["pipeline_1_eos_cpu"] = pipeline_rate(
        eos, wire, 1, workdir / "p1eos", sizes.timeout, running_pid(base)
    )
    out["ratio_eos_alo"] = out["pipeline_1_eos_eps"] / out["pipeline_1_eps"]
    out["ratio_pipeline_limit"] = out["pipeline_2_eps"] / out["limit_consume_eps"]
    out["ratio_replay_limit"] = out["replay_eps"] / out["limit_consume_eps"]

    half = out["pipeline_1_eps"] / 2  # the latency run has one worker
    _say(f"bench: erasure latency at half the measured rate ({half:,.0f} events/s) ...")
    lat = erasure_latency(fresh("latency"), half, sizes.latency_seconds, sizes.subjects, workdir / "latency", policy)
    if lat:
        out["erasure_latency_ms"] = {
            "count": len(lat),
            "p50": 1000 * statistics.median(lat),
            "p99": 1000 * lat[min(len(lat) - 1, int(0.99 * len(lat)))],
            "max": 1000 * lat[-1],
        }
    else:
        out["erasure_latency_ms"] = {"count": 0, "p50": None, "p99": None, "max": None}

    _say("bench: pure fold on one core ...")
    # the pipeline's mix: as many events a subject as its history has (the fold's cost per
    # event grows with a subject's history); more events than it, for a steadier figure
    n_fold = min(sizes.events * 3, 300_000)
    fold = fold_run(n_fold, max(1, n_fold * sizes.subjects // sizes.events), sizes.repeat, 7, policy)
    out["fold_eps"] = fold["fold_eps"]
    out["fold_baseline_eps"] = fold["baseline_eps"]

    _say("bench: guard screen on one core ...")
    n_screen = min(sizes.events, 10_000)  # about a second: the figure is steady by then
    screen = screen_run(n_screen, max(1, n_screen * sizes.subjects // sizes.events), sizes.repeat, 17, policy)
    out["screen_eps"] = screen["screen_eps"]
    out["screen_no_free_text_eps"] = screen["screen_no_free_text_eps"]
    out["screen_baseline_eps"] = screen["baseline_eps"]
    out["screen_worst_text_ms"] = screen["worst_text_ms"]
    out["screen_worst_text_ratio"] = screen["worst_text_ratio"]

    _say("bench: codec ...")
    out["codec"] = codec_rates(events, sizes.codec_seconds)

    _say(f"bench: worker memory holding {sizes.memory_subjects:,} subjects ...")
    out["memory_subjects"] = sizes.memory_subjects
    out["memory_peak_rss_mb"] = memory(fresh("memory"), sizes.memory_subjects, workdir / "memory", sizes.timeout)
    return out


def table(r: dict[str, Any]) -> str:
    lat = r["erasure_latency_ms"]
    c = r["codec"]

    def f(x: float | None) -> str:
        return "-" if x is None else f"{x:,.0f}"

    def cores(cpu: dict[str, float]) -> str:
        broker = f", broker {cpu['broker_cores']:.2f}" if "broker_cores" in cpu else ""
        return f"cores busy: workers {cpu['workers_cores']:.2f}{broker}, machine {cpu['machine_cores']:.2f} of {os.cpu_count()}"

    rows = [
        ("history", f"{r['events']:,} events, {r['subjects']:,} subjects", ""),
        ("limit: kafka-python produce", f"{f(r['limit_produce_eps'])} ev/s", ""),
        ("limit: kafka-python consume", f"{f(r['limit_consume_eps'])} ev/s", ""),
        ("pipeline, 1 worker", f"{f(r['pipeline_1_eps'])} ev/s, {cores(r['pipeline_1_cpu'])}", ""),
        ("pipeline, 2 workers", f"{f(r['pipeline_2_eps'])} ev/s, {cores(r['pipeline_2_cpu'])}", "target 25,000"),
        (
            "pipeline, 1 worker, exactly once",
            f"{f(r['pipeline_1_eos_eps'])} ev/s, {r['ratio_eos_alo']:.2f} of at least once, {cores(r['pipeline_1_eos_cpu'])}",
            "",
        ),
        ("ratio pipeline / limit", f"{r['ratio_pipeline_limit']:.3f}", "target 0.5"),
        (
            "erasure latency p50 / p99 / max",
            f"{f(lat['p50'])} / {f(lat['p99'])} / {f(lat['max'])} ms ({lat['count']} erasures)",
            "target p99 500 ms",
        ),
        (
            "replay",
            f"{f(r['replay_eps'])} ev/s over {r['replay_events']:,} entries, {r['replay_mismatches']} mismatches",
            "target 100,000",
        ),
        ("ratio replay / limit", f"{r['ratio_replay_limit']:.3f}", ""),
        (
            "fold (pure, one core)",
            f"{f(r['fold_eps'])} ev/s (baseline dict update {f(r['fold_baseline_eps'])})",
            "target 200,000",
        ),
        (
            "screen (guard, one core)",
            f"{f(r['screen_eps'])} ev/s, {r['screen_eps'] / r['screen_baseline_eps']:.3f} of baseline orjson.dumps "
            f"{f(r['screen_baseline_eps'])}; {f(r['screen_no_free_text_eps'])} without free text "
            f"({r['screen_no_free_text_eps'] / r['screen_eps']:.2f}x)",
            "",
        ),
        (
            "screen: worst free text",
            f"{r['screen_worst_text_ms']:.1f} ms for {MAX_TEXT:,} characters, "
            f"{r['screen_worst_text_ratio']:.1f}x ordinary text as long",
            "",
        ),
        (
            "codec encode: ours / avro / orjson",
            f"{f(c['ours_encode'])} / {f(c['avro_encode'])} / {f(c['orjson_encode'])} rec/s",
            "",
        ),
        (
            "codec decode: ours / avro / orjson",
            f"{f(c['ours_decode'])} / {f(c['avro_decode'])} / {f(c['orjson_decode'])} rec/s",
            "",
        ),
        ("worker peak RSS", f"{f(r['memory_peak_rss_mb'])} MB holding {r['memory_subjects']:,} subjects", "target 500 MB at 1M"),
        ("correct", str(r["correct"]).lower() + ("" if r["correct"] else f" {r['wrong']}"), ""),
    ]
    width = max(len(a) for a, _, _ in rows)
    return "\n".join(f"{a:<{width}}  {b}" + (f"   ({c})" if c else "") for a, b, c in rows)


def main_bench(argv: list[str], base: Settings, out: IO[str] = sys.stdout) -> int:
    ap = argparse.ArgumentParser(prog="lifecycle bench", description="Throughput, latency, replay and memory on the real broker.")
    ap.add_argument("--quick", action="store_true", help="small sizes, under a minute")
    ap.add_argument("--json", action="store_true", help="one JSON document instead of the table")
    ap.add_argument("--events", type=int, help="events in the history")
    ap.add_argument("--subjects", type=int, help="subjects in the history")
    ap.add_argument("--latency-seconds", type=float, help="how long the erasure-latency feed runs")
    ap.add_argument("--memory-subjects", type=int, help="subjects the memory measurement holds")
    ap.add_argument("--workdir", type=Path, help="keep the workers' state and logs here (default: a temporary directory)")
    args = ap.parse_args(argv)
    sizes = dataclasses.replace(
        QUICK if args.quick else FULL,
        **{k: v for k, v in {
            "events": args.events, "subjects": args.subjects,
            "latency_seconds": args.latency_seconds, "memory_subjects": args.memory_subjects,
        }.items() if v is not None},
    )  # fmt: skip
    from streams.broker import local as broker

    started = False
    if not reachable(base.bootstrap):
        _say("bench: starting the local broker ...")
        broker.start(base, _say)
        started = True
    try:
        if args.workdir is not None:
            args.workdir.mkdir(parents=True, exist_ok=True)
            result = run(base, sizes, args.workdir)
        else:
            with tempfile.TemporaryDirectory(prefix="lifecycle-bench-") as tmp:
                result = run(base, sizes, Path(tmp))
    finally:
        if started:
            broker.stop(base)
    if args.json:
        out.write(orjson.dumps(result, option=orjson.OPT_INDENT_2).decode() + "\n")
    else:
        out.write(table(result) + "\n")
    return 0 if result["correct"] else 1
