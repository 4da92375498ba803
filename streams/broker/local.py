"""A local Apache Kafka for development: one KRaft node (broker and controller in one JVM), or a
cluster of several on neighbouring ports.

No Docker, no Kafka tarball: the broker runs from the Apache Kafka jars on Maven Central,
fetched once with ``mvn`` into the user cache, on the machine's own Java 17+::

    lifecycle broker start     # first run fetches the jars (~30 s), later runs take seconds
    lifecycle broker status    # exit 0 when running, 3 when not
    lifecycle broker stop
    lifecycle broker start --nodes 3   # three nodes: try failover, run the fault tests

Where things live (``LIFECYCLE_HOME``, ``LIFECYCLE_CACHE``, ``LIFECYCLE_BROKER_PORT`` move them):

- jars: ``$LIFECYCLE_CACHE/kafka-<version>/libs`` (shared by every home on the machine);
- config, pid file and ``broker.log``: ``$LIFECYCLE_HOME/broker``;
- data: ``$LIFECYCLE_HOME/broker/data``, formatted once, so topics survive stop and start;
- with ``--nodes N``: the same per node, in ``$LIFECYCLE_HOME/broker/node-<id>``.

The broker listens on 127.0.0.1 only: on the broker port for clients and on the next port
for its controller; node *i* of *N* on broker port + *i* - 1, its controller on broker port
+ *N* + *i* - 1. Every node is a controller and a broker, so the cluster keeps working (and
electing) while a majority of its nodes runs. It runs detached from the shell that started it.

``lifecycle broker start --secure`` formats a new home with access control: clients speak
SASL_SSL (SCRAM-SHA-512, SCRAM-SHA-256 or PLAIN) on the broker port, or show a client
certificate (``$LIFECYCLE_HOME/broker/tls/clients/<principal>.pem``) on the broker port + 2,
under the principals of ``streams/plumbing/security.py`` (the
pipeline's, and one per consumer the policy registers), whose random passwords go to
``$LIFECYCLE_HOME/kafka-credentials`` (readable by the user only), and the ACLs of
``streams/broker/acls.py`` decide what each may do. A consumer registered later gets its
login, feeds and ACLs at the next start. The CA clients trust is
``$LIFECYCLE_HOME/broker/tls/ca.pem``. A home formatted that way stays secured at every start.
"""

from __future__ import annotations

import argparse
import base64
import dataclasses
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from processors.policy import PolicyError
from streams.broker import acls
from streams.broker.tls import BROKER_CN, TlsFiles, ensure_client_certs, ensure_tls
from streams.plumbing import security
from streams.plumbing.admin import opened
from streams.plumbing.topics import NAMES, ReplicationError, ensure_topics
from streams.settings import Settings, SettingsError, load_policy

Progress = Callable[[str], None]

JAVA_MIN = 17
HEAP_OPTS = ["-Xms256m", "-Xmx512m"]  # modest: the workers run beside it
JVM_OPTS = [
    "-XX:+UseG1GC",
    "-XX:MaxGCPauseMillis=20",
    "-XX:InitiatingHeapOccupancyPercent=35",
    "-XX:+ExitOnOutOfMemoryError",  # a dead broker is easier to diagnose than a thrashing one
    "-Djava.awt.headless=true",
]
RUNTIME_DEPS = [  # the jars Kafka's own distribution puts on the server's classpath
    ("org.apache.kafka", "kafka_2.13", None),  # None: the requested Kafka version
    ("org.apache.logging.log4j", "log4j-slf4j2-impl", "2.24.3"),
    ("org.slf4j", "slf4j-api", "2.0.17"),
]
READY_TIMEOUT = 60.0
MARKER = ".complete"
NODE_ID = 1  # a single node's id (and the first of a cluster's)
MAX_NODES = 9


class BrokerError(Exception):
    """Why the local broker cannot be fetched, started or stopped, in one line a user can act on."""


@dataclass(frozen=True)
class NodeStatus:
    """One node of the broker: where it listens, whether it runs, where to read why not."""

    id: int
    bootstrap: str
    controller: str
    pid: int | None
    log: Path
    data_dir: Path

    @property
    def running(self) -> bool:
        return self.pid is not None


@dataclass(frozen=True)
class BrokerStatus:
    """Enough to point a client at the broker (``bootstrap``) or to find out why it stopped (``log``).

    ``bootstrap`` is the address the running broker was started with, which may differ from
    what the environment now says; on several nodes, all of theirs. ``running``: every node
    runs; ``pid``, ``log`` and ``data_dir`` are the first node's, ``nodes`` each one's.
    """

    running: bool
    pid: int | None
    bootstrap: str
    log: Path
    data_dir: Path
    version: str
    secure: bool = False
    nodes: tuple[NodeStatus, ...] = ()


def _quiet(_: str) -> None:
    pass


# -- paths --------------------------------------------------------------------------------


def _jar_dir(settings: Settings) -> Path:
    return settings.cache / f"kafka-{settings.kafka_version}"


@dataclass(frozen=True)
class Node:
    """One KRaft node of this home's broker: its directory and its two ports.

    A single node keeps the layout homes had before there could be more (its files right in
    ``$LIFECYCLE_HOME/broker``), so an existing home starts as it always did.
    """

    id: int
    dir: Path
    port: int
    controller_port: int

    @property
    def data_dir(self) -> Path:
        return self.dir / "data"

    @property
    def log(self) -> Path:
        return self.dir / "broker.log"

    @property
    def pid_path(self) -> Path:
        return self.dir / "broker.pid"

    @property
    def props(self) -> Path:
        return self.dir / "server.properties"

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"


def _node_dir(settings: Settings, node_id: int, count: int) -> Path:
    return settings.broker_dir if count == 1 else settings.broker_dir / f"node-{node_id}"


def _count_path(settings: Settings) -> Path:
    return settings.broker_dir / "nodes"


def _layout(settings: Settings, count: int, base: int) -> list[Node]:
    return [Node(i, _node_dir(settings, i, count), base + i - 1, base + count + i - 1) for i in range(1, count + 1)]


