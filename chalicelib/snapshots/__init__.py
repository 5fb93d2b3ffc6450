"""Snapshot bot: scheduled EBS snapshots across accounts, with retention that never touches others'.

Ownership is proven by the ledger, never by tags: every snapshot (and DR copy) opsbots takes is recorded
in a DynamoDB table only the bot writes (`OPSBOTS_SNAPSHOT_LEDGER`: its account, region, policy, volume,
window and, for a copy, its source). Tags (`opsbots:managed`, `opsbots:policy`, `opsbots:window`, ...)
are still written, because they let people and the IAM condition on `ec2:DeleteSnapshot` tell opsbots'
snapshots apart; but anyone allowed `ec2:CreateTags` can copy them onto a snapshot of their own, so a
tagged snapshot the ledger does not know is foreign: never deleted, never counted, reported.

Windows are aligned on the Unix epoch in UTC (shifted by a policy's `at`); a policy is worked on in
every hourly run of its window until each selected volume has its snapshot, so a missed hour costs
nothing. Work is cut into units of one account x region. The hourly `take_snapshots` sends one SQS
message per unit when `OPSBOTS_SNAPSHOT_QUEUE` is set, and otherwise runs the units itself in a
bounded pool; a worker treats a message as a request, never a command: account, role and regions come
from accounts.yml, and a time far from its own clock is refused.

Like every bot, one package: `policy.py` (what its file may say), `events.py` (its events, read into
frozen dataclasses), `decisions.py` (pure: plain data in, plain data out, no AWS), `executors.py`
(the only code that calls AWS, or prints what it would call for a dry run), `handlers.py` (each
Lambda function's work, with what it needs injected), `dry_run.py` (what `opsbots simulate` shows,
from the same decisions). docs/adding-a-bot.md describes the shape.
"""
