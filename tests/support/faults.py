"""Faults injected through botocore's own event system: a real client stack, nothing patched.

Two ways in:

- `answer_with_error` (a `before-call` hook): the call fails at once with a modeled error, before
  anything is sent and before the retry handler is involved.
- `Faults` (a `before-send` hook): chosen attempts of chosen operations are answered with a real
  HTTP error response in the service's own wire format (throttling, 5xx, AccessDenied) or fail to
  connect (timeout, unreachable endpoint). botocore parses that response and its retry handler
  decides, exactly as it would for AWS: a throttling burst shorter than the attempts a call has is
  absorbed, a longer one (or AccessDenied) surfaces as the usual `ClientError`/`BotoCoreError`.

Where a fault applies is decided by where it is registered (`Faults.on(client)`: that client only,
so one account's client; `Faults.handlers()` for `Clients(handlers=...)`: every session the bot
builds) and, within that, by the request's endpoint region (`region=`) or by any predicate on the
prepared request (`when=`, e.g. an AssumeRole for one account's role).

Retries without the wait: botocore's standard backoff sleeps up to 1 s, 2 s, 4 s... after a
throttle. `Faults` also registers `retry_at_once` on `needs-retry`, more specific than the retry
handler, so it answers first: it asks botocore's own `StandardRetryConditions`, with the attempts
the client is configured for, whether the attempt is retried, and if so says "retry now" (0 s).
botocore's handlers still run (quota, adaptive rate measurement); only the sleep is skipped. Adaptive
mode also paces the client's later requests after a throttle (a token bucket in `before-send`, at
least 0.5 requests/s); tests that throttle on purpose build their clients with `FAST_RETRIES`
(standard mode, same attempts) unless they mean to exercise the shipped adaptive configuration.
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import cache
from io import BytesIO
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlsplit
from uuid import uuid4

import botocore.session
from botocore.awsrequest import AWSPreparedRequest, AWSResponse
from botocore.compat import HTTPHeaders
from botocore.config import Config
from botocore.exceptions import ConnectTimeoutError, EndpointConnectionError
from botocore.retries.standard import RetryEventAdapter, StandardRetryConditions

from chalicelib.aws import BOTO_CONFIG

if TYPE_CHECKING:
    from botocore.model import ServiceModel

Kind = Literal["throttle", "5xx", "denied", "timeout", "unreachable"]
Handler = Callable[..., Any]

# The shipped configuration with standard retries: the same attempts per call, without adaptive
# mode's client-side pacing after a throttle (which would make throttling tests wait seconds).
_SHIPPED_RETRIES: dict[str, Any] = BOTO_CONFIG.retries  # type: ignore[attr-defined]  # the stubs lag botocore
FAST_RETRIES = BOTO_CONFIG.merge(Config(retries={"mode": "standard", "max_attempts": _SHIPPED_RETRIES["max_attempts"]}))
ATTEMPTS = _SHIPPED_RETRIES["max_attempts"] + 1  # botocore's max_attempts counts retries: 8 -> 9 attempts

# What each kind of fault answers, per client name; "*" for the rest.
_THROTTLE = {
    "ec2": (503, "RequestLimitExceeded"),
    "route53": (400, "Throttling"),
    "sesv2": (429, "TooManyRequestsException"),
    "s3": (503, "SlowDown"),
    "dynamodb": (400, "ThrottlingException"),
    "*": (400, "Throttling"),
}
_SERVER_ERROR = {"ec2": (503, "Unavailable"), "sesv2": (500, "InternalFailure"), "*": (500, "InternalError")}
_DENIED = {
    "ec2": (403, "UnauthorizedOperation"),
    "sesv2": (403, "AccessDeniedException"),
    "dynamodb": (400, "AccessDeniedException"),
    "*": (403, "AccessDenied"),
}
_ANSWERS = {"throttle": _THROTTLE, "5xx": _SERVER_ERROR, "denied": _DENIED}

# Every fault injected in this test process, by kind: the tests' summary reports it.
INJECTED: Counter[str] = Counter()


def report_faults(request: Any) -> Iterator[None]:
    """The body of a module-scoped fixture: one line when the module ends, the faults its tests injected."""
    before, started = Counter(INJECTED), time.perf_counter()
    yield
    injected = INJECTED - before
    kinds = ", ".join(f"{kind} {count}" for kind, count in sorted(injected.items()))
    took = time.perf_counter() - started
    line = f"{request.module.__name__}: {sum(injected.values())} faults injected ({kinds}) in {took:.1f} s"
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    if reporter is not None and capture is not None:
        with capture.global_and_fixture_disabled():
            reporter.write_line(f"\n{line}")


def answer_with_error(client: Any, operation: str, code: str, status: int = 403) -> None:
    """Make every `operation` call on `client` fail with `code`, before anything is sent."""

    def fail(**_: Any) -> tuple[AWSResponse, dict[str, Any]]:
        parsed = {
            "Error": {"Code": code, "Message": f"injected {code}"},
            "ResponseMetadata": {"HTTPStatusCode": status},
        }
        return AWSResponse("https://injected.invalid", status, HTTPHeaders(), None), parsed

    client.meta.events.register(f"before-call.{client.meta.service_model.service_id.hyphenize()}.{operation}", fail)


@cache
def _service_model(service: str) -> ServiceModel:
    return botocore.session.get_session().get_service_model(service)


def _service_id(service: str) -> str:
    return str(_service_model(service).service_id.hyphenize())


@dataclass
class Fault:
    """Fail `times` attempts (None: every one) of `service`.`operation` ("*": any), after letting `skip` through."""

    service: str  # the client's name: "ec2", "route53", "sesv2", "s3", "sts", ...
    operation: str
    kind: Kind
    times: int | None = 1
    skip: int = 0
    region: str | None = None  # only requests to this region's endpoint
    when: Callable[[AWSPreparedRequest], bool] | None = None
    status: int | None = None  # override the kind's usual answer
    code: str | None = None
    seen: int = 0  # matching attempts so far, failed or not
    injected: int = 0

    def matches(self, service_id: str, operation: str, request: AWSPreparedRequest) -> bool:
        return (
            _service_id(self.service) == service_id
            and self.operation in ("*", operation)
            and (self.region is None or self.region in (urlsplit(request.url).hostname or "").split("."))
            and (self.when is None or self.when(request))
        )

    def strikes(self) -> bool:
        """Count one matching attempt; True when this one is to fail."""
        self.seen += 1
        due = self.seen > self.skip and (self.times is None or self.injected < self.times)
        self.injected += due
        return due


@dataclass
class Faults:
    """A set of planned faults and what they did; register with `on(client)` or `Clients(handlers=...)`."""

    planned: list[Fault] = field(default_factory=list)
    log: list[str] = field(default_factory=list)  # "kind service.Operation", one per fault injected
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)  # sweeps call from threads

    def fail(self, service: str, operation: str, kind: Kind, **options: Any) -> Fault:
        fault = Fault(service, operation, kind, **options)
        _service_id(service)  # an unknown service name fails here, not silently at send time
        self.planned.append(fault)
        return fault

    @property
    def injected(self) -> int:
        return len(self.log)

    def handlers(self) -> list[tuple[str, Handler]]:
        # Deeper than moto's own `before-send` stubber and the `needs-retry.<service>` retry handler,
        # so both hooks run before them (botocore calls the most specific registrations first).
        return [("before-send.*.*", self.on_send), ("needs-retry.*.*", retry_at_once)]

    def on(self, client: Any) -> Any:
        """Inject into this one client (one account and region); returns it."""
        for event, handler in self.handlers():
            client.meta.events.register(event, handler)
        return client

    def on_send(self, request: AWSPreparedRequest, event_name: str, **kwargs: Any) -> AWSResponse | None:
        service_id, operation = event_name.split(".", 2)[1:]
        with self._lock:
            fault = next((f for f in self.planned if f.matches(service_id, operation, request) and f.strikes()), None)
            if fault is None:
                return None
            self.log.append(f"{fault.kind} {fault.service}.{operation}")
            INJECTED[fault.kind] += 1
        return _answer(fault, request)


def body_names(text: str) -> Callable[[AWSPreparedRequest], bool]:
    """A `when=` predicate: the request's body mentions `text` (an AssumeRole naming one account's role)."""

    def match(request: AWSPreparedRequest) -> bool:
        body = request.body
        if isinstance(body, bytes):
            return text.encode() in body
        return isinstance(body, str) and text in body

    return match


def _answer(fault: Fault, request: AWSPreparedRequest) -> AWSResponse:
    if fault.kind == "timeout":
        raise ConnectTimeoutError(endpoint_url=request.url)
    if fault.kind == "unreachable":
        raise EndpointConnectionError(endpoint_url=request.url)
    answers = _ANSWERS[fault.kind]
    status, code = answers.get(fault.service, answers["*"])
    status, code = fault.status or status, fault.code or code
    headers, body = _error_body(fault.service, code, f"injected {fault.kind}")
    http_headers = HTTPHeaders()
    for name, value in headers.items():
        http_headers[name] = value
    # botocore calls every `before-send` handler even once one has answered; moto's stubber comes
    # after this one and would still carry the request out. Pointed at a host nothing serves, the
    # request is one moto does not recognise: the injected answer is the only thing that happens.
    request.url = "https://injected.invalid/"
    return AWSResponse(request.url, status, http_headers, _Raw(body))


def _error_body(service: str, code: str, message: str) -> tuple[dict[str, str], bytes]:
    """An error in the service's own wire format, so botocore's parser reads it like the real one."""
    protocol = _service_model(service).protocol
    request_id = str(uuid4())
    if protocol in ("json", "rest-json"):
        body = json.dumps({"__type": code, "message": message}).encode()
        return {"x-amzn-ErrorType": code, "x-amzn-RequestId": request_id, "Content-Type": "application/json"}, body
    fields = f"<Code>{code}</Code><Message>{message}</Message>"
    if protocol == "ec2":
        xml = f"<Response><Errors><Error>{fields}</Error></Errors><RequestID>{request_id}</RequestID></Response>"
    elif service == "s3":
        xml = f"<Error>{fields}<RequestId>{request_id}</RequestId></Error>"
    else:  # query and rest-xml
        fields = f"<Error><Type>Sender</Type>{fields}</Error><RequestId>{request_id}</RequestId>"
        xml = f"<ErrorResponse>{fields}</ErrorResponse>"
    return {"Content-Type": "text/xml"}, f'<?xml version="1.0" encoding="UTF-8"?>\n{xml}'.encode()


class _Raw(BytesIO):
    """The raw body botocore streams an `AWSResponse`'s content from."""

    def stream(self, **_: Any) -> Any:
        yield self.getvalue()


def retry_at_once(**kwargs: Any) -> float | None:
    """`needs-retry`: 0 s (retry now) when botocore's standard conditions retry this attempt, else no opinion.

    The attempts allowed are the client's own (`client_config.retries`), so a client configured for
    fewer attempts gives up as it would in production. Legacy-mode clients are left to botocore.
    """
    config = kwargs["request_dict"]["context"]["client_config"]
    retries = config.retries or {}
    if retries.get("mode") not in ("standard", "adaptive"):
        return None
    context = RetryEventAdapter().create_retry_context(**kwargs)
    conditions = StandardRetryConditions(max_attempts=retries.get("total_max_attempts", 3))
    return 0.0 if conditions.is_retryable(context) else None