def _formatted_count(settings: Settings) -> int | None:
    """How many nodes this home's data was formatted for; None when nothing is formatted yet.

    A home formatted before there could be several nodes has no count file: it is one node."""
    try:
        count = int(_count_path(settings).read_text().split()[0])
    except (OSError, ValueError, IndexError):
        count = 1
    if any((n.data_dir / "meta.properties").is_file() for n in _layout(settings, count, settings.broker_port)):
        return count
    return None


def _node_count(settings: Settings, wanted: int | None = None) -> int:
    """The home's node count; ``wanted`` (``--nodes``) must match a formatted home's."""
    formatted = _formatted_count(settings)
    if wanted is None:
        return formatted or 1
    if not 1 <= wanted <= MAX_NODES:
        raise BrokerError(f"--nodes {wanted}: a local cluster has 1 to {MAX_NODES} nodes")
    if formatted is not None and formatted != wanted:
        raise BrokerError(
            f"--nodes {wanted}: {settings.broker_dir} holds a broker of {formatted} node(s), formatted so; "
            "use another LIFECYCLE_HOME (or delete that directory)"
        )
    return wanted


def _listened_port(props: Path) -> int | None:
    try:
        text = props.read_text()
    except OSError:
        return None
    match = re.search(r"^listeners=\w+://[^:]+:(\d+)", text, re.M)
    return int(match.group(1)) if match else None


def _nodes(settings: Settings, count: int | None = None) -> list[Node]:
    """This home's nodes, on the ports the running ones were started with (the environment may
    since have changed), else on ``LIFECYCLE_BROKER_PORT``'s."""
    count = count or _node_count(settings)
    planned = _layout(settings, count, settings.broker_port)
    for node in planned:
        pid = _read_pid(node)
        port = _listened_port(node.props) if pid is not None and _is_ours(node, pid) else None
        if port is not None:
            return _layout(settings, count, port - node.id + 1)
    return planned


def _first(settings: Settings) -> Node:
    return _nodes(settings)[0]


def _data_dir(settings: Settings) -> Path:
    return _first(settings).data_dir


def _log_path(settings: Settings) -> Path:
    return _first(settings).log


def _tls_dir(settings: Settings) -> Path:
    return settings.broker_dir / "tls"


def _secure_marker(settings: Settings) -> Path:
    """Present when this home's data was formatted with SCRAM users: it must stay secured."""
    return settings.broker_dir / "secure"


def _credentials_path(settings: Settings) -> Path:
    """The broker's own home, whatever LIFECYCLE_KAFKA_CREDENTIALS says: these passwords must
    match the ones formatted into this home's metadata."""
    return settings.home / "kafka-credentials"


# -- java and the jars --------------------------------------------------------------------


