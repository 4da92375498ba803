"""A private certificate authority and one broker certificate, for the local broker's TLS.

Why a CA of our own rather than a self-signed broker certificate: clients then trust one file
(``ca.pem``) that stays valid when the broker certificate is renewed, and the same certificate
also serves as the broker's client certificate towards its controller (mutual TLS), so the
controller port authenticates the broker without a password.

Everything is PEM, which Kafka reads directly (``ssl.keystore.type=PEM``): ``ca.pem`` (public,
for clients) and ``broker.pem`` (the broker's key and certificate chain, readable by its owner
only). The CA's private key is kept in ``ca-key.pem`` (owner only) because the broker also
accepts client certificates (mutual TLS as a login): a consumer registered in the policy later
needs one signed by the same CA. ``clients/<principal>.pem`` and ``clients/<principal>-key.pem``
(owner only) are those certificates, their CN the principal. A home whose CA was made before
(no ``ca-key.pem``) keeps working for passwords; for certificates, delete its ``tls`` directory
once (a new CA: clients fetch ``ca.pem`` again).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from streams.plumbing.security import client_cert_paths, write_private

BROKER_CN = "lifecycle-broker"
"""The broker's principal on the controller listener: ``User:CN=lifecycle-broker``."""

VALID_DAYS = 825  # the longest validity clients (macOS, browsers) still accept for a leaf
DEFAULT_HOSTS = ("localhost", "127.0.0.1")


@dataclass(frozen=True)
class TlsFiles:
    ca: Path
    keystore: Path  # the broker's private key followed by its certificate and the CA's
    ca_key: Path

    def exist(self) -> bool:
        return self.ca.is_file() and self.keystore.is_file()


def tls_files(directory: Path) -> TlsFiles:
    return TlsFiles(directory / "ca.pem", directory / "broker.pem", directory / "ca-key.pem")


def _san(hosts: tuple[str, ...]) -> x509.SubjectAlternativeName:
    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    return x509.SubjectAlternativeName(names)


def ensure_tls(directory: Path, hosts: tuple[str, ...] = DEFAULT_HOSTS) -> TlsFiles:
    """The CA and broker certificate in ``directory``, created on first use and kept after.

    Kept, not renewed at every start, because clients may hold on to ``ca.pem`` (a copy in a
    container, a CI secret). Delete the directory to start over with a new CA.
    """
    files = tls_files(directory)
    if files.exist():
        return files
    directory.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.UTC)
    start, end = now - dt.timedelta(minutes=5), now + dt.timedelta(days=VALID_DAYS)

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "data-lifecycle local CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )

    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, BROKER_CN)]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_san(hosts), critical=False)
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
            critical=False,
        )
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )

    pem = serialization.Encoding.PEM
    pkcs8 = serialization.PrivateFormat.PKCS8
    plain = serialization.NoEncryption()
    write_private(
        files.keystore,
        key.private_bytes(pem, pkcs8, plain) + cert.public_bytes(pem) + ca.public_bytes(pem),
    )
    write_private(files.ca_key, ca_key.private_bytes(pem, pkcs8, plain))
    files.ca.write_bytes(ca.public_bytes(pem))  # last: its presence means the set is complete
    return files


def ensure_client_certs(files: TlsFiles, principals: tuple[str, ...]) -> list[str]:
    """A client certificate, CN the principal, for each of ``principals`` that has none yet;
    returns those issued. Empty when the CA's key is not kept (a CA made before client
    certificates were): the broker then accepts passwords only, as before.

    Kept once issued, like the CA: a client may hold a copy.
    """
    if not files.ca_key.is_file():
        return []
    ca_key = serialization.load_pem_private_key(files.ca_key.read_bytes(), password=None)
    ca = x509.load_pem_x509_certificate(files.ca.read_bytes())
    if not isinstance(ca_key, ec.EllipticCurvePrivateKey):
        raise ValueError(f"{files.ca_key}: not the local CA's key")
    tls_dir = files.ca.parent
    issued: list[str] = []
    now = dt.datetime.now(dt.UTC)
    pem = serialization.Encoding.PEM
    for name in principals:
        cert_path, key_path = client_cert_paths(tls_dir, name)
        if cert_path.is_file() and key_path.is_file():
            continue
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
            .issuer_name(ca.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(min(now + dt.timedelta(days=VALID_DAYS), ca.not_valid_after_utc))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256())
        )
        private = key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
        write_private(key_path, private)
        write_private(cert_path, cert.public_bytes(pem))  # last: the pair is complete
        issued.append(name)
    return issued
