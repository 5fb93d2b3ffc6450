"""Real HTTP and HTTPS servers on 127.0.0.1, in threads of this process: the sites the website checks check
in the demo and the tests.

Paths: /health (200 "ok"), /fail (500), /wrong (200, another body), /slow (answers after `slow`
seconds), /together/<n> (answers once n requests are in flight at once, or after 5 s), /redirect
(302 to /health), /to/<url> (302 to any URL). The HTTPS server presents a
leaf certificate for `site`, signed by a private CA made here, valid for `leaf_days` more days. A site
can be told to fail (`Traffic.failing`: every path answers 500). Every request is counted, with the
most in flight at once.
"""

from __future__ import annotations

import ssl
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

SITE = "shop.test"  # what the tests' resolver maps to 127.0.0.1


@dataclass
class Traffic:
    requests: list[str] = field(default_factory=list)
    in_flight: int = 0
    most_in_flight: int = 0
    failing: bool = False  # every path answers 500, as a site that went down
    changed: threading.Condition = field(default_factory=threading.Condition)

    def enter(self, path: str) -> None:
        with self.changed:
            self.requests.append(path)
            self.in_flight += 1
            self.most_in_flight = max(self.most_in_flight, self.in_flight)
            self.changed.notify_all()

    def leave(self) -> None:
        with self.changed:
            self.in_flight -= 1

    def wait_for(self, together: int) -> None:
        with self.changed:
            self.changed.wait_for(lambda: self.in_flight >= together, timeout=5)


def route(path: str, traffic: Traffic, slow: float) -> tuple[int, bytes, str | None]:
    """What the site answers at `path`: status, body, and where it redirects to."""
    if traffic.failing:
        return 500, b"oops", None
    if path.startswith("/to/"):
        return 302, b"", path.removeprefix("/to/")
    if path == "/redirect":
        return 302, b"", "/health"
    if path == "/slow":
        time.sleep(slow)
    if path.startswith("/together/"):
        traffic.wait_for(int(path.removeprefix("/together/")))
    status, body = {"/fail": (500, b"oops"), "/wrong": (200, b"maintenance")}.get(path, (200, b"ok"))
    return status, body, None


def handler(traffic: Traffic, slow: float) -> type[BaseHTTPRequestHandler]:
    class Site(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            traffic.enter(self.path)
            try:
                self.answer()
            finally:
                traffic.leave()

        do_HEAD = do_GET  # noqa: N815
        do_POST = do_GET  # noqa: N815

        def answer(self) -> None:
            self.send(*route(self.path, traffic, slow))

        def send(self, status: int, body: bytes, location: str | None = None) -> None:
            self.send_response(status)
            if location:
                self.send_header("Location", location)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            """Quiet: the tests read the traffic, not a log."""

    return Site


class Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 1024  # a run's checks arrive all at once


@contextmanager
def serving(server: ThreadingHTTPServer) -> Iterator[int]:
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


@contextmanager
def http_site(slow: float = 0.2) -> Iterator[tuple[int, Traffic]]:
    traffic = Traffic()
    server = Server(("127.0.0.1", 0), handler(traffic, slow))
    with serving(server) as port:
        yield port, traffic


def _name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])


def private_ca_and_leaf(folder: Path, leaf_days: int, site: str = SITE) -> tuple[Path, Path, Path]:
    """A private CA (ca.pem) and a leaf for `site` it signed, valid `leaf_days` more days (leaf.pem, key.pem)."""
    now = datetime.now(UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(_name("opsbots test CA"))
        .issuer_name(_name("opsbots test CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=365))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    leaf_key = ec.generate_private_key(ec.SECP256R1())
    leaf = (
        x509.CertificateBuilder()
        .subject_name(_name(site))
        .issuer_name(ca.subject)
        .public_key(leaf_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=leaf_days))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(site)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    paths = folder / "ca.pem", folder / "leaf.pem", folder / "key.pem"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(
        leaf_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return paths


@contextmanager
def https_site(folder: Path, leaf_days: int, site: str = SITE) -> Iterator[tuple[int, Traffic, Path]]:
    """An HTTPS site for `site` on 127.0.0.1; yields its port, its traffic and the CA bundle to trust it by."""
    ca, leaf, key = private_ca_and_leaf(folder, leaf_days, site)
    traffic = Traffic()
    server = Server(("127.0.0.1", 0), handler(traffic, 0.0))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(leaf, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    with serving(server) as port:
        yield port, traffic, ca
