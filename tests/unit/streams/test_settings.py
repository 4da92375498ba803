"""Access control on the local broker (``lifecycle broker start --secure``), on the real thing.

One secured broker for the module: SASL/SCRAM-SHA-512 over TLS, the ACLs of ``streams/broker/acls.py``.
Every principal does what its role needs, and every step outside it is refused: an
authorization error from the project's readers, producers and admin calls, never an empty
read (a subscribing kafka-python consumer reads nothing and logs why). A wrong password, a
plaintext client on the TLS port and a client that does not trust our CA never get in. No
password shows up in a log or a message, and the files holding them are the user's alone.
"""

from __future__ import annotations

import base64
import dataclasses
import stat
from pathlib import Path

import pytest
from kafka.errors import AuthorizationError

import streams
from processors.shredding import KeyringError, master_key_id, new_master_key_text, parse_master_key
from streams.broker import local as broker
from streams.broker.tls import ensure_tls
from streams.plumbing import admin, security
from streams.settings import Settings, SettingsError, load_keyring, load_policy


def passwords(s: Settings) -> dict[str, str]:
    return security.read_credentials(s.home / "kafka-credentials")


# -- what each principal may do ----------------------------------------------------------


# -- what each principal may not do ------------------------------------------------------


def refused(exc: BaseException) -> bool:
    """An authorization error, possibly wrapped: a producer with WRITE on no topic at all (the
    auditor) is refused its producer id first, which kafka-python reports inside a KafkaError."""
    return isinstance(exc, AuthorizationError) or "AuthorizationFailedError" in str(exc)


# -- who gets in at all ------------------------------------------------------------------


# -- the worker, end to end over SASL_SSL -------------------------------------------------


# -- secrets stay secret; a secured home stays secured ------------------------------------


# -- no broker needed ---------------------------------------------------------------------


def test_without_a_principal_clients_stay_plaintext() -> None:
    s = Settings()
    assert security.client_kwargs(s) == {} and security.librdkafka_security(s) == {}
    assert admin.check_topic_access(s.bootstrap, "any", {}) is None


def test_security_settings_from_the_environment(tmp_path: Path) -> None:
    env = {
        "LIFECYCLE_HOME": str(tmp_path),
        "LIFECYCLE_KAFKA_USER": "worker",
        "LIFECYCLE_KAFKA_PASSWORD": "pw-from-env",
        "LIFECYCLE_KAFKA_CA": str(tmp_path / "ca.pem"),
    }
    s = Settings.from_env(env)
    assert (s.kafka_user, s.kafka_password, s.kafka_ca) == ("worker", "pw-from-env", tmp_path / "ca.pem")
    assert Settings.from_env(s.to_env()) == s  # what a spawned worker receives
    assert "pw-from-env" not in repr(s)
    with pytest.raises(SettingsError, match="no CA certificate"):
        security.client_kwargs(s)
    (tmp_path / "ca.pem").write_text("x")
    assert security.client_kwargs(s)["sasl_plain_password"] == "pw-from-env"

    # no password given: the one `broker start --secure` wrote into the home
    security.ensure_credentials(tmp_path / "kafka-credentials")
    s = Settings.from_env({k: v for k, v in env.items() if k != "LIFECYCLE_KAFKA_PASSWORD"})
    assert security.password(s) == passwords(s)["worker"]
    with pytest.raises(SettingsError, match=r"^LIFECYCLE_KAFKA_USER=nobody: no password") as info:
        security.password(dataclasses.replace(s, kafka_user="nobody"))
    assert all(p not in str(info.value) for p in passwords(s).values())


