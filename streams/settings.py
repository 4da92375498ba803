"""Settings from the environment (``LIFECYCLE_*``), with defaults for the local broker.

One frozen object is read once per process and handed around, so that a test can build
its own (``Settings.from_env(env)``) without touching ``os.environ``.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from pathlib import Path

from processors.policy import Policy, PolicyError, parse_policy
from processors.shredding import Keyring, KeyringError, new_master_key_text, parse_master_key


class SettingsError(ValueError):
    """A ``LIFECYCLE_*`` variable holds a value we cannot use; the message names it."""


def _home(env: Mapping[str, str], var: str, xdg: str, fallback: str) -> Path:
    if env.get(var):
        return Path(env[var]).expanduser()
    base = env.get(xdg) or str(Path.home() / fallback)
    return Path(base).expanduser() / "data-lifecycle"


def _int(env: Mapping[str, str], var: str, default: int) -> int:
    raw = env.get(var)
    if raw in (None, ""):
        return default
    try:
        return int(raw)
    except ValueError:
        raise SettingsError(f"{var}={raw!r}: not an integer") from None


GUARANTEES = ("at_least_once", "exactly_once")


def _choice(env: Mapping[str, str], var: str, options: tuple[str, ...]) -> str:
    """One of ``options`` (the first when unset); anything else is a one-line error."""
    value = env.get(var) or options[0]
    if value not in options:
        raise SettingsError(f"{var}={value!r}: expected one of {', '.join(options)}")
    return value


MECHANISMS = ("SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN", "mTLS")
"""How a client logs in to a secured Kafka (``LIFECYCLE_KAFKA_MECHANISM``); the first is the
default. The SASL ones always run over TLS; ``mTLS`` is a client certificate instead."""


def _mechanism(env: Mapping[str, str]) -> str:
    """One of MECHANISMS, matched without regard to case (``scram-sha-256`` is meant as it
    reads); anything else is a one-line error. A SASL mechanism without a user to log in as
    would be silently ignored, so that too is said at once."""
    raw = env.get("LIFECYCLE_KAFKA_MECHANISM", "")
    if not raw:
        return MECHANISMS[0]
    found = next((m for m in MECHANISMS if m.lower() == raw.strip().lower()), None)
    if found is None:
        raise SettingsError(f"LIFECYCLE_KAFKA_MECHANISM={raw!r}: expected one of {', '.join(MECHANISMS)}")
    if found != "mTLS" and not env.get("LIFECYCLE_KAFKA_USER"):
        raise SettingsError(f"LIFECYCLE_KAFKA_MECHANISM={found} needs LIFECYCLE_KAFKA_USER (the principal to log in as)")
    return found


def _path(env: Mapping[str, str], var: str) -> Path | None:
    return Path(env[var]).expanduser() if env.get(var) else None


@dataclass(frozen=True)
class Settings:
    bootstrap: str = "127.0.0.1:9092"
    topic_prefix: str = ""
    app_id: str = "data-lifecycle"
    home: Path = field(default_factory=lambda: Path.home() / ".local/share/data-lifecycle")
    cache: Path = field(default_factory=lambda: Path.home() / ".cache/data-lifecycle")
    kafka_version: str = "4.1.1"
    broker_port: int = 9092
    partitions: int = 4
    policy_file: Path | None = None
    web_port: int = 6066
    worker_url: str = "http://127.0.0.1:6066"
    api_token: str = ""
    store: str = "rocksdb://"
    timer_interval: float = 60.0
    # the fold takes up to fold_batch events at a time, waiting at most fold_linger seconds
    # for a batch to fill: one delivery wait per batch instead of one per event
    fold_batch: int = 500
    fold_linger: float = 0.02
    ingest_retention_ms: int = 24 * 3600 * 1000
    compaction_lag_ms: int = 60_000
    # how far an event's occurred_at may run ahead of the broker's clock (honest drift between
    # an upstream system's clock and the broker's) before the guard refuses it as future_time
    clock_skew_ms: int = 300_000
    # copies of every topic the project creates (0: the smaller of 3 and the cluster's broker
    # count) and the copies a write needs (0: 2 when there are 3 or more, else 1)
    replication: int = 0
    min_insync: int = 0
    # how long a compacted topic keeps a tombstone: the longest a downstream consumer may be
    # away and still see a deletion (the erased value itself goes with compaction regardless)
    tombstone_retention_ms: int = 7 * 24 * 3600 * 1000
    # at_least_once: a batch folded again after a crash may write its log entries twice (the
    # replay counts byte-identical copies); exactly_once: each batch is one Kafka transaction
    guarantee: str = "at_least_once"
    master_key: str = field(default="", repr=False)
    master_key_file: Path | None = None
    # Who this process is on a secured Kafka (SASL_SSL, SCRAM); empty: PLAINTEXT, no principal.
    # The password and the CA default to what `lifecycle broker start --secure` wrote into the
    # home (see streams/plumbing/security.py), so they are looked up when a client is made, not here.
    kafka_user: str = ""
    kafka_password: str = field(default="", repr=False)
    kafka_credentials: Path | None = None
    kafka_ca: Path | None = None
    # SCRAM-SHA-512 (the default), SCRAM-SHA-256 or PLAIN over SASL_SSL, or mTLS: a client
    # certificate (PEM) whose CN the broker takes for the principal; cert and key default to the
    # local broker's files for kafka_user, so they too are looked up when a client is made.
    kafka_mechanism: str = "SCRAM-SHA-512"
    kafka_cert: Path | None = None
    kafka_key: Path | None = None
    kafka_key_password: str = field(default="", repr=False)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        port = _int(env, "LIFECYCLE_BROKER_PORT", 9092)
        policy = env.get("LIFECYCLE_POLICY")
        try:
            interval = float(env.get("LIFECYCLE_TIMER_INTERVAL") or 60.0)
        except ValueError:
            raise SettingsError("LIFECYCLE_TIMER_INTERVAL: not a number of seconds") from None
        return cls(
            bootstrap=env.get("LIFECYCLE_BOOTSTRAP") or f"127.0.0.1:{port}",
            topic_prefix=env.get("LIFECYCLE_TOPIC_PREFIX", ""),
            app_id=env.get("LIFECYCLE_APP_ID") or "data-lifecycle",
            home=_home(env, "LIFECYCLE_HOME", "XDG_DATA_HOME", ".local/share"),
            cache=_home(env, "LIFECYCLE_CACHE", "XDG_CACHE_HOME", ".cache"),
            kafka_version=env.get("LIFECYCLE_KAFKA_VERSION") or "4.1.1",
            broker_port=port,
            partitions=_int(env, "LIFECYCLE_PARTITIONS", 4),
            policy_file=Path(policy).expanduser() if policy else None,
            web_port=_int(env, "LIFECYCLE_WEB_PORT", 6066),
            worker_url=env.get("LIFECYCLE_WORKER_URL") or f"http://127.0.0.1:{_int(env, 'LIFECYCLE_WEB_PORT', 6066)}",
            api_token=env.get("LIFECYCLE_API_TOKEN", ""),
            store=env.get("LIFECYCLE_STORE") or "rocksdb://",
            timer_interval=interval,
            fold_batch=max(1, _int(env, "LIFECYCLE_FOLD_BATCH", 500)),
            fold_linger=max(0.001, _int(env, "LIFECYCLE_FOLD_LINGER_MS", 20) / 1000),
            ingest_retention_ms=_int(env, "LIFECYCLE_INGEST_RETENTION_MS", 24 * 3600 * 1000),
            compaction_lag_ms=_int(env, "LIFECYCLE_COMPACTION_LAG_MS", 60_000),
            clock_skew_ms=max(0, _int(env, "LIFECYCLE_CLOCK_SKEW_MS", 300_000)),
            replication=max(0, _int(env, "LIFECYCLE_REPLICATION", 0)),
            min_insync=max(0, _int(env, "LIFECYCLE_MIN_INSYNC", 0)),
            tombstone_retention_ms=max(0, _int(env, "LIFECYCLE_TOMBSTONE_RETENTION_MS", 7 * 24 * 3600 * 1000)),
            guarantee=_choice(env, "LIFECYCLE_GUARANTEE", GUARANTEES),
            master_key=env.get("LIFECYCLE_MASTER_KEY", ""),
            master_key_file=Path(env["LIFECYCLE_MASTER_KEY_FILE"]).expanduser() if env.get("LIFECYCLE_MASTER_KEY_FILE") else None,
            kafka_user=env.get("LIFECYCLE_KAFKA_USER", ""),
            kafka_password=env.get("LIFECYCLE_KAFKA_PASSWORD", ""),
            kafka_credentials=_path(env, "LIFECYCLE_KAFKA_CREDENTIALS"),
            kafka_ca=_path(env, "LIFECYCLE_KAFKA_CA"),
            kafka_mechanism=_mechanism(env),
            kafka_cert=_path(env, "LIFECYCLE_KAFKA_CERT"),
            kafka_key=_path(env, "LIFECYCLE_KAFKA_KEY"),
            kafka_key_password=env.get("LIFECYCLE_KAFKA_KEY_PASSWORD", ""),
        )

    def to_env(self) -> dict[str, str]:
        """The variables that rebuild these settings in a child process (a worker, say)."""
        env = {
            "LIFECYCLE_BOOTSTRAP": self.bootstrap,
            "LIFECYCLE_TOPIC_PREFIX": self.topic_prefix,
            "LIFECYCLE_APP_ID": self.app_id,
            "LIFECYCLE_HOME": str(self.home),
            "LIFECYCLE_CACHE": str(self.cache),
            "LIFECYCLE_KAFKA_VERSION": self.kafka_version,
            "LIFECYCLE_BROKER_PORT": str(self.broker_port),
            "LIFECYCLE_PARTITIONS": str(self.partitions),
            "LIFECYCLE_WEB_PORT": str(self.web_port),
            "LIFECYCLE_WORKER_URL": self.worker_url,
            "LIFECYCLE_API_TOKEN": self.api_token,
            "LIFECYCLE_STORE": self.store,
            "LIFECYCLE_TIMER_INTERVAL": str(self.timer_interval),
            "LIFECYCLE_FOLD_BATCH": str(self.fold_batch),
            "LIFECYCLE_FOLD_LINGER_MS": str(round(self.fold_linger * 1000)),
            "LIFECYCLE_INGEST_RETENTION_MS": str(self.ingest_retention_ms),
            "LIFECYCLE_COMPACTION_LAG_MS": str(self.compaction_lag_ms),
            "LIFECYCLE_CLOCK_SKEW_MS": str(self.clock_skew_ms),
            "LIFECYCLE_REPLICATION": str(self.replication),
            "LIFECYCLE_MIN_INSYNC": str(self.min_insync),
            "LIFECYCLE_TOMBSTONE_RETENTION_MS": str(self.tombstone_retention_ms),
            "LIFECYCLE_GUARANTEE": self.guarantee,
        }
        if self.policy_file is not None:
            env["LIFECYCLE_POLICY"] = str(self.policy_file)
        if self.master_key:
            env["LIFECYCLE_MASTER_KEY"] = self.master_key
        if self.master_key_file is not None:
            env["LIFECYCLE_MASTER_KEY_FILE"] = str(self.master_key_file)
        if self.kafka_user:
            env["LIFECYCLE_KAFKA_USER"] = self.kafka_user
        if self.kafka_password:
            env["LIFECYCLE_KAFKA_PASSWORD"] = self.kafka_password
        if self.kafka_credentials is not None:
            env["LIFECYCLE_KAFKA_CREDENTIALS"] = str(self.kafka_credentials)
        if self.kafka_ca is not None:
            env["LIFECYCLE_KAFKA_CA"] = str(self.kafka_ca)
        if self.kafka_user or self.kafka_mechanism == "mTLS":  # a mechanism alone means nothing
            env["LIFECYCLE_KAFKA_MECHANISM"] = self.kafka_mechanism
        if self.kafka_cert is not None:
            env["LIFECYCLE_KAFKA_CERT"] = str(self.kafka_cert)
        if self.kafka_key is not None:
            env["LIFECYCLE_KAFKA_KEY"] = str(self.kafka_key)
        if self.kafka_key_password:
            env["LIFECYCLE_KAFKA_KEY_PASSWORD"] = self.kafka_key_password
        return env

    def topic(self, name: str) -> str:
        """The full name of one of DESIGN's topics (``events`` → ``lifecycle.events``)."""
        return f"{self.topic_prefix}lifecycle.{name}"

    def token(self) -> str:
        """The bearer token of the worker's HTTP views.

        ``LIFECYCLE_API_TOKEN`` when set; otherwise a random token kept in ``$LIFECYCLE_HOME/api-token``
        (created on first use, readable by its owner only), so that a worker and the CLI of the
        same user agree without anyone choosing a password, and no view is ever open without one.
        """
        if self.api_token:
            return self.api_token
        path = self.home / "api-token"
        try:
            return path.read_text().strip()
        except FileNotFoundError:
            pass
        self.home.mkdir(parents=True, exist_ok=True)
        fresh = secrets.token_urlsafe(32)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:  # another process won the race: use its token
            return path.read_text().strip()
        with os.fdopen(fd, "w") as fh:
            fh.write(fresh + "\n")
        return fresh

    def keyring(self, dev: bool = False, create: bool = True) -> Keyring:
        """The master keyring: ``LIFECYCLE_MASTER_KEY``, else ``LIFECYCLE_MASTER_KEY_FILE``, else
        (only with ``dev``) a development key in ``$LIFECYCLE_HOME/master-key``, created on first
        use unless ``create`` is False."""
        return load_keyring(self.master_key, self.master_key_file, self.home / "master-key" if dev else None, create)

    @property
    def broker_dir(self) -> Path:
        return self.home / "broker"

    @property
    def worker_dir(self) -> Path:
        return self.home / "worker" / self.app_id


