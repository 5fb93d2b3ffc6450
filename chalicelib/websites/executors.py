"""Executors: the HTTP(S) requests of a run, every check at once, each target checked before any packet.

The standard library's `http.client` over a socket this module opens itself: the name is resolved
here, every address it resolves to is judged by `address_refused` (no server-side request forgery,
for every redirect hop), and the connection goes to the address judged, with the name only as the
TLS server name and Host header, so a second resolution cannot swap the target. The leaf
certificate is read from that connection's own handshake. Threads, not asyncio: a check spends its
time waiting on the network, the GIL is released there, and `http.client` adds nothing to a cold
start (bench/websites.py measures it).
"""

from __future__ import annotations

import contextlib
import http.client
import socket
import ssl
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Final, cast
from urllib.parse import SplitResult, urljoin, urlsplit

from botocore.exceptions import ClientError

from chalicelib.aws import error_code
from chalicelib.observability import logger
from chalicelib.websites.decisions import Certificate, CheckState, Probe, address_refused
from chalicelib.websites.status_page import History, from_json, to_json

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient
    from mypy_boto3_s3 import S3Client

MAX_REDIRECTS: Final = 5
MAX_BODY: Final = 1 << 20  # what `body_contains` may look at; the rest is not read
MAX_THREADS: Final = 512  # a run's checks all at once, up to this many
REDIRECTS: Final = frozenset({301, 302, 303, 307, 308})
READ_BATCH: Final = 100  # BatchGetItem's limit
READ_ATTEMPTS: Final = 4  # BatchGetItem calls for one batch's unprocessed keys (throttling)
MAX_HISTORY: Final = 8 << 20  # bytes: a status history larger than this was not written by the bot
LOST_WRITES: Final = frozenset({"PreconditionFailed", "ConditionalRequestConflict"})  # another run wrote first

Resolver = Callable[[str, int], Sequence[str]]  # host, port -> addresses


def resolve(host: str, port: int) -> list[str]:
    """Every address the name resolves to, in the resolver's order."""
    found = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(entry[4][0]) for entry in found))


@dataclass(frozen=True)
class Request:
    """One check's request, as its policy gives it."""

    name: str
    url: str
    method: str = "GET"
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes | None = None
    timeout: float = 10.0
    allow_private: bool = False
    ca_file: str | None = None  # a PEM bundle to trust instead of the system's


class _Pinned(http.client.HTTPConnection):
    """An HTTP connection to an address judged beforehand; the name stays the Host header."""

    def __init__(self, host: str, address: str, port: int, timeout: float) -> None:
        super().__init__(host, port, timeout=timeout)
        self.address = address

    def connect(self) -> None:
        self.sock = socket.create_connection((self.address, self.port), self.timeout)


class _PinnedTls(http.client.HTTPSConnection):
    """An HTTPS connection to an address judged beforehand; the name is the TLS server name and Host."""

    def __init__(self, host: str, address: str, port: int, timeout: float, context: ssl.SSLContext) -> None:
        super().__init__(host, port, timeout=timeout, context=context)
        self.address = address
        self.tls = context

    def connect(self) -> None:
        raw = socket.create_connection((self.address, self.port), self.timeout)
        self.sock = self.tls.wrap_socket(raw, server_hostname=self.host)


