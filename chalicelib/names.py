"""What AWS accepts as an account id, a region name, an IAM role ARN and a Lambda function ARN.

Checked wherever one arrives from outside (policy files, events, queue messages) before it becomes
part of an endpoint name or an ARN: a value that names no real account or region is malformed input,
not a reason to call AWS somewhere odd.
"""

from __future__ import annotations

import re

ACCOUNT_ID = re.compile(r"[0-9]{12}")
REGION_NAME = re.compile(r"[a-z]{2}(-[a-z]+)+-[0-9]+")
ROLE_ARN = re.compile(r"arn:aws[a-z-]*:iam::[0-9]{12}:role/[\w+=,.@/-]{1,512}")
# The ARN Lambda invokes a function by: unqualified, or with its version or alias.
FUNCTION_ARN = re.compile(
    rf"arn:aws[a-z-]*:lambda:{REGION_NAME.pattern}:(?P<account>{ACCOUNT_ID.pattern}):function:[\w-]{{1,64}}(:[\w$-]+)?"
)


def anchored(pattern: re.Pattern[str]) -> str:
    """The pattern as JSON Schema and pydantic's `pattern=` read it: matching the whole value."""
    return f"^{pattern.pattern}$"
