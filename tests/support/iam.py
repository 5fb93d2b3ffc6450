"""What each function's role must grant, added up from the registry (chalicelib/bots.py).

A function's grants are its bot's own calls, declared next to the function, plus what the platform
needs by what the function is; tests/test_packaging.py checks the packaged template against these,
and tests/functional/test_least_privilege.py runs each function under exactly them.
"""

from __future__ import annotations

from chalicelib import dedupe, outbox
from chalicelib.bots import BOT_OF, BOTS, FUNCTIONS, Function
from chalicelib.policy import MemberBot

LOGS = frozenset({"logs:CreateLogGroup", "logs:CreateLogStream", "logs:PutLogEvents"})
XRAY = frozenset({"xray:PutTraceSegments", "xray:PutTelemetryRecords"})
# Powertools Idempotency's DynamoDB persistence layer: the scheduled runs and the snapshot worker.
RUN_ONCE = frozenset(dedupe.PERMISSIONS)
# The email ledger (every function that emails), and the outbox drain (the scheduled runs).
LEDGER = frozenset(outbox.LEDGER_PERMISSIONS)
DRAIN = frozenset(outbox.DRAIN_PERMISSIONS)
# Lambda's own use of an asynchronous function's role: the on-failure destination of an event that failed
# every attempt. The code never calls it.
FAILED_EVENTS = frozenset({"sqs:SendMessage"})
# What Lambda's SQS event source mapping calls with the worker's role; the worker itself calls none.
SQS_CONSUME = frozenset({"sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:GetQueueAttributes"})


def grants(function: Function) -> frozenset[str]:
    """Every action `function`'s role grants: its bot's calls, and the platform's by what the function is."""
    bot = BOT_OF[function.name]
    granted = set(function.calls) | LOGS | XRAY
    if function.trigger == "queue":
        granted |= SQS_CONSUME
    else:  # invoked asynchronously by EventBridge
        granted |= FAILED_EVENTS
    if bot.emails:
        granted |= LEDGER | (DRAIN if function.trigger == "schedule" else frozenset())
    if function.once_per_delivery and function.trigger != "event":  # an event's "once" is its email ledger's
        granted |= RUN_ONCE
    return frozenset(granted)


# Logical id in the template -> (exact actions granted, memory MB, timeout s).
PACKAGED = {f.logical_id: (grants(f), f.memory_mb, f.timeout_s) for f in FUNCTIONS.values()}
# Invoked asynchronously by EventBridge: an event that fails every attempt goes to the on-failure destination.
ASYNC_FUNCTIONS = tuple(sorted(f.logical_id for f in FUNCTIONS.values() if f.trigger != "queue"))
# deploy/member-role.yml: what each bot's role in a member account may do, and the functions (logical
# ids at home) that assume it.
MEMBER_ROLE_ACTIONS: dict[MemberBot, frozenset[str]] = {
    bot.name: frozenset(bot.member_calls)  # type: ignore[misc]  # test_registry: these names are MemberBot's
    for bot in BOTS
    if bot.in_member_accounts
}
MEMBER_ROLE_USERS: dict[MemberBot, tuple[str, ...]] = {
    bot.name: tuple(f.logical_id for f in bot.functions)  # type: ignore[misc]
    for bot in BOTS
    if bot.in_member_accounts
}


def functions_of(bot: str) -> tuple[str, ...]:
    """The logical ids of `bot`'s functions."""
    return tuple(function.logical_id for function in next(b for b in BOTS if b.name == bot).functions)
