"""DNS bot: Route53 records that follow EC2 instance state, without touching anyone else's records.

Every record opsbots writes is claimed first in a DynamoDB registry (`OPSBOTS_DNS_TABLE`, one item
per zone/name/type, with its owner instance): the claim is a conditional write, so when two
instances ask for one name the current owner keeps it, and the records to remove for a terminated
instance come from the registry rather than from EC2. A name already present in Route53 that the
registry does not hold belongs to someone else: it is reported as a conflict and never written.

Events only say "something happened to instance X": the bot decides from the instance's current
state (one describe), so duplicates and out-of-order deliveries converge on the same records.

Like every bot, one package: `policy.py` (what its file may say), `events.py` (its events, read into
frozen dataclasses), `decisions.py` (pure: plain data in, plain data out, no AWS), `executors.py`
(the only code that calls AWS, or prints what it would call for a dry run), `handlers.py` (each
Lambda function's work, with what it needs injected), `dry_run.py` (what `opsbots simulate` shows,
from the same decisions). docs/adding-a-bot.md describes the shape.
"""
