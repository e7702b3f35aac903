"""Throw-away credentials for ``simulations.deploy --secure``: a CA, a server certificate and
one key pair per SuperNode, made locally with the ``cryptography`` package (no network).

Flower 1.42 secures a deployment in two independent layers, and both need files:

* **TLS** (every connection to the SuperLink: SuperNodes, the ``flwr`` CLI, the ServerApp's
  SuperExec): the SuperLink serves a certificate (``--ssl-certfile``/``--ssl-keyfile``) signed
  by a CA (``--ssl-ca-certfile``); each client trusts that CA (``flower-supernode
  --root-certificates``, ``root-certificates`` in the CLI's federation config). The
  certificate names ``127.0.0.1`` and ``localhost`` (subject alternative names) because that
  is the address the clients dial; a real deployment names its host instead.
* **SuperNode authentication** (``flower-superlink --enable-supernode-auth``): each SuperNode
  signs every request with its own EC private key (``flower-supernode
  --auth-supernode-private-key``, OpenSSH format), and the SuperLink accepts only nodes whose
  public key was registered with ``flwr supernode register <key.pub>`` (the list lives in the
  SuperLink's database). Flower 1.42 wants a NIST curve; P-384 is what its docs use.

Everything here is for one loopback run: the CA's key never leaves the run's directory, the
certificates expire after ``VALID_DAYS``, and nothing is ever installed in a system trust
store. Private keys are written with mode 0600.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

VALID_DAYS = 7  # long enough for a run and its resumes, short enough to be worthless later
CURVE = ec.SECP384R1  # a NIST curve, as Flower 1.42's node authentication demands


@dataclass(frozen=True)
class Credentials:
    """Paths of one deployment's files (all under one directory)."""

    ca_cert: Path  # what every client trusts (--root-certificates, --ssl-ca-certfile)
    server_cert: Path  # the SuperLink's certificate, signed by the CA
    server_key: Path
    node_keys: tuple[Path, ...]  # per SuperNode: its private key (OpenSSH); .pub beside it

    @staticmethod
    def public_key(private_key: Path) -> Path:
        return private_key.with_suffix(".pub")


def _write_private(path: Path, data: bytes) -> None:
    """Create ``path`` readable by its owner only, before a byte of the key is written."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "pemn-fl deploy (throw-away)"),
                      x509.NameAttribute(NameOID.COMMON_NAME, common_name)])  # fmt: skip


def _validity(builder: x509.CertificateBuilder) -> x509.CertificateBuilder:
    # Back-dated a minute: a client whose clock is a little behind must not see a
    # certificate that is "not yet valid".
    now = datetime.datetime.now(datetime.UTC)
    return builder.not_valid_before(now - datetime.timedelta(minutes=1)).not_valid_after(
        now + datetime.timedelta(days=VALID_DAYS)
    )


def make_ca(directory: Path) -> tuple[Path, ec.EllipticCurvePrivateKey, x509.Certificate]:
    """A self-signed CA certificate (``ca.pem``) and its key (``ca.key``, kept for signing)."""
    key = ec.generate_private_key(CURVE())
    name = _name("pemn-fl throw-away CA")
    cert = (
        _validity(x509.CertificateBuilder())
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                     content_commitment=False, key_encipherment=False,
                                     data_encipherment=False, key_agreement=False,
                                     encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )  # fmt: skip
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "ca.pem"
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    _write_private(directory / "ca.key", key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))  # fmt: skip
    return path, key, cert


def make_server_cert(directory: Path, ca_key: ec.EllipticCurvePrivateKey,
                     ca_cert: x509.Certificate,
                     hosts: tuple[str, ...] = ("127.0.0.1", "localhost"),
                     ) -> tuple[Path, Path]:  # fmt: skip
    """The SuperLink's certificate (``server.pem``) and key (``server.key``), signed by the CA.

    Each of ``hosts`` becomes a subject alternative name (an IP address where it parses as
    one): TLS clients check the address they dialled against these, not the common name.
    """
    key = ec.generate_private_key(CURVE())
    sans: list[x509.GeneralName] = []
    for host in hosts:
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            sans.append(x509.DNSName(host))
    cert = (
        _validity(x509.CertificateBuilder())
        .subject_name(_name(hosts[0]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                       critical=False)
        .sign(ca_key, hashes.SHA256())
    )  # fmt: skip
    cert_path, key_path = directory / "server.pem", directory / "server.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    _write_private(key_path, key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))  # fmt: skip
    return cert_path, key_path


def make_node_key(path: Path) -> Path:
    """One SuperNode's key pair: ``path`` (private, OpenSSH PEM) and ``path.pub`` (OpenSSH).

    OpenSSH is the format both ``flower-supernode --auth-supernode-private-key`` and
    ``flwr supernode register`` read in Flower 1.42.
    """
    key = ec.generate_private_key(CURVE())
    _write_private(path, key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.OpenSSH,
                                           serialization.NoEncryption()))  # fmt: skip
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                           serialization.PublicFormat.OpenSSH)  # fmt: skip
    Credentials.public_key(path).write_bytes(public + b"\n")
    return path


def make_credentials(directory: Path, nodes: int, names: list[str] | None = None) -> Credentials:
    """A fresh CA, server certificate and ``nodes`` node key pairs in ``directory``.

    ``names`` (default ``node-0`` ...) name the key files. Nothing is reused: each call is a
    new CA, so credentials of an earlier run are never trusted by a later one.
    """
    names = names or [f"node-{i}" for i in range(nodes)]
    ca_path, ca_key, ca_cert = make_ca(directory)
    cert, key = make_server_cert(directory, ca_key, ca_cert)
    keys = tuple(make_node_key(directory / f"{name}.key") for name in names)
    return Credentials(ca_cert=ca_path, server_cert=cert, server_key=key, node_keys=keys)


def load_credentials(directory: Path, names: list[str]) -> Credentials:
    """The credentials ``make_credentials`` wrote (for a resumed run: same CA, same keys)."""
    creds = Credentials(ca_cert=directory / "ca.pem", server_cert=directory / "server.pem",
                        server_key=directory / "server.key",
                        node_keys=tuple(directory / f"{n}.key" for n in names))  # fmt: skip
    missing = [p for p in (creds.ca_cert, creds.server_cert, creds.server_key,
                           *creds.node_keys) if not p.is_file()]  # fmt: skip
    if missing:
        raise FileNotFoundError(f"missing credentials: {', '.join(str(p) for p in missing)}")
    return creds