def load_keyring(env_key: str, key_file: Path | None, dev_file: Path | None, create: bool = True) -> Keyring:
    """The master keyring from, in order: ``LIFECYCLE_MASTER_KEY`` (one key), a key file (one
    key a line, the first current), or, in development only, a key file created on first use
    with owner-only permissions (``create=False``: only one that exists: a reader such as the
    replay must never mint a key). Without any of them the worker must not start."""
    if env_key:
        return Keyring.of(parse_master_key(env_key, "LIFECYCLE_MASTER_KEY"))
    if key_file is not None:
        try:
            return Keyring.from_lines(key_file.read_text(), str(key_file))
        except OSError as exc:
            raise KeyringError(f"cannot read the master key file {key_file}: {exc.strerror}") from None
    if dev_file is None:
        raise KeyringError(
            "no master key: set LIFECYCLE_MASTER_KEY (32 bytes, base64) or LIFECYCLE_MASTER_KEY_FILE, "
            "or run with --dev to use a development key kept in LIFECYCLE_HOME"
        )
    if not dev_file.exists():
        if not create:
            raise KeyringError(
                f"no development master key in {dev_file} (LIFECYCLE_HOME): it is made by `lifecycle worker --dev`"
            )
        dev_file.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(dev_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            fd = -1  # another process created it first
        if fd >= 0:
            with os.fdopen(fd, "w") as fh:
                fh.write("# development master key, created by lifecycle --dev; not for production\n")
                fh.write(new_master_key_text() + "\n")
    return Keyring.from_lines(dev_file.read_text(), str(dev_file))


def packaged_policy_text() -> str:
    """The policy shipped with the package, as text (a starting point for one's own)."""
    return resources.files("processors").joinpath("policy.toml").read_text(encoding="utf-8")


@lru_cache(maxsize=1)
def _packaged() -> Policy:
    return parse_policy(packaged_policy_text(), "policy.toml")


def load_policy(path: Path | None = None) -> Policy:
    """The policy in ``path``, or the one shipped with the package (loaded once) if None."""
    if path is None:
        return _packaged()
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise PolicyError(f"{path.name}: cannot read the policy file: {exc.strerror or exc}") from None
    return parse_policy(text, path.name)
