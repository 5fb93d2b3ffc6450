"""What AWS accepts as an account id, a region name and an IAM role ARN.

Checked wherever one arrives from outside (policy files, events, queue messages) before it becomes
part of an endpoint name or an ARN: a value that names no real account or region is malformed input,
not a reason to call AWS somewhere odd.
"""

from __future__ import annotations

import re

ACCOUNT_ID = re.compile(r"[0-9]{12}")
REGION_NAME = re.compile(r"[a-z]{2}(-[a-z]+)+-[0-9]+")
ROLE_ARN = re.compile(r"arn:aws[a-z-]*:iam::[0-9]{12}:role/[\w+=,.@/-]{1,512}")


def anchored(pattern: re.Pattern[str]) -> str:
    """The pattern as JSON Schema and pydantic's `pattern=` read it: matching the whole value."""
    return f"^{pattern.pattern}$"
