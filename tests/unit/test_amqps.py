"""amqps:// URLs (pika's own handling, as _connection_parameters leaves it): the broker's certificate
is checked against the trust store (SSL_CERT_FILE here) and against the URL's host name. A local TLS
server stands in for the broker's TLS listener: it only records whether the handshake passed and
what the client sent after it (the AMQP header)."""

from __future__ import annotations

import socket
import ssl
import subprocess
import threading
from pathlib import Path

import pika
import pika.exceptions
import pytest
from mlstack.broker import _connection_parameters


def _openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A CA and a certificate for the names localhost / 127.0.0.1, signed by it."""
    d = tmp_path_factory.mktemp("pki")
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=test CA",
             "-keyout", str(d / "ca.key"), "-out", str(d / "ca.crt"))  # fmt: skip
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=localhost",
             "-keyout", str(d / "server.key"), "-out", str(d / "server.csr"))  # fmt: skip
    (d / "san.ext").write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    _openssl("x509", "-req", "-in", str(d / "server.csr"), "-CA", str(d / "ca.crt"),
             "-CAkey", str(d / "ca.key"), "-CAcreateserial", "-days", "2",
             "-extfile", str(d / "san.ext"), "-out", str(d / "server.crt"))  # fmt: skip
    return d


class TlsListener(threading.Thread):
    """Accepts one connection: the handshake's outcome and the first bytes after it."""

    def __init__(self, pki: Path, host: str = "127.0.0.1") -> None:
        super().__init__(daemon=True)
        self.context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.context.load_cert_chain(pki / "server.crt", pki / "server.key")
        self.sock = socket.create_server((host, 0))
        self.port = self.sock.getsockname()[1]
        self.received = b""
        self.error = ""

    def run(self) -> None:
        conn, _ = self.sock.accept()
        try:
            with self.context.wrap_socket(conn, server_side=True) as tls:
                self.received = tls.recv(8)
        except (ssl.SSLError, OSError) as exc:
            self.error = str(exc)
        finally:
            self.sock.close()


def _connect(url: str) -> None:
    # Either way the connection fails: the stand-in closes after the header, or the handshake fails.
    with pytest.raises((pika.exceptions.AMQPError, ssl.SSLError)):
        pika.BlockingConnection(_connection_parameters(url))


def test_amqps_checks_the_broker_certificate_and_its_name(pki: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SSL_CERT_FILE", str(pki / "ca.crt"))
    listener = TlsListener(pki)
    listener.start()
    _connect(f"amqps://u:p@localhost:{listener.port}/%2F")
    listener.join(10)
    assert listener.received == b"AMQP\x00\x00\x09\x01", listener.error


def test_amqps_refuses_a_certificate_its_trust_store_does_not_hold(pki: Path) -> None:
    listener = TlsListener(pki)
    listener.start()
    _connect(f"amqps://u:p@localhost:{listener.port}/%2F")
    listener.join(10)
    assert listener.received == b"" and listener.error, "handshake with an unknown CA must fail"


def test_amqps_refuses_a_certificate_for_another_name(pki: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SSL_CERT_FILE", str(pki / "ca.crt"))
    # 127.0.0.2 is this machine's loopback too, but the certificate names only localhost and 127.0.0.1.
    listener = TlsListener(pki, "127.0.0.2")
    listener.start()
    _connect(f"amqps://u:p@127.0.0.2:{listener.port}/%2F")
    listener.join(10)
    assert listener.received == b"" and listener.error, "a certificate for another name must be refused"