@pytest.mark.parametrize("mechanism", ["SCRAM-SHA-512", "scram-sha-256", "PLAIN"])
def test_each_sasl_mechanism_configures_both_libraries_alike_and_always_over_tls(tmp_path: Path, mechanism: str) -> None:
    (tmp_path / "ca.pem").write_text("x")
    env = {
        "LIFECYCLE_HOME": str(tmp_path), "LIFECYCLE_KAFKA_USER": "worker", "LIFECYCLE_KAFKA_PASSWORD": "pw",
        "LIFECYCLE_KAFKA_CA": str(tmp_path / "ca.pem"), "LIFECYCLE_KAFKA_MECHANISM": mechanism,
    }  # fmt: skip
    s = Settings.from_env(env)
    assert s.kafka_mechanism == mechanism.upper() and Settings.from_env(s.to_env()) == s
    kw, rd = security.client_kwargs(s), security.librdkafka_security(s)
    assert (kw["security_protocol"], kw["sasl_mechanism"]) == ("SASL_SSL", mechanism.upper())
    assert (rd["security.protocol"], rd["sasl.mechanisms"], rd["ssl.ca.location"]) == (
        "SASL_SSL",
        mechanism.upper(),
        kw["ssl_cafile"],
    )
    assert (
        Settings.from_env({k: v for k, v in env.items() if k != "LIFECYCLE_KAFKA_MECHANISM"}).kafka_mechanism == "SCRAM-SHA-512"
    )


def test_mtls_takes_a_certificate_the_local_broker_issued_or_the_one_given(tmp_path: Path) -> None:
    ca = ensure_tls(tmp_path / "broker" / "tls")
    from streams.broker.tls import ensure_client_certs

    assert ensure_client_certs(ca, ("worker",)) == ["worker"] and ensure_client_certs(ca, ("worker",)) == []
    cert, key = security.client_cert_paths(tmp_path / "broker" / "tls", "worker")
    assert stat.S_IMODE(key.stat().st_mode) == 0o600 and stat.S_IMODE(ca.ca_key.stat().st_mode) == 0o600
    env = {"LIFECYCLE_HOME": str(tmp_path), "LIFECYCLE_KAFKA_MECHANISM": "mtls", "LIFECYCLE_KAFKA_USER": "worker"}
    s = Settings.from_env(env)
    assert Settings.from_env(s.to_env()) == s
    kw, rd = security.client_kwargs(s), security.librdkafka_security(s)
    assert kw["security_protocol"] == "SSL" and (kw["ssl_certfile"], kw["ssl_keyfile"]) == (str(cert), str(key))
    assert "sasl_mechanism" not in kw and "sasl_plain_password" not in kw
    assert rd == {
        "security.protocol": "SSL", "ssl.ca.location": str(ca.ca),
        "ssl.certificate.location": str(cert), "ssl.key.location": str(key),
    }  # fmt: skip
    given = Settings.from_env({
        "LIFECYCLE_HOME": str(tmp_path), "LIFECYCLE_KAFKA_MECHANISM": "mTLS", "LIFECYCLE_KAFKA_CA": str(ca.ca),
        "LIFECYCLE_KAFKA_CERT": str(cert), "LIFECYCLE_KAFKA_KEY": str(key), "LIFECYCLE_KAFKA_KEY_PASSWORD": "kp",
    })  # fmt: skip
    assert Settings.from_env(given.to_env()) == given and "kp" not in repr(given)
    assert security.librdkafka_security(given)["ssl.key.password"] == security.client_kwargs(given)["ssl_password"] == "kp"
    with pytest.raises(SettingsError, match=r"^LIFECYCLE_KAFKA_CERT: no such file"):
        security.client_kwargs(dataclasses.replace(given, kafka_cert=tmp_path / "nope.pem"))
    with pytest.raises(SettingsError, match=r"^LIFECYCLE_KAFKA_MECHANISM=mTLS needs LIFECYCLE_KAFKA_CERT"):
        security.client_kwargs(dataclasses.replace(given, kafka_cert=None))


