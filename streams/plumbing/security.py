"""Who a client is on a secured Kafka: the one place that turns settings into client options.

Why one place: every client (kafka-python's producers, consumers and admin clients, and the
librdkafka clients of the worker and the replay, see ``streams.plumbing.scan``) must agree on the protocol, the mechanism, the principal and the CA. A client built
without them falls back to PLAINTEXT, which a TLS port answers with silence, so a forgotten
option looks like a dead broker.

Security is on when ``LIFECYCLE_KAFKA_USER`` names a principal; then every client speaks
SASL_SSL with ``LIFECYCLE_KAFKA_MECHANISM`` (SCRAM-SHA-512 unless it says SCRAM-SHA-256 or
PLAIN; PLAIN only ever over TLS, as it sends the password itself). With ``mTLS`` the client
speaks SSL and shows a certificate instead (``LIFECYCLE_KAFKA_CERT`` and ``LIFECYCLE_KAFKA_KEY``,
by default the local broker's for ``LIFECYCLE_KAFKA_USER``); the broker takes its CN for the
principal, so the same ACLs apply whichever way a principal logs in. The password is ``LIFECYCLE_KAFKA_PASSWORD``, else that user's
entry in the credentials file that ``lifecycle broker start --secure`` wrote (readable by its
owner only), so a user of the local broker never copies a password around. Without a user,
everything stays PLAINTEXT, exactly as before.

Nothing here logs, and no message carries a password.
"""

from __future__ import annotations

import json
import os
import secrets
import ssl
from pathlib import Path
from typing import Any

from processors.policy import Policy
from streams.settings import Settings, SettingsError

PROTOCOL = "SASL_SSL"
MECHANISM = "SCRAM-SHA-512"
"""The default mechanism, and the one the local broker's own principal uses between its listeners."""
SCRAM = ("SCRAM-SHA-512", "SCRAM-SHA-256")
SASL = (*SCRAM, "PLAIN")
MTLS = "mTLS"
ADMIN = "admin"
PRINCIPALS = (ADMIN, "worker", "upstream", "downstream", "auditor")
"""The pipeline's own principals. ``admin`` is the broker's own principal and a super user;
what the others may do is in ``streams/broker/acls.py``. Each consumer the policy registers
has a principal of its own besides them (``consumer_principals``)."""


def consumer_principals(policy: Policy) -> tuple[str, ...]:
    """One principal per consumer of ``policy``, named after it, so the broker can tell which
    consumer asks and serve it only its own feeds (purpose limitation, enforced by the ACLs).

    A consumer named like one of the pipeline's own principals is refused: it would log in
    with that principal's password and rights (``admin``'s are everything).
    """
    taken = sorted(set(policy.consumer_names) & set(PRINCIPALS))
    if taken:
        raise SettingsError(
            f"consumer {taken[0]!r}: the name of one of the pipeline's own Kafka principals "
            f"({', '.join(PRINCIPALS)}); rename the consumer in the policy file"
        )
    return policy.consumer_names


def principals(policy: Policy) -> tuple[str, ...]:
    """Everyone who logs in to a secured broker: the pipeline's principals and the consumers'."""
    return (*PRINCIPALS, *consumer_principals(policy))


def credentials_path(settings: Settings) -> Path:
    return settings.kafka_credentials or settings.home / "kafka-credentials"


def ca_path(settings: Settings) -> Path:
    return settings.kafka_ca or settings.broker_dir / "tls" / "ca.pem"


def secured(settings: Settings) -> bool:
    return bool(settings.kafka_user) or settings.kafka_mechanism == MTLS


def client_cert_paths(tls_dir: Path, user: str) -> tuple[Path, Path]:
    """(certificate, private key) the local broker issued to ``user``, next to its CA."""
    return tls_dir / "clients" / f"{user}.pem", tls_dir / "clients" / f"{user}-key.pem"


def _client_cert(settings: Settings) -> tuple[str, str]:
    """The certificate and key files of an mTLS login, each checked to exist (one line naming
    the setting otherwise: a missing file would surface as a handshake the broker drops)."""
    default_cert, default_key = (
        client_cert_paths(settings.broker_dir / "tls", settings.kafka_user) if settings.kafka_user else (None, None)
    )
    found: list[str] = []
    for var, given, default in (
        ("LIFECYCLE_KAFKA_CERT", settings.kafka_cert, default_cert),
        ("LIFECYCLE_KAFKA_KEY", settings.kafka_key, default_key),
    ):
        path = given or default
        if path is None:
            raise SettingsError(f"LIFECYCLE_KAFKA_MECHANISM=mTLS needs {var} (a PEM file) or LIFECYCLE_KAFKA_USER")
        if not path.is_file():
            raise SettingsError(f"{var}: no such file {path}")
        found.append(str(path))
    _key_opens(Path(found[1]), settings.kafka_key_password)
    return found[0], found[1]