class HttpProber:
    """Sends each check's request and reports what it found, never raising for the network's failures."""

    def __init__(self, resolver: Resolver = resolve) -> None:
        self.resolver = resolver
        self._contexts: dict[str | None, ssl.SSLContext] = {}

    def probe_all(self, requests: Sequence[Request]) -> dict[str, Probe]:
        """Every request at once: a run lasts about its slowest check, not their sum."""
        if not requests:
            return {}
        for ca_file in {request.ca_file for request in requests}:  # made here, not by two threads at once
            with contextlib.suppress(OSError, ssl.SSLError):  # a bundle that cannot be read fails its checks only
                self._context(ca_file)
        with ThreadPoolExecutor(max_workers=min(len(requests), MAX_THREADS)) as pool:
            return dict(zip((r.name for r in requests), pool.map(self.probe, requests), strict=True))

    def probe(self, request: Request) -> Probe:
        started = time.monotonic()
        deadline = started + request.timeout
        try:
            return self._follow(request, deadline, started)
        except TimeoutError:
            return Probe(seconds=time.monotonic() - started, error=f"timed out after {request.timeout:g} s")
        except FileNotFoundError:  # the only file a check opens is its ca_bundle
            return Probe(seconds=time.monotonic() - started, error=f"ca_bundle {request.ca_file} cannot be read")
        except ssl.SSLCertVerificationError as error:
            return Probe(seconds=time.monotonic() - started, error=f"TLS: {error.verify_message}")
        except ssl.SSLError as error:
            return Probe(seconds=time.monotonic() - started, error=f"TLS: {error.reason or error}")
        except socket.gaierror as error:
            return Probe(seconds=time.monotonic() - started, error=f"no such name: {error.strerror}")
        except ConnectionRefusedError:
            return Probe(seconds=time.monotonic() - started, error="connection refused")
        except (OSError, http.client.HTTPException) as error:
            return Probe(seconds=time.monotonic() - started, error=f"{type(error).__name__}: {error}")

    def _follow(self, request: Request, deadline: float, started: float) -> Probe:
        url, method, body = request.url, request.method, request.body
        for _ in range(MAX_REDIRECTS + 1):
            status, location, payload, certificate, refused = self._one(request, url, method, body, deadline)
            if refused is not None:
                return Probe(seconds=time.monotonic() - started, error=refused)
            if status in REDIRECTS and location:
                url = urljoin(url, location)
                if status == 303 or (status in (301, 302) and method == "POST"):
                    method, body = "GET", None
                continue
            return Probe(status, time.monotonic() - started, payload, certificate)
        return Probe(seconds=time.monotonic() - started, error=f"more than {MAX_REDIRECTS} redirects")

    def _one(
        self, request: Request, url: str, method: str, body: bytes | None, deadline: float
    ) -> tuple[int, str | None, bytes, Certificate | None, str | None]:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            return 0, None, b"", None, f"{url} is not an http(s) URL"
        port = parts.port or (443 if parts.scheme == "https" else 80)
        addresses = self.resolver(parts.hostname, port)
        refused = next((why for a in addresses if (why := address_refused(a, request.allow_private))), None)
        if refused or not addresses:
            return 0, None, b"", None, refused or f"{parts.hostname} resolves to no address"
        for address in addresses[:-1]:  # each judged; the next tried when one refuses, as a browser does
            try:
                return self._exchange(request, parts, port, address, method, body, deadline)
            except ConnectionRefusedError:
                continue
        return self._exchange(request, parts, port, addresses[-1], method, body, deadline)

    def _exchange(
        self,
        request: Request,
        parts: SplitResult,
        port: int,
        address: str,
        method: str,
        body: bytes | None,
        deadline: float,
    ) -> tuple[int, str | None, bytes, Certificate | None, str | None]:
        host = parts.hostname or address
        remaining = max(0.001, deadline - time.monotonic())
        connection: http.client.HTTPConnection = (
            _PinnedTls(host, address, port, remaining, self._context(request.ca_file))
            if parts.scheme == "https"
            else _Pinned(host, address, port, remaining)
        )
        try:
            path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
            connection.request(method, path, body=body, headers=dict(request.headers))
            certificate = _leaf(connection.sock) if isinstance(connection.sock, ssl.SSLSocket) else None
            response = connection.getresponse()
            payload = response.read(MAX_BODY)
            return response.status, response.getheader("Location"), payload, certificate, None
        finally:
            connection.close()

    def _context(self, ca_file: str | None) -> ssl.SSLContext:
        if ca_file not in self._contexts:
            self._contexts[ca_file] = ssl.create_default_context(cafile=ca_file)
        return self._contexts[ca_file]


def _leaf(sock: ssl.SSLSocket) -> Certificate | None:
    """The server's own certificate, as the handshake presented it (verified: the context requires it)."""
    seen = sock.getpeercert()
    if not seen:
        return None
    names = cast("tuple[tuple[tuple[str, str], ...], ...]", seen.get("subject", ()))
    subject = ", ".join(f"{key}={value}" for rdn in names for key, value in rdn)
    expires = datetime.fromtimestamp(ssl.cert_time_to_seconds(str(seen["notAfter"])), UTC)
    return Certificate(subject.replace("commonName", "CN"), expires)