def _java() -> str:
    """Java the way Kafka's own scripts find it: ``JAVA_HOME`` first, then ``PATH``."""
    home = os.environ.get("JAVA_HOME")
    if home:
        java = Path(home) / "bin" / "java"
        if not java.is_file():
            raise BrokerError(f"JAVA_HOME={home} has no bin/java: point it at a Java {JAVA_MIN}+ runtime")
        path = str(java)
    else:
        found = shutil.which("java")
        if not found:
            raise BrokerError(f"java not found: install a Java {JAVA_MIN}+ runtime or set JAVA_HOME")
        path = found
    try:
        out = subprocess.run([path, "-version"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise BrokerError(f"{path} -version failed: {e}") from None
    match = re.search(r'version "(\d+)(?:\.(\d+))?', out.stderr + out.stdout)
    if match:
        major = int(match.group(1))
        if major == 1 and match.group(2):  # "1.8.0_392" is Java 8
            major = int(match.group(2))
        if major < JAVA_MIN:
            raise BrokerError(f"{path} is Java {major}, Kafka needs {JAVA_MIN}+: install a newer runtime or set JAVA_HOME")
    return path


def _pom(version: str) -> str:
    deps = "\n".join(
        f"    <dependency><groupId>{g}</groupId><artifactId>{a}</artifactId><version>{v or version}</version></dependency>"
        for g, a, v in RUNTIME_DEPS
    )
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<!-- Written by `lifecycle broker start` to fetch Kafka's runtime jars; safe to delete. -->
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>local.data-lifecycle</groupId>
  <artifactId>kafka-runtime</artifactId>
  <version>{version}</version>
  <packaging>pom</packaging>
  <dependencies>
{deps}
  </dependencies>
</project>
"""


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Two processes (a CLI and a test run) may fetch into the same cache at once; one waits."""
    try:
        import fcntl
    except ImportError:  # not on POSIX: no lock, the marker still guards against half downloads
        yield
        return
    with open(path, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


_DOWNLOADED = re.compile(r"^(?:\[INFO\] )?Downloaded from [^:]+: (\S+)")
_MVN_NOISE = re.compile(r"^\s*(->|To see the full|Re-run Maven|For more information|\[Help \d\]|$)")


def _mvn_failure(lines: list[str], code: int) -> str:
    """Maven's first real ``[ERROR]`` line names the cause; the ones after it are boilerplate."""
    for line in lines:
        if line.startswith("[ERROR]"):
            text = line[len("[ERROR]") :].strip()
            if not _MVN_NOISE.match(text):
                text = text.split(" -> [Help")[0]
                return text[:400]
    tail = [line.strip() for line in lines if line.strip()]
    return tail[-1][:400] if tail else f"mvn exited with code {code}"


def ensure_jars(settings: Settings, progress: Progress = _quiet) -> Path:
    """The Kafka runtime jars, fetched with mvn on first use, reused from the cache afterwards.

    The marker file is written only once mvn succeeded, so an interrupted fetch is retried
    from scratch instead of starting a broker on half a classpath.
    """
    root = _jar_dir(settings)
    libs = root / "libs"
    if (root / MARKER).is_file() and libs.is_dir():
        return libs
    root.mkdir(parents=True, exist_ok=True)
    with _locked(root / ".lock"):
        if (root / MARKER).is_file() and libs.is_dir():
            return libs  # another process fetched them while we waited for the lock
        mvn = shutil.which("mvn")
        if not mvn:
            raise BrokerError(
                f"mvn not found: install Apache Maven to fetch Kafka {settings.kafka_version} from Maven Central (needed once)"
            )
        if libs.exists():
            shutil.rmtree(libs)  # leftovers of an interrupted fetch
        (root / "pom.xml").write_text(_pom(settings.kafka_version))
        progress(f"fetching Kafka {settings.kafka_version} from Maven Central (first run only) ...")
        failed = f"fetching Kafka {settings.kafka_version} from Maven Central failed"
        cmd = [
            mvn, "-B", "-Dstyle.color=never", "-f", str(root / "pom.xml"),
            "dependency:copy-dependencies", f"-DoutputDirectory={libs}", "-DincludeScope=runtime",
        ]  # fmt: skip
        lines: list[str] = []
        downloaded = 0
        try:
            proc = subprocess.Popen(
                cmd, cwd=root, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, text=True, errors="replace",
            )  # fmt: skip
        except OSError as e:
            raise BrokerError(f"{failed}: {e}") from None
        with proc:
            assert proc.stdout is not None
            for raw in proc.stdout:
                line = raw.rstrip()
                lines.append(line)
                hit = _DOWNLOADED.match(line)
                if hit:
                    downloaded += 1
                    name = hit.group(1).rsplit("/", 1)[-1]
                    if name.endswith(".jar"):
                        progress(f"  [{downloaded:3d} files] downloaded {name}")
        code = proc.returncode
        jars = sorted(libs.glob("*.jar")) if libs.is_dir() else []
        if code != 0 or not jars:
            reason = _mvn_failure(lines, code) if code != 0 else "mvn copied no jars"
            raise BrokerError(f"{failed}: {reason}")
        (root / MARKER).write_text(f"{settings.kafka_version}\n{len(jars)} jars\n")
        progress(f"Kafka {settings.kafka_version}: {len(jars)} jars ready ({downloaded} files downloaded)")
        return libs


# -- processes ----------------------------------------------------------------------------

# Brokers started by this process, so that stop() can reap them (a child that exited stays a
# zombie, which still "exists" for kill(pid, 0)) and they are never garbage-collected while
# running (subprocess would warn).
_children: dict[int, subprocess.Popen[bytes]] = {}


def _read_pid(node: Node) -> int | None:
    try:
        return int(node.pid_path.read_text().strip())
    except (OSError, ValueError):
        return None


def _alive(pid: int) -> bool:
    child = _children.get(pid)
    if child is not None:
        return child.poll() is None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie (exited, not yet reaped by its parent) is as good as gone
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def _is_ours(node: Node, pid: int) -> bool:
    """A recycled pid must not be mistaken for our broker, so check its command line."""
    if not _alive(pid):
        return False
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return True  # no /proc (macOS): trust the pid file
    return b"kafka.Kafka" in cmdline and str(node.props).encode() in cmdline


def _node_pid(node: Node) -> int | None:
    pid = _read_pid(node)
    return pid if pid is not None and _is_ours(node, pid) else None


def running_pid(settings: Settings) -> int | None:
    """The pid of the broker this home started (its first running node's), if it is still
    running (None otherwise)."""
    return next((pid for node in _nodes(settings) if (pid := _node_pid(node)) is not None), None)


def _check_port(port: int, what: str) -> None:
    # SO_REUSEADDR like the JVM's server sockets: a port held only by TIME_WAIT leftovers of
    # our own previous run is free for Kafka, a listening socket is not.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            taken = f"port {port}{what} is taken by another process"
            raise BrokerError(f"{taken}: set LIFECYCLE_BROKER_PORT") from None


def _check_ports(nodes: Sequence[Node], count: int) -> None:
    """Every port the nodes about to start need, each named by what it is for."""
    base = nodes[0].port - nodes[0].id + 1 if nodes else 0
    if nodes and base + 2 * count - 1 > 65535:
        raise BrokerError(f"LIFECYCLE_BROKER_PORT={base}: {count} nodes need the {2 * count} ports from it, past 65535")
    for node in nodes:
        if count == 1:
            _check_port(node.port, "")
            _check_port(node.controller_port, " (the controller's, broker port + 1)")
        else:
            _check_port(node.port, f" (node {node.id}'s, broker port + {node.port - base})")
            _check_port(node.controller_port, f" (node {node.id}'s controller, broker port + {node.controller_port - base})")


def new_cluster_id() -> str:
    """Kafka's own format: 16 random bytes, URL-safe base64 without padding, no leading dash."""
    while True:
        cid = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cid.startswith("-"):
            return cid


@dataclass(frozen=True)
class Secured:
    """What a secured broker's config needs beyond the plain one."""

    tls: TlsFiles
    admin_password: str = dataclasses.field(repr=False)
    # principal -> password, for PLAIN (the broker checks PLAIN logins against its JAAS config,
    # not against the SCRAM credentials in its metadata); empty: nobody logs in with PLAIN
    plain_users: Mapping[str, str] = dataclasses.field(default_factory=dict, repr=False)


SECURE_LISTENER = "SECURE"
CERT_LISTENER = "CERTS"
"""Mutual TLS as a login, on the broker port + 2: a SASL_SSL listener takes its principal from
SASL, never from a certificate, so certificates need a listener of their own."""
CN_RULES = "RULE:^CN=([^,]+)$/$1/,DEFAULT"
"""``User:CN=worker`` becomes ``User:worker``: a certificate gets the ACLs of the principal of
the same name, however it logs in."""


def _jaas_value(text: str) -> str:
    """A JAAS option value in quotes; our passwords are URL-safe, anything else is refused
    rather than escaped wrongly (a quote would end the value, and the config with it)."""
    if any(c in text for c in '"\\;\n'):
        raise BrokerError("a password holds a quote, backslash, semicolon or newline: not usable in the broker's config")
    return f'"{text}"'


def security_properties(secured: Secured, client_listeners: Sequence[str], cert_listeners: Sequence[str] = ()) -> str:
    """The access-control half of a secured broker's config (also used for docker-compose.yml).

    Why this shape: clients authenticate with SCRAM-SHA-512, SCRAM-SHA-256 or PLAIN over TLS
    on ``client_listeners`` (whatever their managed cluster offers, tried here first); the
    broker talks to itself on the first of them as ``admin``. PLAIN users are listed in the
    config (readable by its owner only) because the broker checks PLAIN against it. On
    ``cert_listeners`` a client certificate from our CA is the login, its CN the principal.
    The controller listener cannot use SCRAM (KRaft keeps those credentials in the very
    metadata the controller serves), so it takes mutual TLS: only a certificate from our CA
    gets in, as ``User:CN=<broker>``. Both are super users; everyone else gets exactly the
    ACLs of ``streams/broker/acls.py``.
    """
    password = _jaas_value(secured.admin_password)
    scram = f'org.apache.kafka.common.security.scram.ScramLoginModule required username="{security.ADMIN}" password={password};'
    users = " ".join(f"user_{name}={_jaas_value(pw)}" for name, pw in sorted(secured.plain_users.items()))
    plain = (
        f'org.apache.kafka.common.security.plain.PlainLoginModule required username="{security.ADMIN}" '
        f"password={password} {users};"
    )
    lines = []
    for name in client_listeners:
        for mechanism in security.SCRAM:
            lines.append(f"listener.name.{name.lower()}.{mechanism.lower()}.sasl.jaas.config={scram}")
        lines.append(f"listener.name.{name.lower()}.plain.sasl.jaas.config={plain}")
    for name in cert_listeners:
        lines.append(f"listener.name.{name.lower()}.ssl.client.auth=required")
        lines.append(f"listener.name.{name.lower()}.ssl.principal.mapping.rules={CN_RULES}")
    per_listener = "\n".join(lines)
    return f"""\
# Access control: SASL (SCRAM, PLAIN) over TLS and client certificates for clients, mutual TLS
# on the controller port, ACLs.
sasl.enabled.mechanisms={",".join(security.SASL)}
sasl.mechanism.inter.broker.protocol={security.MECHANISM}
{per_listener}
ssl.keystore.type=PEM
ssl.keystore.location={secured.tls.keystore}
ssl.truststore.type=PEM
ssl.truststore.location={secured.tls.ca}
listener.name.controller.ssl.client.auth=required
authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer
super.users=User:{security.ADMIN};User:CN={BROKER_CN}
allow.everyone.if.no.acl.found=false
"""


def cert_port(settings: Settings) -> int:
    """Where a secured local broker takes client certificates: the broker port + 2."""
    return settings.broker_port + 2


def replicas(count: int) -> tuple[int, int]:
    """(copies, in sync for a write) of the broker's internal topics (group offsets,
    transactions) on ``count`` nodes: what ``streams.plumbing.topics.replication`` gives the
    project's own topics by default, so a committed offset is as safe as what it points past."""
    copies = min(3, count)
    return copies, 2 if copies >= 3 else 1


def _server_properties(settings: Settings, version: str, secured: Secured | None = None, node: Node | None = None,
                       cluster: Sequence[Node] = ()) -> str:  # fmt: skip
    node = node or _layout(settings, 1, settings.broker_port)[0]
    cluster = cluster or [node]
    port, cport = node.port, node.controller_port
    voters = ",".join(f"{n.id}@127.0.0.1:{n.controller_port}" for n in cluster)
    copies, insync = replicas(len(cluster))
    if secured is None:
        name, protocols, extra = "PLAINTEXT", "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT", ""
    else:
        name, protocols = SECURE_LISTENER, f"{SECURE_LISTENER}:SASL_SSL,CONTROLLER:SSL,{CERT_LISTENER}:SSL"
        extra = f",{CERT_LISTENER}://127.0.0.1:{cert_port(settings)}"
    return f"""\
# Written by `lifecycle broker start` for Kafka {version}; rewritten at every start.
process.roles=broker,controller
node.id={node.id}
# A static quorum (voters from this file, not from the formatted log), so that moving the
# ports with LIFECYCLE_BROKER_PORT keeps working on an existing data directory.
controller.quorum.voters={voters}
listeners={name}://127.0.0.1:{port},CONTROLLER://127.0.0.1:{cport}{extra}
advertised.listeners={name}://127.0.0.1:{port}{extra}
inter.broker.listener.name={name}
controller.listener.names=CONTROLLER
listener.security.protocol.map={protocols}
log.dirs={node.data_dir}

# {len(cluster)} node(s): the internal topics keep {copies} copies and a write needs {insync} of them
# in sync, as the project's topics do by default (streams/plumbing/topics.py).
offsets.topic.replication.factor={copies}
transaction.state.log.replication.factor={copies}
transaction.state.log.min.isr={insync}
share.coordinator.state.topic.replication.factor={copies}
share.coordinator.state.topic.min.isr={insync}
default.replication.factor={copies}
min.insync.replicas={insync}
# Fewer internal partitions than the production default (50): faster first group join, fewer files.
offsets.topic.num.partitions=8
transaction.state.log.num.partitions=8

# Consumers join a group at once instead of waiting 3 s for more members.
group.initial.rebalance.delay.ms=0
# The cleaner looks for compactable segments every 5 s (default 15 s), so a tombstone on a
# compacted topic removes the old value within the topic's max.compaction.lag.ms plus seconds.
log.cleaner.backoff.ms=5000
# Time-based retention is checked every 10 s (default 5 min), so lifecycle.ingest, the only
# topic holding plaintext personal data, is emptied within its retention.ms plus seconds.
log.retention.check.interval.ms=10000
# Kafka's default, kept: our own topics never depend on it (ensure_topics and the worker create
# them with their configs before anyone uses them).
auto.create.topics.enable=true
num.partitions={settings.partitions}

# Small machine, workers beside it.
num.network.threads=2
num.io.threads=4
""" + ("" if secured is None else "\n" + security_properties(secured, [SECURE_LISTENER], [CERT_LISTENER]))


_LOG4J2 = """\
# Written by `lifecycle broker start`: INFO to stdout, which the broker's launcher sends to broker.log.
status = warn
name = lifecycle-broker
# Kafka logs its own shutdown from a JVM shutdown hook; log4j's hook would silence it first.
shutdownHook = disable
appender.out.type = Console
appender.out.name = STDOUT
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.out.ref = STDOUT
logger.request.name = kafka.request.logger
logger.request.level = WARN
logger.request.additivity = false
logger.request.appenderRef.out.ref = STDOUT
"""

_EXCEPTION = re.compile(r"^(?:Caused by: )?(?:[\w$]+\.)+[\w$]*(?:Exception|Error)(?::\s*(.*))?$")
_LOGLINE = re.compile(r"^\[[^\]]+\] (?:ERROR|FATAL) (.*?)(?: \([\w.$]+\))?$")


def _last_meaningful(log: Path) -> str:
    """The line of the broker log that says why it died: the root cause of the last exception,
    else the last ERROR, else the last line (the JVM itself complains on plain stderr)."""
    try:
        lines = [line.strip() for line in log.read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        return "no log written"
    for line in reversed(lines):
        match = _EXCEPTION.match(line)
        if match and match.group(1):
            return match.group(1)[:300]
    for line in reversed(lines):
        match = _LOGLINE.match(line)
        if match:
            return match.group(1)[:300]
    return lines[-1][:300] if lines else "no output"


# The format tool runs for a second: C1 only and the serial GC start it faster (~1.3 s less).
TOOL_OPTS = ["-Xmx256m", "-XX:TieredStopAtLevel=1", "-XX:+UseSerialGC"]


def _java_cmd(java: str, libs: Path, settings: Settings, main: list[str], opts: list[str]) -> list[str]:
    return [
        java, *opts,
        f"-Dlog4j2.configurationFile={settings.broker_dir / 'log4j2.properties'}",
        "-cp", f"{libs}{os.sep}*", *main,
    ]  # fmt: skip


def scram_args(credentials: Mapping[str, str]) -> list[str]:
    """The format tool's ``--add-scram`` arguments: one SCRAM user per principal, with both
    SCRAM-SHA-512 and -256 credentials (the same password) so a client may use either.

    SCRAM users are created when formatting because the broker needs its own (``admin``)
    before it can authenticate anyone; the others come along so a fresh home is complete.
    """
    out: list[str] = []
    for user, password in sorted(credentials.items()):
        for mechanism in security.SCRAM:
            out += ["--add-scram", f'{mechanism}=[name={user},password="{password}"]']
    return out


def write_argfile(path: Path, args: Sequence[str]) -> None:
    """A java launcher ``@argfile``, private to the user: arguments read from it (passwords)
    never appear in the process list, which any local user can read."""

    def quoted(arg: str) -> str:
        return '"' + arg.replace("\\", "\\\\").replace('"', '\\"') + '"'

    security.write_private(path, ("\n".join(quoted(a) for a in args) + "\n").encode())


def _cluster_id(nodes: Sequence[Node]) -> str:
    """The id a node formatted already carries (the others must join that cluster), else a new one."""
    for node in nodes:
        try:
            text = (node.data_dir / "meta.properties").read_text()
        except OSError:
            continue
        match = re.search(r"^cluster\.id=(\S+)", text, re.M)
        if match:
            return match.group(1)
    return new_cluster_id()


def _format_storage(
    java: str, libs: Path, settings: Settings, progress: Progress, scram: Mapping[str, str] | None = None,
    nodes: Sequence[Node] = (),
) -> None:  # fmt: skip
    """Formats once: a formatted directory keeps its cluster id and data across restarts. The
    nodes of a cluster share one id, so a node whose data directory went missing rejoins."""
    nodes = nodes or _nodes(settings)
    cluster_id = _cluster_id(nodes)
    for node in nodes:
        if not (node.data_dir / "meta.properties").is_file():
            _format_node(java, libs, settings, progress, node, cluster_id, scram)


def _format_node(
    java: str, libs: Path, settings: Settings, progress: Progress, node: Node, cluster_id: str,
    scram: Mapping[str, str] | None,
) -> None:  # fmt: skip
    data = node.data_dir
    progress(f"formatting {data} (first start of this home{', with SCRAM users' if scram else ''})")
    main = ["kafka.tools.StorageTool", "format", "-t", cluster_id, "-c", str(node.props)]
    argfile = node.dir / "format.args"
    if scram:
        write_argfile(argfile, main + scram_args(scram))
        main = [f"@{argfile}"]
    try:
        out = subprocess.run(
            _java_cmd(java, libs, settings, main, TOOL_OPTS), capture_output=True, text=True, timeout=120,
            stdin=subprocess.DEVNULL, cwd=node.dir,
        )  # fmt: skip
    except subprocess.TimeoutExpired:
        raise BrokerError(f"formatting {data} timed out after 120 s") from None
    finally:
        argfile.unlink(missing_ok=True)
    if out.returncode != 0:
        lines = [line.strip() for line in (out.stdout + out.stderr).splitlines() if line.strip()]
        reason = lines[-1] if lines else f"exit code {out.returncode}"
        for password in (scram or {}).values():  # should the tool ever echo an argument
            reason = reason.replace(password, "[hidden]")
        raise BrokerError(f"formatting {data} failed: {reason[:300]}")


def _answers(bootstrap: str, timeout: float, client: Mapping[str, object] | None = None) -> bool:
    """True once the broker serves metadata; a bare TCP accept is not enough (the socket is
    bound early in startup, requests are served only once the broker is unfenced)."""
    host, port = bootstrap.rsplit(":", 1)
    try:
        with socket.create_connection((host, int(port)), timeout=1.0):
            pass
    except OSError:
        return False
    from kafka.admin import KafkaAdminClient
    from kafka.errors import KafkaError

    try:
        admin = KafkaAdminClient(
            bootstrap_servers=bootstrap, client_id="lifecycle-broker-probe",
            bootstrap_timeout_ms=int(max(timeout, 1.0) * 1000), request_timeout_ms=10_000,
            **(client or {}),
        )  # fmt: skip
    except KafkaError:
        return False
    try:
        admin.list_topics()
        return True
    except KafkaError:
        return False
    finally:
        admin.close()


def _wait_ready(
    proc: subprocess.Popen[bytes], settings: Settings, bootstrap: str, log: Path | None = None, what: str = "broker"
) -> None:
    """``settings`` carry the identity the probe uses (the admin's, on a secured broker)."""
    client = security.client_kwargs(settings)
    deadline = time.monotonic() + READY_TIMEOUT
    log = log or _log_path(settings)
    while True:
        code = proc.poll()
        if code is not None:
            why = _last_meaningful(log)
            raise BrokerError(f"{what} exited during startup (code {code}): {why} (see {log})")
        left = deadline - time.monotonic()
        if left <= 0:
            within = f"within {READY_TIMEOUT:.0f} s"
            raise BrokerError(f"{what} did not answer on {bootstrap} {within} (see {log})")
        if _answers(bootstrap, min(left, 10.0), client):
            return
        time.sleep(0.25)


def _wait_joined(settings: Settings, nodes: Sequence[Node]) -> None:
    """Every node serves as a broker of the cluster (registered and unfenced), so that the
    topics created next get all their copies: created while a node was still joining, they
    would be replicated on the others only."""
    from kafka.errors import KafkaError

    from streams.plumbing.topics import broker_count

    target = dataclasses.replace(settings, bootstrap=",".join(n.bootstrap for n in nodes))
    deadline = time.monotonic() + READY_TIMEOUT
    joined = 0
    while True:
        try:
            with opened(target, "lifecycle-broker-probe") as admin:
                while (joined := broker_count(admin)) < len(nodes) and time.monotonic() < deadline:
                    time.sleep(0.25)
        except KafkaError:
            pass
        if joined >= len(nodes):
            return
        if time.monotonic() > deadline:
            logs = ", ".join(str(n.log) for n in nodes)
            raise BrokerError(f"only {joined} of {len(nodes)} nodes joined the cluster within {READY_TIMEOUT:.0f} s (see {logs})")
        time.sleep(0.5)


def _create_topics(settings: Settings, bootstrap: str, progress: Progress) -> None:
    """Right after startup the metadata may lag a moment behind, so retry briefly."""
    from kafka.errors import KafkaError

    target = dataclasses.replace(settings, bootstrap=bootstrap)
    deadline = time.monotonic() + 30
    while True:
        try:
            created = ensure_topics(target)
            break
        except ReplicationError as e:
            raise BrokerError(f"broker is up but creating the topics failed: {e}") from None
        except KafkaError as e:
            if time.monotonic() > deadline:
                raise BrokerError(f"broker is up but creating the topics failed: {e}") from None
            time.sleep(1.0)
    _wait_listed(target, deadline)
    if created:
        progress(f"created topics: {', '.join(created)}")


def _wait_listed(settings: Settings, deadline: float) -> None:
    """Creation is acknowledged a few hundred ms before the broker lists (and serves) a topic;
    returning only then means a client started next finds the topics."""
    from kafka.admin import KafkaAdminClient

    wanted = {settings.topic(n) for n in NAMES}
    admin = KafkaAdminClient(
        bootstrap_servers=settings.bootstrap, client_id="lifecycle-broker-probe", **security.client_kwargs(settings)
    )
    try:
        while not wanted <= set(admin.list_topics()):
            if time.monotonic() > deadline:
                raise BrokerError(f"the broker does not list the new topics (see {_log_path(settings)})")
            time.sleep(0.1)
    finally:
        admin.close()


def _principals(settings: Settings) -> tuple[str, ...]:
    """Everyone with a login on this home's broker: the pipeline's principals and a consumer's
    for each one the settings' policy registers."""
    return security.principals(load_policy(settings.policy_file))


def _grant(admin: Settings, bootstrap: str, progress: Progress, credentials: Mapping[str, str]) -> None:
    """The SCRAM users a formatted home lacks (a consumer registered since), then the ACLs for
    this settings' topic prefix, app id and policy (Kafka keeps the ones that exist)."""
    from kafka.errors import KafkaError

    target = dataclasses.replace(admin, bootstrap=bootstrap)
    try:
        added = acls.add_users(target, credentials)
        count = acls.apply(target)
    except (KafkaError, acls.AclError) as e:
        raise BrokerError(f"broker is up but granting the ACLs failed: {e}") from None
    if added:
        progress(f"new SCRAM users: {', '.join(added)}")
    progress(f"access control on: {count} ACLs for {', '.join(p for p in _principals(admin) if p != security.ADMIN)}")


def status(settings: Settings) -> BrokerStatus:
    """What a user needs to point a client at the broker, or to look at why it stopped."""
    nodes = tuple(
        NodeStatus(n.id, n.bootstrap, f"127.0.0.1:{n.controller_port}", _node_pid(n), n.log, n.data_dir) for n in _nodes(settings)
    )
    pid = next((n.pid for n in nodes if n.pid is not None), None)
    return BrokerStatus(
        running=all(n.running for n in nodes),
        pid=pid,
        bootstrap=",".join(n.bootstrap for n in nodes),
        log=nodes[0].log,
        data_dir=nodes[0].data_dir,
        version=settings.kafka_version,
        secure=_secure_marker(settings).is_file(),
        nodes=nodes,
    )


def admin_settings(settings: Settings) -> Settings:
    """``settings`` acting as this home's broker admin: the super user on a secured broker,
    nobody in particular (PLAINTEXT, whatever LIFECYCLE_KAFKA_USER says) on a plain one."""
    if not _secure_marker(settings).is_file():
        return dataclasses.replace(settings, kafka_user="", kafka_password="")
    password = security.read_credentials(_credentials_path(settings)).get(security.ADMIN)
    if not password:
        raise BrokerError(f"{_credentials_path(settings)} has no {security.ADMIN} password: this secured home is broken")
    return dataclasses.replace(
        settings,
        kafka_user=security.ADMIN,
        kafka_password=password,
        kafka_credentials=None,
        kafka_ca=_tls_dir(settings) / "ca.pem",
        kafka_mechanism=security.MECHANISM,
        kafka_cert=None,
        kafka_key=None,
        kafka_key_password="",
    )


def _secure_setup(settings: Settings, wanted: bool, progress: Progress = _quiet) -> tuple[Secured | None, dict[str, str]]:
    """TLS files and credentials when this start is secured; refuses to half-secure a home.

    A home formatted without SCRAM users cannot gain them later (they are written when
    formatting), and a secured home never falls back to an open broker.
    """
    formatted = (_data_dir(settings) / "meta.properties").is_file()
    marked = _secure_marker(settings).is_file()
    if not (wanted or marked):
        return None, {}
    if formatted and not marked:
        raise BrokerError(
            f"{_data_dir(settings)} was formatted without --secure; SCRAM users can only be added "
            "when formatting: use another LIFECYCLE_HOME (or delete that data directory)"
        )
    try:
        files = ensure_tls(_tls_dir(settings))
        credentials = security.ensure_credentials(_credentials_path(settings), _principals(settings))
        if not ensure_client_certs(files, _principals(settings)) and not files.ca_key.is_file():
            progress(f"no client certificates: this home's CA predates them (delete {_tls_dir(settings)} for a new CA)")
    except (OSError, ValueError, SettingsError, PolicyError) as e:
        raise BrokerError(f"preparing TLS and credentials failed: {e}") from None
    return Secured(files, credentials[security.ADMIN], credentials), credentials


def _start_count(settings: Settings, nodes: int | None, secure: bool) -> int:
    """The node count a start runs (``_node_count``); a secured one runs a single node."""
    count = _node_count(settings, nodes)
    if count > 1 and secure:
        if nodes is None:
            held = f"{settings.broker_dir} holds a broker of {count} nodes"
            raise BrokerError(f"--secure runs a single node: {held}; use another LIFECYCLE_HOME")
        raise BrokerError(f"--secure runs a single node: drop --nodes {count}, or drop --secure")
    return count


def start(settings: Settings, progress: Progress = _quiet, secure: bool = False, nodes: int | None = None) -> BrokerStatus:
    """Starts the broker detached, waits until it serves requests, creates the project topics.

    Idempotent: when this home's broker already runs, reports it and changes nothing; when
    some nodes of its cluster run, starts the others (a node killed, or stopped alone, comes
    back this way). On any failure after launching, the nodes it started are stopped again so
    that a retry starts from a clean state (their logs stay for reading).

    ``nodes`` (``--nodes``; default: what the home was formatted with, else 1) runs a cluster
    of that many KRaft nodes, each a controller and a broker. ``secure`` formats a new home
    with access control (see the module's docstring); then the topics are created, and the
    ACLs granted, as the admin principal. A secured cluster of several nodes is refused.
    """
    count = _start_count(settings, nodes, secure)
    current = status(settings)
    if current.running:
        return current
    java = _java()
    cluster = _nodes(settings, count)
    down = [n for n in cluster if _node_pid(n) is None]
    _check_ports(down, count)
    libs = ensure_jars(settings, progress)

    broker_dir = settings.broker_dir
    broker_dir.mkdir(parents=True, exist_ok=True)
    for node in down:
        node.dir.mkdir(parents=True, exist_ok=True)
        node.pid_path.unlink(missing_ok=True)  # stale: its process is gone
    secured, credentials = _secure_setup(settings, secure, progress)
    if secured is not None:
        _check_port(cert_port(settings), " (for client certificates, broker port + 2)")
    for node in down:
        properties = _server_properties(settings, settings.kafka_version, secured, node, cluster)
        if secured is None:
            node.props.write_text(properties)
        else:  # it holds the admin's password
            security.write_private(node.props, properties.encode())
    (broker_dir / "log4j2.properties").write_text(_LOG4J2)
    if count > 1:
        _count_path(settings).write_text(f"{count}\n")
    _format_storage(java, libs, settings, progress, scram=credentials or None, nodes=down)
    if secured is not None and not _secure_marker(settings).is_file():
        _secure_marker(settings).write_text("formatted with SCRAM users: clients need SASL_SSL\n")

    bootstrap = ",".join(n.bootstrap for n in cluster)
    if count == 1:
        progress(f"starting Kafka {settings.kafka_version} on {bootstrap} ...")
    else:
        which = ", ".join(f"node {n.id} on {n.port} (controller {n.controller_port})" for n in down)
        progress(f"starting Kafka {settings.kafka_version}, {len(down)} of {count} nodes on 127.0.0.1: {which} ...")
    launched = [(node, _launch(java, libs, settings, node)) for node in down]
    admin = admin_settings(settings)
    try:
        for node, proc in launched:
            _wait_ready(proc, admin, node.bootstrap, node.log, "broker" if count == 1 else f"node {node.id}")
        if count > 1:
            _wait_joined(admin, cluster)
        _create_topics(admin, bootstrap, progress)
        if secured is not None:
            _grant(admin, bootstrap, progress, credentials)
    except BaseException:
        for node, _ in launched:
            stop(settings, timeout=10, node=node.id)
        raise
    return status(settings)


def _launch(java: str, libs: Path, settings: Settings, node: Node) -> subprocess.Popen[bytes]:
    log = node.log
    if log.exists() and log.stat().st_size:
        log.replace(log.with_name(log.name + ".1"))  # keep the previous run's log, bounded
    main = ["kafka.Kafka", str(node.props)]
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            _java_cmd(java, libs, settings, main, HEAP_OPTS + JVM_OPTS),
            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=node.dir,
            start_new_session=True,  # own session: outlives the CLI, untouched by its Ctrl-C
        )  # fmt: skip
    _children[proc.pid] = proc
    node.pid_path.write_text(f"{proc.pid}\n")
    return proc


def stop(settings: Settings, timeout: float = 30, node: int | None = None) -> bool:
    """SIGTERM first, so the broker shuts down in a controlled way and its next start needs no
    log recovery; SIGKILL only when it has not exited within ``timeout`` seconds. Every node
    at once (one by one, the last would wait for a controller quorum that is gone), or only
    ``node``. True when something was running."""
    nodes = _nodes(settings)
    if node is not None:
        nodes = [n for n in nodes if n.id == node]
        if not nodes:
            raise BrokerError(f"--node {node}: this home's broker has nodes 1 to {len(_nodes(settings))}")
    pids = {n.id: pid for n in nodes if (pid := _read_pid(n)) is not None}
    running = [pid for n in nodes if (pid := pids.get(n.id)) is not None and _is_ours(n, pid)]
    for sig, patience in ((signal.SIGTERM, timeout), (signal.SIGKILL, 10.0)):
        alive = [pid for pid in running if _alive(pid)]
        for pid in alive:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + patience
        while any(_alive(pid) for pid in alive) and time.monotonic() < deadline:
            time.sleep(0.1)
    for pid in pids.values():
        child = _children.pop(pid, None)
        if child is not None and child.poll() is None:
            child.wait(timeout=5)
    for n in nodes:
        n.pid_path.unlink(missing_ok=True)
    return bool(running)


# -- command line -------------------------------------------------------------------------


def _describe(st: BrokerStatus) -> str:
    if len(st.nodes) > 1:
        return f"{st.bootstrap} (Kafka {st.version}, {len(st.nodes)} nodes)"
    return f"{st.bootstrap} (Kafka {st.version}, pid {st.pid}{', SASL_SSL' if st.secure else ''})"


def _print_nodes(settings: Settings, st: BrokerStatus) -> None:
    """Each node of a cluster, then where its log and data are: node by node, a user can
    stop, kill and restart them to see failover."""
    if len(st.nodes) > 1:
        for n in st.nodes:
            port = n.controller.rsplit(":", 1)[1]
            print(f"node {n.id}: {n.bootstrap} (controller {port}), " + (f"pid {n.pid}, up" if n.pid else "down"))
        print(f"log: {settings.broker_dir / 'node-<id>' / 'broker.log'}")
        print(f"data: {settings.broker_dir / 'node-<id>' / 'data'}")
    else:
        print(f"log: {st.log}")
        print(f"data: {st.data_dir}")


def _print_access(settings: Settings) -> None:
    """Where a client finds what it needs; the passwords themselves are never printed."""
    others = ", ".join(p for p in _principals(settings) if p != security.ADMIN)
    print(f"access: SASL_SSL with {', '.join(security.SASL)}, ACLs for {others} (admin: super user)")
    print(f"client certificates (mTLS): 127.0.0.1:{cert_port(settings)}, {_tls_dir(settings) / 'clients'}")
    print(f"credentials: {_credentials_path(settings)} (readable by you only; LIFECYCLE_KAFKA_USER picks one)")
    print(f"ca: {_tls_dir(settings) / 'ca.pem'}")


def main_broker(args: list[str]) -> int:
    """``lifecycle broker start|stop|status``; exit 0 on success, 1 on error, 3 for "not running"
    (``status`` of a cluster: not every node running)."""
    parser = argparse.ArgumentParser(
        prog="lifecycle broker",
        description="A local Apache Kafka (KRaft) for development: one node, or a cluster of several.",
    )
    parser.add_argument("action", choices=["start", "stop", "status"])
    parser.add_argument(
        "--secure", action="store_true",
        help="start: SASL/SCRAM over TLS and ACLs (formats a new home that way; a secured home stays so)",
    )  # fmt: skip
    parser.add_argument(
        "--nodes", type=int, metavar="N",
        help="start: N KRaft nodes on neighbouring ports (default: what the home has, else 1)",
    )  # fmt: skip
    parser.add_argument("--node", type=int, metavar="ID", help="stop: only this node of the cluster")
    ns = parser.parse_args(args)

    def progress(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    try:
        settings = Settings.from_env()
        _start_count(settings, ns.nodes, ns.secure)  # what this home cannot run: said before anything else
        if ns.action == "start":
            before = status(settings)
            if before.running:
                print(f"broker already running: {_describe(before)}")
            else:
                t0 = time.monotonic()
                st = start(settings, progress, secure=ns.secure, nodes=ns.nodes)
                print(f"broker started: {_describe(st)} in {time.monotonic() - t0:.1f} s")
            _print_nodes(settings, status(settings))
            if status(settings).secure:
                _print_access(settings)
            return 0
        if ns.action == "stop":
            before = status(settings)
            pids = [n.pid for n in before.nodes if n.pid is not None and ns.node in (None, n.id)]
            t0 = time.monotonic()
            what = "broker" if ns.node is None else f"node {ns.node}"
            if stop(settings, node=ns.node):
                took = f"in {time.monotonic() - t0:.1f} s"
                if len(pids) == 1:
                    print(f"{what} stopped (pid {pids[0]}) {took}")
                else:
                    print(f"{what} stopped ({len(pids)} nodes, pids {', '.join(map(str, pids))}) {took}")
            else:
                print(f"{what} was not running")
            return 0
        st = status(settings)
        up = sum(1 for n in st.nodes if n.running)
        if st.running:
            print(f"broker running: {_describe(st)}")
        elif up:
            print(
                f"broker partly running: {up} of {len(st.nodes)} nodes up ({st.bootstrap}); `lifecycle broker start` starts the others"
            )
        else:
            print(f"broker not running (would listen on {st.bootstrap})")
        _print_nodes(settings, st)
        if st.secure:
            _print_access(settings)
        return 0 if st.running else 3
    except (BrokerError, SettingsError, PolicyError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 1