def test_an_encrypted_client_key_opens_with_its_password_and_is_one_line_without_it(tmp_path: Path) -> None:
    from cryptography.hazmat.primitives import serialization

    from streams.broker.tls import ensure_client_certs

    ensure_client_certs(ensure_tls(tmp_path / "broker" / "tls"), ("worker",))
    cert, key = security.client_cert_paths(tmp_path / "broker" / "tls", "worker")
    plain = serialization.load_pem_private_key(key.read_bytes(), None)
    locked = tmp_path / "locked-key.pem"
    locked.write_bytes(
        plain.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.BestAvailableEncryption(b"s3cret-kp")
        )
    )
    env = {"LIFECYCLE_HOME": str(tmp_path), "LIFECYCLE_KAFKA_MECHANISM": "mTLS", "LIFECYCLE_KAFKA_CERT": str(cert),
           "LIFECYCLE_KAFKA_KEY": str(locked)}  # fmt: skip
    opened = Settings.from_env({**env, "LIFECYCLE_KAFKA_KEY_PASSWORD": "s3cret-kp"})
    assert security.librdkafka_security(opened)["ssl.key.password"] == "s3cret-kp"
    with pytest.raises(SettingsError, match=r"^LIFECYCLE_KAFKA_KEY: .* is encrypted: set LIFECYCLE_KAFKA_KEY_PASSWORD$"):
        security.client_kwargs(Settings.from_env(env))
    with pytest.raises(SettingsError, match=r"^LIFECYCLE_KAFKA_KEY: .* does not open with LIFECYCLE_KAFKA_KEY_PASSWORD") as wrong:
        security.client_kwargs(Settings.from_env({**env, "LIFECYCLE_KAFKA_KEY_PASSWORD": "not-it"}))
    assert "not-it" not in str(wrong.value)
    not_a_key = tmp_path / "not-a-key.pem"
    not_a_key.write_text("hello\n")
    with pytest.raises(SettingsError, match=r"does not open"):
        security.client_kwargs(Settings.from_env({**env, "LIFECYCLE_KAFKA_KEY": str(not_a_key)}))


@pytest.mark.parametrize(
    ("env", "message"),
    [
        (
            {"LIFECYCLE_KAFKA_MECHANISM": "GSSAPI", "LIFECYCLE_KAFKA_USER": "w"},
            "LIFECYCLE_KAFKA_MECHANISM='GSSAPI': expected one of SCRAM-SHA-512, SCRAM-SHA-256, PLAIN, mTLS",
        ),
        (
            {"LIFECYCLE_KAFKA_MECHANISM": "PLAIN"},
            "LIFECYCLE_KAFKA_MECHANISM=PLAIN needs LIFECYCLE_KAFKA_USER (the principal to log in as)",
        ),
    ],
)
def test_a_wrong_mechanism_is_one_line_naming_the_variable(env: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError) as info:
        Settings.from_env(env)
    assert str(info.value) == message


def test_the_secured_broker_offers_every_mechanism_and_certificates(tmp_path: Path) -> None:
    files = ensure_tls(tmp_path / "tls")
    props = broker.security_properties(
        broker.Secured(files, "adminpw", {"admin": "adminpw", "mailer": "m-pw"}), ["SECURE"], ["CERTS"]
    )
    assert "sasl.enabled.mechanisms=SCRAM-SHA-512,SCRAM-SHA-256,PLAIN" in props
    assert 'user_mailer="m-pw"' in props and "listener.name.secure.scram-sha-256.sasl.jaas.config=" in props
    assert "listener.name.certs.ssl.client.auth=required" in props
    assert "listener.name.certs.ssl.principal.mapping.rules=RULE:^CN=([^,]+)$/$1/,DEFAULT" in props
    args = broker.scram_args({"mailer": "m-pw"})
    assert args == [
        "--add-scram",
        'SCRAM-SHA-512=[name=mailer,password="m-pw"]',
        "--add-scram",
        'SCRAM-SHA-256=[name=mailer,password="m-pw"]',
    ]


