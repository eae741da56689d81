"""Test certificates made with `cryptography`: a CA, a broker certificate for
127.0.0.1/localhost and a client certificate, as the PEM files scripts/kafka --tls-dir reads
(ca.crt, broker.crt, broker.key; keys unencrypted PKCS#8) plus client.crt/client.key."""

from __future__ import annotations

import datetime as dt
import ipaddress
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _builder(subject: str, issuer: x509.Name, key: ec.EllipticCurvePrivateKey,
             issuer_key: ec.EllipticCurvePrivateKey) -> x509.CertificateBuilder:
    now = dt.datetime.now(dt.UTC)
    return (x509.CertificateBuilder()
            .subject_name(_name(subject)).issuer_name(issuer)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=2))
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                issuer_key.public_key()), False))


def write_tls_dir(directory: Path, *, ca_name: str = "recovery test CA") -> Path:
    """Writes a fresh CA, broker and client certificate into directory; returns it."""
    directory.mkdir(parents=True, exist_ok=True)
    ca_key = _key()
    ca = (_builder(ca_name, _name(ca_name), ca_key, ca_key)
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), True)
          .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False,
                                       False), True)
          .sign(ca_key, hashes.SHA256()))
    leaf_usage = x509.KeyUsage(True, False, True, False, False, False, False, False, False)
    broker_key, client_key = _key(), _key()
    broker = (_builder("localhost", ca.subject, broker_key, ca_key)
              .add_extension(x509.BasicConstraints(ca=False, path_length=None), True)
              .add_extension(leaf_usage, True)
              .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), False)
              .add_extension(x509.SubjectAlternativeName([
                  x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                  x509.DNSName("localhost")]), False)
              .sign(ca_key, hashes.SHA256()))
    client = (_builder("recovery-client", ca.subject, client_key, ca_key)
              .add_extension(x509.BasicConstraints(ca=False, path_length=None), True)
              .add_extension(leaf_usage, True)
              .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), False)
              .sign(ca_key, hashes.SHA256()))
    pem = serialization.Encoding.PEM
    files = {"ca.crt": ca.public_bytes(pem), "ca.key": _pem_key(ca_key),
             "broker.crt": broker.public_bytes(pem), "broker.key": _pem_key(broker_key),
             "client.crt": client.public_bytes(pem), "client.key": _pem_key(client_key)}
    for name, data in files.items():
        (directory / name).write_bytes(data)
        if name.endswith(".key"):
            (directory / name).chmod(0o600)
    return directory
