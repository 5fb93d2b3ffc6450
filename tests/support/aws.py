"""The fake AWS every test runs against: fake credentials set on import, before anything imports boto3 or moto;
moto served one request at a time; the accounts and region; the sample events.

No test may reach AWS: the credentials are fake, `AWS_ENDPOINT_URL` is cleared (integration
tests set it to their own moto server), and profile files are pointed at nothing. tests/conftest.py
imports this module first, so the environment is set before any test module is collected.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Final

from chalicelib import settings as opsbots_settings  # names only: nothing is read from the environment here

TEST_EXTERNAL_ID = "test-external-id"
FAKE_AWS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": "eu-west-1",
    "AWS_REGION": "eu-west-1",
    "AWS_CONFIG_FILE": "/dev/null",
    "AWS_SHARED_CREDENTIALS_FILE": "/dev/null",
    "MOTO_EC2_LOAD_DEFAULT_AMIS": "false",
    opsbots_settings.EXTERNAL_ID: TEST_EXTERNAL_ID,
}
for variable in ("AWS_ENDPOINT_URL", "AWS_PROFILE", *opsbots_settings.VARIABLES):
    os.environ.pop(variable, None)
os.environ.update(FAKE_AWS)

import threading  # noqa: E402

from moto.core.models import botocore_stubber  # noqa: E402 - the environment above must be set first

from demo.environment import cut_service_models, route53_as_aws  # noqa: E402

route53_as_aws()  # Route53's refusals moto does not make, on every session the tests make
cut_service_models()  # the bots' EC2 clients as deployed: only the operations they are granted

MOTO_LOCK = threading.RLock()  # held while in-process moto serves a request


def serve_one_request_at_a_time() -> None:
    """Make in-process moto serve one request at a time (tests/conftest.py does, as pytest starts).

    AWS serves concurrent calls safely; moto's in-process backends are plain dicts, so a snapshot unit's ledger
    Query iterating the table while another unit's BatchWriteItem adds to it raises "dictionary changed size
    during iteration": flaky, not a bug of the bots. Their thread pools stay as deployed; only the fake is
    serialised. Re-entrant, as a moto handler may call moto. tests/functional/test_least_privilege.py sets
    moto's IAM verdict for each request under the same lock."""
    serve = botocore_stubber.process_request

    def serialised(request: Any) -> Any:
        with MOTO_LOCK:
            return serve(request)

    botocore_stubber.process_request = serialised  # type: ignore[method-assign]


ROOT = Path(__file__).resolve().parents[2]
EVENTS = ROOT / "tests" / "events"
SAMPLE_HOME = "111111111111"
HOME = "123456789012"  # moto's default account: the Lambda's own account in these tests
MEMBER = "222222222222"
REGION: Final = "eu-west-1"  # Final: a literal, as the stubs' region names are


def load_event(name: str, **replacements: str) -> dict[str, Any]:
    """A sample event, with the sample home account made ours and any ids swapped for real ones."""
    text = (EVENTS / f"{name}.json").read_text()
    for old, new in {SAMPLE_HOME: HOME, **replacements}.items():
        text = text.replace(old, new)
    event: dict[str, Any] = json.loads(text)
    return event
