"""The DNS bot's policy: the contents of dns.yml."""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import (
    Field,
    field_validator,
)

from chalicelib.policy import NonEmpty, StrictModel, check_accounts_known, matching, string_schema, unique

_ZONE_NAME = re.compile(
    r"(?=.{1,253}\.?$)([a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?\.)*[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?\.?"
)


_ZoneName = Annotated[str, matching(_ZONE_NAME, "a DNS zone name like internal.example.com"), string_schema(_ZONE_NAME)]
_TagKey = Annotated[str, Field(min_length=1, max_length=128)]


class DnsZone(StrictModel):
    """A hosted zone the DNS bot writes instance records into."""

    zone: _ZoneName
    address: Literal["private", "public", "ipv6"]
    ttl: Annotated[int, Field(ge=0, le=2147483647)] = 60
    # Whose instances may have names here: "all", or ids from accounts.yml and "home". Default: every
    # account for a private zone, the home account only for a public one (a member account must not be
    # able to name itself login.example.com).
    accounts: Literal["all"] | tuple[str, ...] | None = None

    _known_accounts = field_validator("accounts")(check_accounts_known)

    def admits(self, account: str, private_zone: bool) -> bool:
        """Whether an instance of `account` ("home" or an id) may have a name in this zone."""
        allowed = self.accounts or ("all" if private_zone else ("home",))
        return allowed == "all" or account in allowed


class DnsPolicy(StrictModel):
    """Contents of dns.yml."""

    zones: Annotated[
        NonEmpty[DnsZone], unique("zones", "zone and address", lambda zone: f"{zone.zone} ({zone.address})")
    ]
    name_tag: _TagKey = "Name"
    alias_tag: _TagKey | None = "opsbots:dns-aliases"
    reverse: bool = True
    select_tag: _TagKey | None = None

    def summary(self) -> str:
        return f"{len(self.zones)} zone(s)"
