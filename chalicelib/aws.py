"""The only place that builds AWS sessions and clients.

Bots act in the home account (the Lambda role) and in member accounts through STS AssumeRole with an
ExternalId. Clients are cached per (account, region, service) for the life of the container, which
keeps warm invocations free of client construction, and assumed-role credentials refresh themselves
shortly before they expire, so a long sweep never runs on expired keys. Retries (adaptive, which
also paces requests when AWS throttles) and timeouts are set once, here. `AWS_ENDPOINT_URL` is
honoured by botocore itself, which is how the demo and the tests point everything at moto's server.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any, Literal, overload

import boto3
import botocore.loaders
import botocore.session
from botocore.config import Config
from botocore.credentials import CredentialProvider, CredentialResolver, DeferredRefreshableCredentials
from botocore.exceptions import BotoCoreError, ClientError
from botocore.retries.standard import OrRetryChecker, RetryContext, ThrottledRetryableChecker, TransientRetryableChecker

from chalicelib.fleet import Found, OrganizationAccounts, OrganizationUnavailableError, members
from chalicelib.names import FUNCTION_ARN

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient
    from mypy_boto3_ec2 import EC2Client
    from mypy_boto3_lambda import LambdaClient
    from mypy_boto3_organizations import OrganizationsClient
    from mypy_boto3_route53 import Route53Client
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_sesv2 import SESV2Client
    from mypy_boto3_sqs import SQSClient
    from mypy_boto3_sts import STSClient

    from chalicelib.policy import AccountsPolicy, MemberBot, Organization

BOTO_CONFIG = Config(
    retries={"mode": "adaptive", "max_attempts": 8},
    connect_timeout=5,
    read_timeout=15,
    user_agent_appid="opsbots",  # type: ignore[call-arg]  # botocore has it; the stubs lag
)
SESSION_NAME = "opsbots"
HOME = "home"
# What botocore's standard retry mode retries: throttling, 5xx, timeouts, connections that fail.
_TRANSIENT = OrRetryChecker([TransientRetryableChecker(), ThrottledRetryableChecker()])


def error_code(error: ClientError) -> str:
    return str(error.response.get("Error", {}).get("Code", ""))


def error_message(error: ClientError) -> str:
    return str(error.response.get("Error", {}).get("Message", ""))


def tags_of(tags: Iterable[Mapping[str, object]] | None) -> dict[str, str]:
    """AWS's tag list ([{"Key": k, "Value": v}, ...]) as a mapping; none at all is no tags."""
    return {str(tag["Key"]): str(tag["Value"]) for tag in tags or ()}


def reason(error: BaseException) -> str:
    """One line for a log, a result or an email: the AWS error code and message, or the exception."""
    if isinstance(error, ClientError):
        return f"{error_code(error)}: {error_message(error)}".strip()
    return f"{type(error).__name__}: {error}"


def is_transient(error: BaseException) -> bool:
    """An error botocore itself would have retried had it attempts left: trying again later may succeed.

    AccessDenied, a missing ExternalId or a malformed request are not: the same call fails the same way.
    """
    if isinstance(error, ClientError):
        status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        context = RetryContext(1, parsed_response=error.response, http_response=SimpleNamespace(status_code=status))
    elif isinstance(error, BotoCoreError):
        context = RetryContext(1, caught_exception=error)
    else:
        return False
    return bool(_TRANSIENT.is_retryable(context))


@dataclass(frozen=True)
class Target:
    """Where to act: the home account (`role_arn=None`) or a member account through its role."""

    account_id: str
    region: str
    role_arn: str | None = None


class MissingExternalIdError(BotoCoreError):
    """Member roles trust the home account only with the shared ExternalId; never assume without it."""

    fmt = "cannot assume {role_arn}: OPSBOTS_EXTERNAL_ID is not set (see the README: member-account role)"

    def __init__(self, role_arn: str) -> None:
        super().__init__(role_arn=role_arn)


