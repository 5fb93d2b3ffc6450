"""What a Lambda container builds once and every invocation reuses: settings, clients, policies.

Built lazily on first use rather than at import, so importing the app stays cheap and a broken
policy file is reported by the invocation that needs it (with every problem listed) instead of
failing the container's init with a bare traceback.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache, cached_property
from typing import TYPE_CHECKING, Any, TypeVar, cast

from chalicelib import dedupe
from chalicelib.aws import HOME, Clients, Target
from chalicelib.bots import BOT_OF
from chalicelib.observability import logger, metrics
from chalicelib.outbox import Mailer, mailer_for
from chalicelib.settings import BotOffError, Settings

if TYPE_CHECKING:
    from chalicelib.policy import Policies, PolicyError

Built = TypeVar("Built")


@dataclass
class Runtime:
    settings: Settings
    clients: Clients = field(init=False)
    _built: dict[Callable[[Runtime], Any], Any] = field(init=False, default_factory=dict)

    def __post_init__(self) -> None:
        self.clients = Clients(external_id=self.settings.external_id, models=self.settings.service_models)

    @cached_property
    def policies(self) -> Policies:
        """accounts.yml and each bot's file, read when the bot first uses it (chalicelib/policy.py)."""
        from chalicelib.policy import Policies

        return Policies(self.settings.policies_dir, on_problem=_report_invalid)

    @cached_property
    def _dynamodb_once(self) -> dedupe.DynamoDBOnce | None:
        table = self.settings.idempotency_table
        if not table:
            return None
        return dedupe.DynamoDBOnce(table, self.clients.client("dynamodb", Target(HOME, self.clients.home_region)))

    def once(self, lambda_context: Any) -> dedupe.Once:
        """Run-once guard for this invocation; without a table, every step simply runs."""
        return self._dynamodb_once.bind(lambda_context) if self._dynamodb_once else dedupe.always

    def acting_as(self, function: str) -> Runtime:
        """This invocation is `function`'s: its member-account sessions carry its name.

        Its bot (chalicelib/bots.py) is checked first, before any of its resources: off without its
        policy file (BotOffError), refusing to act with a mistake in it (PolicyError).
        """
        self.policies.require(BOT_OF[function].name)
        self.clients.act_as(function)
        return self

    def built(self, factory: Callable[[Runtime], Built]) -> Built:
        """What `factory` builds from this runtime, once per container: a bot's tables, queues and clients."""
        if factory not in self._built:
            self._built[factory] = factory(self)
        return cast("Built", self._built[factory])

    def mailer(self, bot: str, lambda_context: Any) -> Mailer:
        """This invocation's emails: once per key, parked in the outbox when SES fails (chalicelib/outbox.py)."""
        request_id = getattr(lambda_context, "aws_request_id", None)
        return mailer_for(bot, self.clients, self.settings.idempotency_table, request_id)


def _report_invalid(error: PolicyError) -> None:
    logger.error(
        "invalid policy: this bot will not act until it is fixed",
        extra={"problems": [str(problem) for problem in error.problems]},
    )
    metrics.add_metric(name="InvalidPolicy", unit="Count", value=1)


def answer_when_off(event: Any, get_response: Callable[[Any], Any]) -> Any:
    """Chalice middleware: a function whose bot has no policy file answers "off" and does nothing else."""
    try:
        return get_response(event)
    except BotOffError as off:
        logger.info("bot off: no policy file", extra=off.report())
        metrics.add_metric(name="BotOff", unit="Count", value=1)  # invoked, yet off: a file left out by mistake?
        return off.report()


def know_own_account(event: Any, get_response: Callable[[Any], Any]) -> Any:
    """Chalice middleware: the container learns its account from the ARN Lambda invoked it by (no STS call)."""
    current().clients.know_home_account(str(getattr(getattr(event, "context", None), "invoked_function_arn", "")))
    return get_response(event)


class NotConfiguredError(Exception):
    """A bot was invoked without the resources it needs; fail loudly rather than act half-way."""


@cache
def current() -> Runtime:
    """The container's runtime; `current.cache_clear()` re-reads the environment (tests, demo)."""
    return Runtime(Settings.from_environ())