def _key_opens(path: Path, password: str) -> None:
    """The client key opens with the password given. Checked here because neither library
    says so usefully: librdkafka refuses to create the client with "ssl.key.location failed:
    PEM lib", kafka-python fails at its first connection. An unencrypted key with a password
    set opens (both libraries ignore the password then)."""
    from cryptography.hazmat.primitives import serialization

    try:
        serialization.load_pem_private_key(path.read_bytes(), password.encode() if password else None)
    except TypeError:  # encrypted without a password, or a password for a key that needs none
        if not password:
            raise SettingsError(f"LIFECYCLE_KAFKA_KEY: {path} is encrypted: set LIFECYCLE_KAFKA_KEY_PASSWORD") from None
    except ValueError:
        raise SettingsError(
            f"LIFECYCLE_KAFKA_KEY: {path} does not open with LIFECYCLE_KAFKA_KEY_PASSWORD "
            "(a wrong password, or not a PEM private key)"
        ) from None


def read_credentials(path: Path) -> dict[str, str]:
    """principal -> password; empty when the file does not exist yet."""
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError):
        raise SettingsError(f"{path}: not a readable credentials file") from None
    if not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values()):
        raise SettingsError(f"{path}: not a credentials file (a JSON object of principal to password)")
    return data


def ensure_credentials(path: Path, names: tuple[str, ...] = PRINCIPALS) -> dict[str, str]:
    """A random password for each principal in ``names``, kept in ``path`` (created 0600, never widened).

    Passwords already there are kept: they are stored salted in the broker's metadata and
    would otherwise no longer match.
    """
    current = read_credentials(path)
    missing = [p for p in names if p not in current]
    if not missing:
        return current
    fresh = {**current, **{p: secrets.token_urlsafe(24) for p in missing}}
    write_private(path, (json.dumps(fresh, indent=1, sort_keys=True) + "\n").encode())
    return fresh


def write_private(path: Path, data: bytes) -> None:
    """Created 0600 from the start and renamed into place, so a secret is never readable by
    others, not even for a moment, and never half written."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    tmp.replace(path)


def password(settings: Settings) -> str:
    if settings.kafka_password:
        return settings.kafka_password
    path = credentials_path(settings)
    found = read_credentials(path).get(settings.kafka_user)
    if found is None:
        raise SettingsError(
            f"LIFECYCLE_KAFKA_USER={settings.kafka_user}: no password (set LIFECYCLE_KAFKA_PASSWORD, "
            f"or LIFECYCLE_KAFKA_CREDENTIALS to a file that has one; {path} has none)"
        )
    return found


def _ca(settings: Settings) -> str:
    path = ca_path(settings)
    if not path.is_file():
        raise SettingsError(f"LIFECYCLE_KAFKA_CA: no CA certificate at {path}")
    return str(path)


def client_kwargs(settings: Settings) -> dict[str, Any]:
    """Options for any kafka-python client; empty (PLAINTEXT, the library's default) when
    no principal is configured."""
    if not secured(settings):
        return {}
    if settings.kafka_mechanism == MTLS:
        cert, key = _client_cert(settings)
        return {
            "security_protocol": "SSL",
            "ssl_cafile": _ca(settings),
            "ssl_certfile": cert,
            "ssl_keyfile": key,
            "ssl_password": settings.kafka_key_password or None,
            "ssl_check_hostname": True,
        }
    return {
        "security_protocol": PROTOCOL,
        "sasl_mechanism": settings.kafka_mechanism,
        "sasl_plain_username": settings.kafka_user,
        "sasl_plain_password": password(settings),
        "ssl_cafile": _ca(settings),
        "ssl_check_hostname": True,
    }


def login_hint(settings: Settings) -> str:
    """What to check when a secured broker never answers: a refused login looks exactly like
    a dead broker to a client (it retries until its bootstrap timeout), so a message naming
    only the address would send the reader to the wrong setting. Names settings, never values."""
    if not secured(settings):
        return ""
    if settings.kafka_mechanism == MTLS:
        return ", or it refused the client certificate (LIFECYCLE_KAFKA_CERT, LIFECYCLE_KAFKA_KEY, LIFECYCLE_KAFKA_CA)"
    return (
        f", or it refused the login as {settings.kafka_user} with {settings.kafka_mechanism} "
        "(LIFECYCLE_KAFKA_PASSWORD, LIFECYCLE_KAFKA_MECHANISM, LIFECYCLE_KAFKA_CA)"
    )


def ssl_context(settings: Settings) -> ssl.SSLContext:
    """Trusts our CA only (not the system store) and checks the broker's name, as kafka-python does."""
    return ssl.create_default_context(cafile=_ca(settings))


def librdkafka_security(settings: Settings) -> dict[str, Any]:
    """The project's kafka-python security options in librdkafka's words (empty: PLAINTEXT)."""
    kw = client_kwargs(settings)
    if not kw:
        return {}
    if kw["security_protocol"] == "SSL":
        conf = {
            "security.protocol": "SSL",
            "ssl.ca.location": kw["ssl_cafile"],
            "ssl.certificate.location": kw["ssl_certfile"],
            "ssl.key.location": kw["ssl_keyfile"],
        }
        if kw["ssl_password"]:
            conf["ssl.key.password"] = kw["ssl_password"]
        return conf
    return {
        "security.protocol": kw["security_protocol"],
        "sasl.mechanisms": kw["sasl_mechanism"],
        "sasl.username": kw["sasl_plain_username"],
        "sasl.password": kw["sasl_plain_password"],
        "ssl.ca.location": kw["ssl_cafile"],
    }