class StateStore:
    """Each check's state in a DynamoDB table only the bot writes, one item per check (key `check`).

    A run reads the states of its due checks in batches, and writes only what changed, each write
    conditional on the version it read: when two runs overlap (a duplicate delivery, a slow run), one
    write wins and the other run's is refused, so a change is announced once.
    """

    def __init__(self, dynamodb: DynamoDBClient, table: str) -> None:
        self._dynamodb = dynamodb
        self._table = table

    def read(self, names: Sequence[str]) -> dict[str, CheckState]:
        found: dict[str, CheckState] = {}
        for start in range(0, len(names), READ_BATCH):
            keys: list[Any] = [{"check": {"S": name}} for name in names[start : start + READ_BATCH]]
            for _ in range(READ_ATTEMPTS):
                answer = self._dynamodb.batch_get_item(RequestItems={self._table: {"Keys": keys}})
                for item in answer["Responses"].get(self._table, []):
                    found[item["check"]["S"]] = _state(item)
                unprocessed: Mapping[str, Any] = answer.get("UnprocessedKeys", {})
                keys = list(unprocessed.get(self._table, {}).get("Keys", []))
                if not keys:
                    break
            if keys:
                raise StateUnavailableError(f"{len(keys)} check state(s) unread after {READ_ATTEMPTS} tries")
        return found

    def write(self, name: str, state: CheckState) -> bool:
        """Store `state` if the item is still at the version it was read at; False when another run won."""
        try:
            self._dynamodb.put_item(
                TableName=self._table,
                Item=_item(name, state),
                ConditionExpression="attribute_not_exists(#check) OR #version = :read",
                ExpressionAttributeNames={"#check": "check", "#version": "version"},
                ExpressionAttributeValues={":read": {"N": str(state.version - 1)}},
            )
        except ClientError as error:
            if error_code(error) == "ConditionalCheckFailedException":
                return False
            raise
        return True


class StateUnavailableError(Exception):
    """The check states could not be read: the run fails, for Lambda to retry it (thresholds need them)."""


def _item(name: str, state: CheckState) -> dict[str, Any]:
    item: dict[str, Any] = {
        "check": {"S": name},
        "state": {"S": state.state},
        "failures": {"N": str(state.failures)},
        "successes": {"N": str(state.successes)},
        "reason": {"S": state.reason},
        "version": {"N": str(state.version)},
    }
    for field_name in ("since", "failing_since", "reminded"):
        moment = getattr(state, field_name)
        if moment is not None:
            item[field_name] = {"S": moment.isoformat()}
    return item


def _state(item: Mapping[str, Any]) -> CheckState:
    def moment(field_name: str) -> datetime | None:
        return datetime.fromisoformat(item[field_name]["S"]) if field_name in item else None

    state = item["state"]["S"]
    return CheckState(
        state=state if state in ("up", "down") else "unknown",
        failures=int(item["failures"]["N"]),
        successes=int(item["successes"]["N"]),
        since=moment("since"),
        reason=item["reason"]["S"],
        failing_since=moment("failing_since"),
        reminded=moment("reminded"),
        version=int(item["version"]["N"]),
    )


class StatusPageStore:
    """The status page and the history it is drawn from, side by side in one S3 bucket.

    The history is written on condition that it is still what was read (If-Match on its ETag, or
    If-None-Match for the first), so two overlapping runs cannot erase each other's runs; the page
    is then written from the history that was stored.
    """

    def __init__(self, s3: S3Client, bucket: str, key: str, history_key: str) -> None:
        self._s3 = s3
        self.bucket = bucket
        self.key = key
        self.history_key = history_key

    def read(self) -> tuple[dict[str, History], str | None]:
        """The histories and the ETag they were read at (None: no history yet). A document that is not a
        history (too large, not ours) is logged and replaced: the page starts its history again."""
        try:
            answer = self._s3.get_object(Bucket=self.bucket, Key=self.history_key)
        except ClientError as error:
            if error_code(error) == "NoSuchKey":
                return {}, None
            raise
        with answer["Body"] as body:
            document = body.read(MAX_HISTORY + 1)
        try:
            if len(document) > MAX_HISTORY:
                raise ValueError(f"larger than {MAX_HISTORY} bytes")
            return from_json(document), answer["ETag"]
        except ValueError as error:
            logger.warning(
                "status history unreadable: starting it again",
                extra={"bucket": self.bucket, "key": self.history_key, "error": str(error)},
            )
            return {}, answer["ETag"]

    def store(self, histories: Mapping[str, History], read_at: str | None) -> bool:
        """Write the histories if the stored document is still the one read; False when another run wrote first."""
        condition: dict[str, str] = {"IfMatch": read_at} if read_at else {"IfNoneMatch": "*"}
        try:
            self._s3.put_object(
                Bucket=self.bucket,
                Key=self.history_key,
                Body=to_json(histories),
                ContentType="application/json",
                **condition,  # type: ignore[arg-type]
            )
        except ClientError as error:
            if error_code(error) in LOST_WRITES:
                return False
            raise
        return True

    def publish(self, page: str) -> None:
        self._s3.put_object(
            Bucket=self.bucket,
            Key=self.key,
            Body=page.encode(),
            ContentType="text/html; charset=utf-8",
            CacheControl="max-age=60",  # the page changes every run
        )
