"""The security group guard's sample event, made real: SSH opened to the world in a group of the estate, and the
guard invoked through Chalice's test client."""

from __future__ import annotations

from typing import Any

from tests.support.aws import load_event
from tests.support.estate import Estate, tcp

SSH_EVENT_GROUP = "sg-0a7c3e91d54b26f80"
SSH_EVENT_RULE = "sgr-0e3b7d29a5c1f8464"


def invoke(lambdas: Any, event: dict[str, Any], name: str = "on_security_group_change") -> dict[str, Any]:
    payload: dict[str, Any] = lambdas.invoke(name, event).payload
    return payload


def open_ssh(estate: Estate, tags: dict[str, str] | None = None) -> tuple[str, str, dict[str, Any]]:
    """SSH opened to the world in a new home group, and CloudTrail's event for it."""
    group = estate.group(tags=tags)
    [rule] = estate.authorize(group, [tcp(22)])
    return group, rule, load_event("sg-authorize-ingress-ssh-world", **{SSH_EVENT_GROUP: group, SSH_EVENT_RULE: rule})