class _AssumedRoleProvider(CredentialProvider):
    METHOD = "opsbots-assume-role"

    def __init__(self, sts: STSClient, role_arn: str, external_id: str | None, session_name: str) -> None:
        super().__init__()
        self._sts = sts
        self._role_arn = role_arn
        self._external_id = external_id
        self._session_name = session_name

    def load(self) -> DeferredRefreshableCredentials:
        # Deferred: no STS call until the first API call that needs these credentials.
        return DeferredRefreshableCredentials(refresh_using=self._fetch, method=self.METHOD)

    def _fetch(self) -> dict[str, str]:
        if not self._external_id:
            raise MissingExternalIdError(self._role_arn)
        credentials = self._sts.assume_role(
            RoleArn=self._role_arn, RoleSessionName=self._session_name, ExternalId=self._external_id
        )["Credentials"]
        return {
            "access_key": credentials["AccessKeyId"],
            "secret_key": credentials["SecretAccessKey"],
            "token": credentials["SessionToken"],
            "expiry_time": credentials["Expiration"].isoformat(),
        }


class Clients:
    """Client factory and cache; one per container, shared by every handler and thread."""

    def __init__(
        self,
        *,
        external_id: str | None = None,
        home_session: boto3.Session | None = None,
        config: Config = BOTO_CONFIG,
        handlers: Sequence[tuple[str, Callable[..., Any]]] = (),
        models: Path | None = None,
    ) -> None:
        """`handlers` are botocore event handlers registered on every session built here (home and
        assumed-role alike): how tests and benchmarks count calls or inject faults without patching.
        `models`: service models botocore reads before its own (deploy/service_models.py), in every session
        built here; a `home_session` given keeps its own."""
        self._handlers = tuple(handlers)
        # One loader for every session built here, so a service's model is read once per container, not once per
        # account.
        self._loader = botocore.loaders.create_loader(str(models) if models else None)
        self._home = home_session or self._with_loader(botocore.session.Session())
        for event, handler in self._handlers:
            self._home.events.register(event, handler)
        self._external_id = external_id
        self._config = config
        self._session_name = SESSION_NAME
        self._sessions: dict[tuple[str, str], boto3.Session] = {}
        self._clients: dict[tuple[str, str, str, str], Any] = {}
        self._home_account_id: str | None = None
        self._lock = threading.RLock()
        self._organization = OrganizationAccounts(self._organizations)
        self._merged: tuple[AccountsPolicy, list[Found], AccountsPolicy] | None = None  # the last fleet() made

    def act_as(self, function: str) -> None:
        """Name the member-account sessions after the Lambda function, so member CloudTrail tells the bots apart.

        A Lambda container runs one function, so in AWS this is said once per container; the tests and the demo
        run every function in one process, and each invocation names itself before it acts.
        """
        with self._lock:
            self._session_name = f"{SESSION_NAME}-{function}"[:64]

    @overload
    def client(self, service: Literal["ec2"], target: Target) -> EC2Client: ...
    @overload
    def client(self, service: Literal["sesv2"], target: Target) -> SESV2Client: ...
    @overload
    def client(self, service: Literal["dynamodb"], target: Target) -> DynamoDBClient: ...
    @overload
    def client(self, service: Literal["sts"], target: Target) -> STSClient: ...
    @overload
    def client(self, service: Literal["route53"], target: Target) -> Route53Client: ...
    @overload
    def client(self, service: Literal["sqs"], target: Target) -> SQSClient: ...
    @overload
    def client(self, service: Literal["s3"], target: Target) -> S3Client: ...
    @overload
    def client(self, service: Literal["organizations"], target: Target) -> OrganizationsClient: ...
    @overload
    def client(self, service: Literal["lambda"], target: Target) -> LambdaClient: ...

    def client(self, service: str, target: Target) -> Any:
        key = (target.role_arn or HOME, self._session_name if target.role_arn else "", target.region, service)
        with self._lock:
            if key not in self._clients:
                session = self._session(target.role_arn)
                self._clients[key] = session.client(service, region_name=target.region, config=self._config)  # type: ignore[call-overload]
            return self._clients[key]

    @property
    def home_region(self) -> str:
        return self._home.region_name or "us-east-1"

    def know_home_account(self, function_arn: str) -> None:
        """The Lambda's own account as the ARN Lambda invoked it by names it: what `home` would otherwise ask
        STS for, at the cost of a client and a call in every cold container. Lambda writes that ARN, not the
        event's sender; anything that is not a function ARN leaves the look-up to STS."""
        found = FUNCTION_ARN.fullmatch(function_arn)
        if found is not None:
            with self._lock:
                self._home_account_id = self._home_account_id or found["account"]

    def home(self, region: str | None = None) -> Target:
        """The Lambda's own account: from the ARN it was invoked by, else looked up once with STS."""
        region = region or self.home_region
        with self._lock:
            if self._home_account_id is None:
                sts = self.client("sts", Target(HOME, region))
                self._home_account_id = sts.get_caller_identity()["Account"]
            return Target(self._home_account_id, region)

    def target_for(self, account_id: str, region: str, accounts: AccountsPolicy, bot: MemberBot) -> Target | None:
        """Where `bot` handles an event from `account_id`: through its role in a member, home, or nowhere.

        An account accounts.yml does not list is looked for in its organization, if it names one (an
        OrganizationUnavailableError when that cannot be listed: the event is retried, not dropped).
        """
        home = self.home(region)
        if home.account_id == account_id:
            return home
        member = accounts.member(account_id)
        if member is None and accounts.organization is not None:
            accounts = self.fleet(accounts)
            member = accounts.member(account_id)
        return Target(account_id, region, accounts.role_arn(member, bot)) if member else None

    def units(self, accounts: AccountsPolicy, bot: MemberBot) -> list[tuple[Target, str]]:
        """Every account/region `bot`'s scheduled run covers, with the account's name: home first. When the
        organization cannot be listed, the run goes on with the accounts listed (logged, counted, alarmed on)."""
        return self.units_known(accounts, bot)[0]

    def units_known(self, accounts: AccountsPolicy, bot: MemberBot) -> tuple[list[tuple[Target, str]], bool]:
        """`units`, and whether they are the whole fleet: False when the organization could not be listed, so a
        run must not take an account it did not cover for one that left."""
        try:
            members, complete = self.fleet(accounts), True
        except OrganizationUnavailableError:
            members, complete = accounts, False
        return units_of(members, self.home().account_id, bot), complete

    def fleet(self, accounts: AccountsPolicy) -> AccountsPolicy:
        """accounts.yml with the organization's accounts it names (chalicelib/fleet.py) added to those it lists;
        merged once per listing, not once per event."""
        if accounts.organization is None:
            return accounts
        found = self._organization.found(accounts.organization)
        with self._lock:
            merged = self._merged
            if merged is None or merged[0] is not accounts or merged[1] is not found:
                fleet = accounts.model_copy(update={"accounts": members(accounts, found, self.home().account_id)})
                merged = self._merged = (accounts, found, fleet)
            return merged[2]

    def _organizations(self, organization: Organization) -> OrganizationsClient:
        # Organizations answers in us-east-1 only, whatever region the bots run in.
        return self.client("organizations", Target(organization.account, "us-east-1", organization.role_arn))

    def _session(self, role_arn: str | None) -> boto3.Session:
        if role_arn is None:
            return self._home
        key = (role_arn, self._session_name)
        if key not in self._sessions:
            sts = self.client("sts", Target(HOME, self.home_region))
            core = botocore.session.Session()
            provider = _AssumedRoleProvider(sts, role_arn, self._external_id, self._session_name)
            core.register_component("credential_provider", CredentialResolver([provider]))
            for event, handler in self._handlers:
                core.register(event, handler)
            self._sessions[key] = self._with_loader(core)
        return self._sessions[key]

    def _with_loader(self, core: botocore.session.Session) -> boto3.Session:
        core.register_component("data_loader", self._loader)
        session = boto3.Session(botocore_session=core)
        # boto3 appends its own data path to the loader each time; keep the shared list unique.
        self._loader.search_paths[:] = list(dict.fromkeys(self._loader.search_paths))
        return session


def units_of(accounts: AccountsPolicy, home_account_id: str, bot: MemberBot) -> list[tuple[Target, str]]:
    """The home account in the default regions, then every member account in its own regions (through
    `bot`'s role)."""
    return [(Target(home_account_id, region), HOME) for region in accounts.defaults.regions] + [
        (Target(member.id, region, accounts.role_arn(member, bot)), member.name)
        for member in accounts.accounts
        for region in accounts.regions_of(member)
    ]
