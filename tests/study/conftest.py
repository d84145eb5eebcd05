"""Fixtures of the download tests (MNIST, CIFAR-10): loopback HTTP and HTTPS servers over a folder, a closed port,
and the spec of a file as published."""

from __future__ import annotations

import contextlib
import datetime
import functools
import hashlib
import http.server
import ipaddress
import socket
import ssl
import threading
import time
from pathlib import Path

import pytest

from srvae.study.data.mnist_download import FileSpec


def spec_of(name: str, data: bytes) -> FileSpec:
    return FileSpec(name, sha256=hashlib.sha256(data).hexdigest(), size=len(data),
                    md5=hashlib.md5(data).hexdigest())


@pytest.fixture
def server(tmp_path, monkeypatch):
    """A loopback HTTP server over ``tmp_path/served``: (base URL, served dir, list of requested paths)."""
    for var in ("no_proxy", "NO_PROXY"):  # an http_proxy in the environment must not route requests away
        monkeypatch.setenv(var, "*")
    served = tmp_path / "served"
    served.mkdir()
    requests: list[str] = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def do_GET(self):
            requests.append(self.path)
            if self.path.startswith("/endless/"):  # a file that never ends, with no Content-Length to warn of it
                self._send(size=None, chunk=bytes(1 << 16), pause=0.0, count=1024)
            elif self.path.startswith("/drip/"):  # 1,000 bytes, one every 50 ms: no read ever stalls
                self._send(size=1000, chunk=b"x", pause=0.05, count=1000)
            else:
                super().do_GET()

        def _send(self, size, chunk, pause, count):
            self.send_response(200)
            if size is not None:
                self.send_header("Content-Length", str(size))
            self.end_headers()
            with contextlib.suppress(OSError):  # the client hangs up: that is the point
                for _ in range(count):
                    self.wfile.write(chunk)
                    time.sleep(pause)

        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=served))
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/", served, requests
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def closed_mirror():
    """A loopback URL on a port nobody listens on (connection refused)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/"


def publish(served: Path, blobs: dict[str, bytes]) -> None:
    for name, data in blobs.items():
        (served / name).write_bytes(data)


def _self_signed_certificate(directory: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1, valid for a day, and its key (PEM files in ``directory``)."""
    x509 = pytest.importorskip("cryptography.x509", reason="the HTTPS tests generate a certificate with cryptography")
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


@pytest.fixture
def https_server(server, tmp_path, monkeypatch):
    """A loopback HTTPS server, trusted through ``$SSL_CERT_FILE``, over the plain server's files: its base
    URL. ``/to-http/<path>`` redirects to ``<path>`` on the plain server."""
    http_url, served, _ = server
    cert, key = _self_signed_certificate(tmp_path)
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))  # read by every new default SSL context

    class Handler(http.server.SimpleHTTPRequestHandler):
        def do_GET(self):
            if self.path.startswith("/to-http/"):
                self.send_response(302)
                self.send_header("Location", http_url + self.path.removeprefix("/to-http/"))
                self.end_headers()
            else:
                super().do_GET()

        def log_message(self, *args):
            pass

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=served))
    httpd.socket = context.wrap_socket(httpd.socket, server_side=True)
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield f"https://127.0.0.1:{httpd.server_address[1]}/"
    httpd.shutdown()
    httpd.server_close()
