"""The throw-away credentials of ``simulations.deploy --secure`` (``simulations.secure``): a CA,
a server certificate a TLS client accepts for 127.0.0.1 and localhost, node keys in the
formats Flower 1.42's own loaders read; and TLS through the byte-counting proxy, counted per
direction byte for byte. The secure deployment itself is in ``test_deploy.py`` (slow)."""

from __future__ import annotations

import contextlib
import socket
import ssl
import stat
import threading
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_ssh_private_key
from flwr.cli.supernode.register import try_load_public_key

from simulations import secure as S
from simulations.wireproxy import WireProxy


@pytest.fixture(scope="module")
def creds(tmp_path_factory: pytest.TempPathFactory) -> S.Credentials:
    return S.make_credentials(tmp_path_factory.mktemp("secure"), 2)


def test_the_server_certificate_is_signed_by_the_ca_and_names_loopback(
    creds: S.Credentials,
) -> None:
    ca = x509.load_pem_x509_certificate(creds.ca_cert.read_bytes())
    cert = x509.load_pem_x509_certificate(creds.server_cert.read_bytes())
    cert.verify_directly_issued_by(ca)  # raises if the CA did not sign it
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert [str(ip) for ip in sans.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    assert sans.get_values_for_type(x509.DNSName) == ["localhost"]
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca


def test_node_keys_are_what_flower_reads_and_private_keys_are_owner_only(
    creds: S.Credentials,
) -> None:
    publics = set()
    for key in creds.node_keys:
        # flower-supernode --auth-supernode-private-key: OpenSSH, an EC key.
        private = load_ssh_private_key(key.read_bytes(), None)
        assert isinstance(private, ec.EllipticCurvePrivateKey)
        assert private.curve.name == "secp384r1"
        # flwr supernode register: its own loader (NIST curve check included).
        publics.add(try_load_public_key(S.Credentials.public_key(key)))
        assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert len(publics) == len(creds.node_keys)  # one key pair per node
    for private in (creds.server_key, creds.server_key.parent / "ca.key"):
        assert stat.S_IMODE(private.stat().st_mode) == 0o600


def test_load_credentials_finds_them_again_or_names_what_is_missing(
    creds: S.Credentials, tmp_path: Path
) -> None:
    again = S.load_credentials(creds.ca_cert.parent, ["node-0", "node-1"])
    assert again == creds
    with pytest.raises(FileNotFoundError, match="node-7.key"):
        S.load_credentials(creds.ca_cert.parent, ["node-7"])


def _tls_server(creds: S.Credentials) -> tuple[socket.socket, threading.Thread]:
    """A TLS echo server with the run's certificate: answers every message reversed, x3."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(creds.server_cert, creds.server_key)
    listener = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        conn, _ = listener.accept()
        # A client that refuses the certificate hangs up mid-handshake: that is the test.
        with contextlib.suppress(ssl.SSLError, OSError), \
                context.wrap_socket(conn, server_side=True) as tls:
            while data := tls.recv(65536):
                tls.sendall(data[::-1] * 3)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return listener, thread


def _client_through(port: int, ca: Path | None, payloads: list[bytes]) -> tuple[int, int, list]:
    """A TLS client over a counted socket (memory BIOs): bytes it sent and received on the
    wire, and the answers it decrypted."""
    context = ssl.create_default_context(cafile=str(ca)) if ca else ssl.create_default_context()
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = context.wrap_bio(incoming, outgoing, server_hostname="127.0.0.1")
    sent = received = 0
    answers = []
    with socket.create_connection(("127.0.0.1", port)) as sock:

        def flush() -> None:
            nonlocal sent
            if data := outgoing.read():
                sock.sendall(data)
                sent += len(data)

        def pump() -> None:
            nonlocal received
            data = sock.recv(65536)
            if not data:
                raise ConnectionError("closed")
            received += len(data)
            incoming.write(data)

        while True:
            try:
                tls.do_handshake()
                break
            except ssl.SSLWantReadError:
                flush()
                pump()
        flush()
        for payload in payloads:
            tls.write(payload)
            flush()
            answer = b""
            while len(answer) < 3 * len(payload):
                try:
                    answer += tls.read(65536)
                except ssl.SSLWantReadError:
                    pump()
            answers.append(answer)
    return sent, received, answers


def test_tls_through_the_proxy_is_forwarded_and_counted_per_direction_exactly(
    creds: S.Credentials, tmp_path: Path
) -> None:
    listener, thread = _tls_server(creds)
    proxy = WireProxy(listener.getsockname()[1], tmp_path / "meter.json", level="tls").start()
    try:
        payloads = [b"push-object " * 500, b"pull", b"x" * 20000]
        sent, received, answers = _client_through(proxy.listen_port, creds.ca_cert, payloads)
        thread.join(5)
    finally:
        proxy.stop()
        listener.close()
    # The certificate was verified for 127.0.0.1 through the proxy, the data is intact ...
    assert answers == [p[::-1] * 3 for p in payloads]
    snap = proxy.meter.snapshot()
    # ... and every TLS byte is counted once, in its direction, nothing parsed.
    assert snap["directions"] == {"node_to_link": sent, "link_to_node": received}
    assert sent > sum(map(len, payloads)) and received > 3 * sum(map(len, payloads))
    assert snap["level"] == "tls" and snap["connections"] == 1
    assert sum(snap["bytes"].values()) == 0  # no categories at this level: not "unparsed"


def test_a_client_without_the_ca_is_refused_through_the_proxy(
    creds: S.Credentials, tmp_path: Path
) -> None:
    listener, _ = _tls_server(creds)
    proxy = WireProxy(listener.getsockname()[1], None, level="tls").start()
    try:
        with pytest.raises(ssl.SSLCertVerificationError, match="certificate verify failed"):
            _client_through(proxy.listen_port, None, [b"hello"])  # the system's trust store
    finally:
        proxy.stop()
        listener.close()


def test_a_superlink_that_is_down_is_retried_not_a_tls_failure(creds: S.Credentials) -> None:
    """Flower's SuperNode gives up for good on an error that mentions SSL, TLS or a
    certificate (flwr.supercore.retry.http_retry) and retries the others: through the proxy,
    a SuperLink that is down must fail the TLS handshake as a refused connection would."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        dead = probe.getsockname()[1]
    proxy = WireProxy(dead, None, level="tls").start()
    try:
        with pytest.raises(ConnectionResetError) as failed:
            _client_through(proxy.listen_port, creds.ca_cert, [b"hello"])
    finally:
        proxy.stop()
    message = str(failed.value).lower()
    assert not any(term in message for term in ("certificate", "ssl", "tls")), message
