"""What `opsbots simulate` shows for the website checks: the checks a run at the event's time would make.

Which checks are due, and whether a maintenance window holds their state, come from the handler's own
decisions; no request is sent (a dry run sends nothing anywhere, and names only what it would ask).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from chalicelib.websites.decisions import is_due
from chalicelib.websites.policy import WebsitesPolicy

if TYPE_CHECKING:
    from collections.abc import Mapping

    from chalicelib.cli import DryRun


def check_websites(raw: Mapping[str, Any], run: DryRun) -> None:
    policy = run.policies.of(WebsitesPolicy)
    at = run.at.replace(second=0, microsecond=0)
    due = [check for check in policy.checks if is_due(policy.setting(check, "every"), at)]
    run.out.write(f"  {len(due)} of {len(policy.checks)} check(s) due at {at:%Y-%m-%d %H:%M} UTC, all at once:\n")
    for check in due:
        quiet = " (in maintenance: its state stands still)" if policy.in_maintenance(check.name, at) else ""
        timeout = policy.setting(check, "timeout").total_seconds()
        run.out.write(f"    {check.method} {check.url}, within {timeout:g} s{quiet}\n")
    if due:
        run.out.write(
            "  then one dynamodb.batch_get_item for their states, a conditional put_item per check whose state\n"
            "  changed, and an email for each that went DOWN or came back UP (or is due a reminder)\n"
        )
    if due and policy.status_page:
        page = policy.status_page
        run.out.write(
            f"  and the status page: the run recorded in s3://{page.bucket}/{page.history_key} (one get_object,\n"
            f"  one put_object on condition it is unchanged), then the page written to s3://{page.bucket}/{page.key}\n"
        )
