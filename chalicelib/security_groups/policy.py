"""The security-group guard's policy: the contents of security_groups.yml."""

from __future__ import annotations

import re
from dataclasses import dataclass
from ipaddress import IPv4Network, IPv6Network, ip_network
from typing import Annotated, Literal

from pydantic import (
    BeforeValidator,
    Field,
    PlainValidator,
    ValidationInfo,
    WithJsonSchema,
    field_validator,
)

from chalicelib.policy import NotifySettings, RuleName, StrictModel, unique

_PORT_RANGE = re.compile(r"\s*(\d{1,5})\s*(?:-\s*(\d{1,5})\s*)?")
_MAX_PORT = 65535


@dataclass(frozen=True)
class PortRange:
    """An inclusive range of TCP/UDP ports; a single port has first == last."""

    first: int
    last: int

    def __post_init__(self) -> None:
        for port in (self.first, self.last):
            if not 0 <= port <= _MAX_PORT:
                raise ValueError(f"port {port} is outside 0-{_MAX_PORT}")
        if self.first > self.last:
            raise ValueError(f"port range {self.first}-{self.last} ends before it starts")

    def __str__(self) -> str:
        return str(self.first) if self.first == self.last else f"{self.first}-{self.last}"

    @classmethod
    def parse(cls, value: object) -> PortRange:
        """Read ``22`` or ``"20-25"`` as written in a policy file."""
        if isinstance(value, PortRange):
            return value
        if isinstance(value, int) and not isinstance(value, bool):
            return cls(value, value)
        match = _PORT_RANGE.fullmatch(value) if isinstance(value, str) else None
        if match is None:
            raise ValueError(f"{value!r} is not a port or range")
        first, last = match.group(1), match.group(2) or match.group(1)
        return cls(int(first), int(last))

    def contains(self, port: int) -> bool:
        return self.first <= port <= self.last

    def overlaps(self, other: PortRange) -> bool:
        return self.first <= other.last and other.first <= self.last


def _parse_cidr(value: object) -> IPv4Network | IPv6Network:
    if isinstance(value, IPv4Network | IPv6Network):
        return value
    if isinstance(value, str):
        try:
            return ip_network(value, strict=False)
        except ValueError:
            pass
    raise ValueError(f"{value!r} is not a CIDR")


def _parse_sources(value: object) -> object:
    if value in ("internet", "any"):
        return value
    if isinstance(value, list | tuple) and value:
        return tuple(_parse_cidr(item) for item in value)
    raise ValueError(f"{value!r} is not 'internet', 'any' or a list of CIDRs")


Protocol = Literal["tcp", "udp", "icmp", "icmpv6"]
_Port = Annotated[
    PortRange,
    PlainValidator(PortRange.parse),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "integer", "minimum": 0, "maximum": _MAX_PORT},
                {"type": "string", "pattern": r"^\d{1,5}(-\d{1,5})?$"},
            ]
        }
    ),
]
_Cidr = Annotated[IPv4Network | IPv6Network, BeforeValidator(_parse_cidr)]
_Sources = Annotated[
    Literal["internet", "any"] | tuple[IPv4Network | IPv6Network, ...], BeforeValidator(_parse_sources)
]


class SecurityGroupRule(StrictModel):
    """Security group permissions that are not allowed (for egress, sources are destinations)."""

    name: RuleName
    direction: Literal["ingress", "egress"] = "ingress"
    protocols: tuple[Protocol, ...] | None = None
    ports: tuple[_Port, ...] | None = None
    except_ports: tuple[_Port, ...] | None = None
    sources: _Sources
    allowed_sources: tuple[_Cidr, ...] = ()

    @field_validator("except_ports")
    @classmethod
    def check_not_both_port_lists(
        cls, except_ports: tuple[PortRange, ...] | None, info: ValidationInfo
    ) -> tuple[PortRange, ...] | None:
        if except_ports is not None and info.data.get("ports") is not None:
            raise ValueError("give either ports or except_ports, not both")
        return except_ports


class SecurityGroupsPolicy(StrictModel):
    """Contents of security_groups.yml."""

    mode: Literal["enforce", "report"] = "enforce"
    notify: NotifySettings
    exemption_tag: Annotated[str, Field(min_length=1)] = "opsbots:exempt-until"
    # The longest an exemption tag may keep a group's violations open, from the time it is read: a tag
    # anyone who can open a rule can often set must not be an endless bypass.
    max_exemption_days: Annotated[int, Field(ge=1, le=3650)] = 90
    rules: Annotated[tuple[SecurityGroupRule, ...], unique("rules", "name", lambda rule: rule.name)]

    def summary(self) -> str:
        return f"{len(self.rules)} rule(s)"
