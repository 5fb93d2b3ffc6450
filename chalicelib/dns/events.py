"""EC2 instance state changes, read into a frozen dataclass: only a hint to look at the instance again."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from chalicelib.events import Envelope, MalformedEventError, id_of


@dataclass(frozen=True)
class StateChange:
    """An "EC2 Instance State-change Notification": only a hint to look at the instance again."""

    event_id: str
    account_id: str
    region: str
    instance_id: str
    state: str


def parse_state_change(raw: Mapping[str, Any]) -> StateChange:
    event_id = id_of(raw)
    try:
        envelope = Envelope.model_validate(raw)
        instance_id, state = envelope.detail["instance-id"], envelope.detail["state"]
    except (ValidationError, KeyError) as error:
        raise MalformedEventError(event_id, f"not an EC2 state-change event: {error}") from None
    if not (isinstance(instance_id, str) and instance_id.startswith("i-") and isinstance(state, str)):
        raise MalformedEventError(event_id, f"bad instance-id/state: {instance_id!r}/{state!r}")
    return StateChange(envelope.id, envelope.account, envelope.region, instance_id, state)
