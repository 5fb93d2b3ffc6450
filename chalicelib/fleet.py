"""Member accounts from an AWS Organization: listed at run time, so hundreds of accounts need no hand-kept list.

With `organization:` in accounts.yml, the bots list the active accounts of the named OUs (and the OUs
under them), or of the whole organization, through a read-only role in the management account or a
delegated administrator, and treat each like a listed account. What accounts.yml lists about an
account wins (its name, regions and roles); an excluded account, a suspended or closing one, and the
home account (always the bots' own) are never members. A container keeps what it listed for
`LIFETIME`; when Organizations cannot be read, it goes on with what it listed last (or with the
listed accounts alone), logged and counted (`OrganizationUnavailable`, alarmed on).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from botocore.exceptions import BotoCoreError, ClientError

from chalicelib.observability import logger, metrics

if TYPE_CHECKING:
    from mypy_boto3_organizations import OrganizationsClient

    from chalicelib.policy import AccountsPolicy, MemberAccount, Organization

LIFETIME: Final = 600.0  # seconds a container keeps the accounts it listed: new accounts are found within it


@dataclass(frozen=True)
class Found:
    """An active account of the organization."""

    id: str
    name: str


def _active(account: Any) -> bool:
    # `State` replaces `Status` (ACTIVE, SUSPENDED, PENDING_CLOSURE, ...); either says whether it is active.
    return bool((account.get("State") or account.get("Status")) == "ACTIVE")


def list_accounts(organizations: OrganizationsClient, ous: Sequence[str]) -> list[Found]:
    """The active accounts under `ous` and every OU beneath them, or of the whole organization; each once."""
    if not ous:
        pages = organizations.get_paginator("list_accounts").paginate()
        return [Found(a["Id"], a["Name"]) for page in pages for a in page["Accounts"] if _active(a)]
    found: dict[str, Found] = {}
    accounts = organizations.get_paginator("list_accounts_for_parent")
    children = organizations.get_paginator("list_organizational_units_for_parent")
    for ou in ous:
        pending = [ou]
        while pending:
            parent = pending.pop()
            for page in accounts.paginate(ParentId=parent):
                for account in page["Accounts"]:
                    if _active(account):
                        found.setdefault(account["Id"], Found(account["Id"], account["Name"]))
            pending += [
                unit["Id"] for page in children.paginate(ParentId=parent) for unit in page["OrganizationalUnits"]
            ]
    return list(found.values())


def members(accounts: AccountsPolicy, found: Sequence[Found], home_account_id: str) -> tuple[MemberAccount, ...]:
    """The listed accounts, then the organization's that are neither listed, excluded nor the home account."""
    from chalicelib.policy import MemberAccount

    organization = accounts.organization
    listed = {account.id for account in accounts.accounts}
    skipped = listed | {home_account_id} | set(organization.exclude if organization else ())
    regions = organization.regions if organization else None
    return accounts.accounts + tuple(
        MemberAccount(id=account.id, name=account.name or account.id, regions=regions)
        for account in found
        if account.id not in skipped
    )


def in_words(organization: Organization) -> str:
    """What `organization:` adds, in words, where no AWS call may be made (validate, simulate)."""
    where = (
        f"under {', '.join(organization.ous)} and the OUs beneath" if organization.ous else "of the whole organization"
    )
    excluded = f", except {', '.join(organization.exclude)}" if organization.exclude else ""
    regions = f" in {', '.join(organization.regions)}" if organization.regions else ""
    return f"the active accounts {where}{excluded}{regions}, listed at run time through {organization.role_arn}"


class OrganizationUnavailableError(Exception):
    """The organization's accounts could not be listed, and none were listed before in this container."""


class OrganizationAccounts:
    """What a container listed of the organization, kept for `LIFETIME` and shared by its threads."""

    def __init__(
        self,
        client_for: Callable[[Organization], OrganizationsClient],
        lifetime: float = LIFETIME,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._client_for = client_for
        self._lifetime = lifetime
        self._clock = clock
        self._lock = threading.Lock()
        self._kept: tuple[Organization, float, list[Found]] | None = None

    def found(self, organization: Organization) -> list[Found]:
        """The organization's active accounts: listed again when older than the lifetime. When they cannot be
        listed, the last ones listed (stale, counted), or OrganizationUnavailableError without any."""
        with self._lock:  # one listing at a time: a sweep's threads wait for it rather than each list it
            kept = self._kept
            if kept and kept[0] == organization and self._clock() - kept[1] < self._lifetime:
                return kept[2]
            try:
                found = list_accounts(self._client_for(organization), organization.ous)
            except (ClientError, BotoCoreError) as error:
                metrics.add_metric(name="OrganizationUnavailable", unit="Count", value=1)
                stale = kept[2] if kept and kept[0] == organization else None
                logger.error(
                    "the organization's accounts could not be listed",
                    extra={
                        "role": organization.role_arn,
                        "error": str(error),
                        "using": "last listed" if stale else "none",
                    },
                )
                if stale is None:
                    raise OrganizationUnavailableError(f"{organization.role_arn}: {error}") from error
                return stale
            self._kept = (organization, self._clock(), found)
            logger.info("organization listed", extra={"accounts": len(found), "ous": list(organization.ous)})
            return found