def test_compose_runs_the_files_its_secrets_service_writes(tmp_path: Path) -> None:
    """docker-compose.yml cannot run without Docker: at least it must use the files that
    ``python -m streams.broker.compose`` writes, for the users that own them, with the same
    access-control config as the broker the tests above run."""
    import re

    import yaml

    project = Path(streams.__file__).resolve().parent.parent  # the checkout
    compose = yaml.safe_load((project / "docker-compose.yml").read_text())
    services = compose["services"]
    secrets = services["secrets"]["command"]
    root = Path(secrets[secrets.index("streams.broker.compose") + 1])
    client_uid = int(secrets[secrets.index("--client-uid") + 1])
    assert re.search(rf"--uid {client_uid}\b", (project / "Dockerfile").read_text())
    assert services["kafka"]["user"] == secrets[secrets.index("--kafka-uid") + 1]

    from streams.broker.compose import write_bundle

    write_bundle(tmp_path)
    used = " ".join(
        [*services["kafka"]["command"], *services["kafka"]["healthcheck"]["test"],
         *(services[n]["environment"][v] for n in ("topics", "worker") for v in ("LIFECYCLE_KAFKA_CREDENTIALS", "LIFECYCLE_KAFKA_CA"))]
    )  # fmt: skip
    paths = set(re.findall(rf"{re.escape(str(root))}/[\w./-]+", used))
    assert len(paths) == 5
    for path in paths:
        assert (tmp_path / Path(path).relative_to(root)).is_file(), path
    assert services["worker"]["environment"]["LIFECYCLE_KAFKA_USER"] == "worker"
    assert services["topics"]["environment"]["LIFECYCLE_KAFKA_USER"] == security.ADMIN

    server = (tmp_path / "broker" / "server.properties").read_text()
    assert "listener.security.protocol.map=SECURE:SASL_SSL,SECURE_HOST:SASL_SSL,CONTROLLER:SSL" in server
    creds = security.read_credentials(tmp_path / "clients" / "kafka-credentials")
    assert (
        broker.security_properties(
            broker.Secured(ensure_tls(tmp_path / "broker" / "tls"), creds["admin"], creds), ["SECURE", "SECURE_HOST"]
        )
        in server
    )
    args = (tmp_path / "broker" / "format.args").read_text()
    assert all(f"name={p}," in args for p in security.principals(load_policy(None)))  # a login per consumer too
    for private in ("broker/server.properties", "broker/format.args", "broker/client.properties",
                    "broker/tls/broker.pem", "broker/tls/ca-key.pem", "clients/kafka-credentials"):  # fmt: skip
        assert stat.S_IMODE((tmp_path / private).stat().st_mode) == 0o600, private
    write_bundle(tmp_path)  # a second `up` keeps the passwords (they are formatted into the data)
    assert security.read_credentials(tmp_path / "clients" / "kafka-credentials") == creds


# -- the master keyring -------------------------------------------------------------------


def test_master_key_errors_say_where_and_never_echo_the_key(tmp_path: Path) -> None:
    short = base64.b64encode(b"x" * 16).decode()
    with pytest.raises(KeyringError) as err:
        parse_master_key(short, "LIFECYCLE_MASTER_KEY")
    assert "LIFECYCLE_MASTER_KEY" in str(err.value) and "16 bytes" in str(err.value)
    assert short not in str(err.value)
    with pytest.raises(KeyringError, match="--dev"):
        load_keyring("", None, None)
    with pytest.raises(KeyringError, match="cannot read"):
        load_keyring("", tmp_path / "missing", None)


def test_key_sources_in_order_and_the_dev_key_is_private(tmp_path: Path) -> None:
    text = new_master_key_text()
    assert load_keyring(text, tmp_path / "ignored", None).keys == {
        master_key_id(parse_master_key(text, "")): parse_master_key(text, "")
    }
    ring_file = tmp_path / "ring"
    second = new_master_key_text()
    ring_file.write_text(f"# current first\n{text}\n{second}\n")
    ring = load_keyring("", ring_file, None)
    assert ring.current == master_key_id(parse_master_key(text, "")) and len(ring.keys) == 2

    dev = tmp_path / "home" / "master-key"
    first = load_keyring("", None, dev)
    assert stat.S_IMODE(dev.stat().st_mode) == 0o600
    assert load_keyring("", None, dev).keys == first.keys
