"""Every bot's entry point, fed mutated sample events against moto: it returns a summary, never raises.

One `mock_aws` and one estate per test, not per example: the examples share it. The samples' ids are
swapped for ids moto holds after mutation (`with_ids`), so an example that is still valid really
revokes and emails, writes records, renders thumbnails, takes snapshots.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from moto import mock_aws

from chalicelib.dns.decisions import RECONCILE_DELIVERIES, reconcile_ready
from chalicelib.dns.handlers import apply_run, handle_state_change, reconcile_worker
from chalicelib.security_groups.decisions import SWEEP_DELIVERIES
from chalicelib.security_groups.handlers import handle_change, work_on_unit
from chalicelib.snapshots.handlers import work_on
from chalicelib.thumbnails.handlers import handle_upload
from chalicelib.thumbnails.policy import ThumbnailsPolicy
from tests.support import fuzz
from tests.support.aws import HOME, MEMBER
from tests.support.dns import HandedRuns
from tests.support.fuzz import EC2_EVENTS, S3_EVENTS, SAMPLES, SG_EVENTS, summary, with_ids
from tests.support.mutations import mutated, mutated_json

pytestmark = pytest.mark.fuzz

# No max_examples here: the profile decides (tests/conftest.py). The examples share one estate.
FUZZ = settings(deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

MESSAGES = [fuzz.unit_message(account) for account in (HOME, MEMBER)]
SWEEP_MESSAGES = [fuzz.sweep_message(account) for account in (HOME, MEMBER)]
DNS_MESSAGES = [fuzz.sweep_message(account, fuzz.DNS_RUN) for account in (HOME, MEMBER)]


def mutated_sample(names: list[str], depth: int = 1_000) -> st.SearchStrategy[Any]:
    """One of the named samples, mutated (with its sample ids, for `with_ids` to make real)."""
    return st.sampled_from(names).flatmap(lambda name: mutated(SAMPLES[name], depth=depth))


@pytest.fixture
def world(monkeypatch: pytest.MonkeyPatch) -> Iterator[fuzz.World]:
    # A region that does not exist answers as AWS would (it is just an endpoint), not with moto's KeyError.
    monkeypatch.setenv("MOTO_ALLOW_NONEXISTENT_REGION", "true")
    with mock_aws():
        yield fuzz.World.build()


@pytest.fixture
def sg_ids(world: fuzz.World) -> dict[str, str]:
    return fuzz.security_group_ids(world, SG_EVENTS)


@pytest.fixture
def dns_ids(world: fuzz.World) -> dict[str, str]:
    return fuzz.dns_ids(world)


@pytest.fixture
def upload_ids(world: fuzz.World) -> dict[str, str]:
    return fuzz.upload_ids(world)


@pytest.fixture
def volumes(world: fuzz.World) -> None:
    fuzz.snapshot_volumes(world)


@pytest.fixture
def sweep_run(world: fuzz.World, sg_ids: dict[str, str]) -> None:
    """A fanned-out sweep the scheduler recorded, over the estate the guard's targets use."""
    world.sweep_runs().start(fuzz.SWEEP_RUN, fuzz.SNAPSHOT_TIME, len(SWEEP_MESSAGES))


def test_the_unmutated_samples_do_real_work(
    world: fuzz.World, sg_ids: dict[str, str], dns_ids: dict[str, str], upload_ids: dict[str, str], volumes: None
) -> None:
    # Given the estate the fuzz targets use
    # When each sample is handled as it is
    judged = {name: handle_change(with_ids(SAMPLES[name], sg_ids), **world.sg_kwargs()) for name in SG_EVENTS}
    running = handle_state_change(
        with_ids(SAMPLES["ec2-state-running"], dns_ids), policies=world.policies, deps=world.dns_deps()
    )
    uploads = [
        handle_upload(
            with_ids(SAMPLES[name], upload_ids), policy=world.policies.of(ThumbnailsPolicy), deps=world.thumbnail_deps()
        )
        for name in S3_EVENTS
    ]
    bodies = [json.dumps(message) for message in MESSAGES]
    taken = work_on(bodies, **world.snapshot_kwargs())
    # Then the bots act: rules reverted (home and member), records written, thumbnails rendered, snapshots taken
    assert judged["sg-authorize-ingress-ssh-world"]["status"] == "reverted", judged
    assert judged["sg-authorize-ingress-cross-account"]["status"] == "reverted", judged
    assert all(result["status"] != "malformed" for result in judged.values()), judged
    assert running["added"] > 0, running
    assert [upload["status"] for upload in uploads] == ["written", "up-to-date"], uploads
    assert (taken["taken"], taken["failed"]) == (2, []), taken


@FUZZ
@given(event=mutated_sample(SG_EVENTS))
def test_the_security_group_guard_survives_mutated_events(
    world: fuzz.World, sg_ids: dict[str, str], event: Any
) -> None:
    summary(handle_change(with_ids(event, sg_ids), **world.sg_kwargs()))


@FUZZ
@given(event=mutated_sample(EC2_EVENTS))
def test_the_dns_bot_survives_mutated_events(world: fuzz.World, dns_ids: dict[str, str], event: Any) -> None:
    summary(handle_state_change(with_ids(event, dns_ids), policies=world.policies, deps=world.dns_deps()))


@FUZZ
@given(event=mutated_sample(S3_EVENTS))
def test_the_thumbnail_bot_survives_mutated_events(world: fuzz.World, upload_ids: dict[str, str], event: Any) -> None:
    deps = world.thumbnail_deps()
    summary(handle_upload(with_ids(event, upload_ids), policy=world.policies.of(ThumbnailsPolicy), deps=deps))


@FUZZ
@given(bodies=st.lists(st.sampled_from(MESSAGES).flatmap(mutated_json), min_size=1, max_size=3))
def test_the_snapshot_worker_survives_mutated_messages(world: fuzz.World, volumes: None, bodies: list[str]) -> None:
    summary(work_on(bodies, **world.snapshot_kwargs()))


@FUZZ
@given(
    body=st.sampled_from(SWEEP_MESSAGES).flatmap(mutated_json),
    delivery=st.integers(1, SWEEP_DELIVERIES),
)
def test_the_sweep_worker_survives_mutated_messages(
    world: fuzz.World, sweep_run: None, body: str, delivery: int
) -> None:
    summary(work_on_unit(body, delivery, **world.sweep_kwargs()))


@pytest.fixture
def dns_run(world: fuzz.World, dns_ids: dict[str, str]) -> None:
    """A fanned-out DNS reconcile the scheduler recorded, over the estate the DNS targets use."""
    world.sweep_runs().start(fuzz.DNS_RUN, fuzz.SNAPSHOT_TIME, len(DNS_MESSAGES))


@FUZZ
@given(
    body=st.sampled_from(DNS_MESSAGES).flatmap(mutated_json),
    delivery=st.integers(1, RECONCILE_DELIVERIES),
)
def test_the_dns_reconcile_worker_survives_mutated_messages(
    world: fuzz.World, dns_run: None, body: str, delivery: int
) -> None:
    runs, writer = world.sweep_runs(), HandedRuns()
    summary(reconcile_worker(body, delivery, policies=world.policies, clients=world.clients, runs=runs, writer=writer))


@pytest.fixture
def completed_dns_run(world: fuzz.World, dns_run: None) -> None:
    """The run with every unit scanned: what the writer is handed."""
    for message in DNS_MESSAGES:
        reconcile_worker(
            json.dumps(message),
            1,
            policies=world.policies,
            clients=world.clients,
            runs=world.sweep_runs(),
            writer=HandedRuns(),
        )


@FUZZ
@given(event=mutated(reconcile_ready(fuzz.DNS_RUN)))
def test_the_dns_writer_survives_mutated_reconcile_runs(world: fuzz.World, completed_dns_run: None, event: Any) -> None:
    summary(apply_run(event, policies=world.policies, deps=world.dns_deps(), runs=world.sweep_runs()))


# Found by fuzzing: each of these reached botocore or a time comparison, outside the unit's error handling.
# (A role in the message, which fuzzing also found, is never read: the worker takes it from accounts.yml.)
@pytest.mark.parametrize(
    ("field", "value"),
    [
        pytest.param("region", "", id="region-empty"),  # botocore: Invalid endpoint: https://ec2..amazonaws.com
        pytest.param("region", "eu-west-1.evil.example", id="region-not-a-region"),
        pytest.param("account_id", "12345", id="account-not-12-digits"),
        pytest.param("now", "2026-11-23T01:00:00", id="now-without-timezone"),  # naive - aware, in window_start
        pytest.param("now", 1795444016, id="now-a-number"),
        pytest.param("policies", "daily", id="policies-not-a-list"),
        pytest.param("policies", [], id="policies-empty"),
    ],
)
def test_a_malformed_snapshot_message_is_dropped(world: fuzz.World, volumes: None, field: str, value: Any) -> None:
    # Given the home unit's message with one field wrong
    body = json.dumps({**MESSAGES[0], field: value})
    # When the worker receives it
    result = work_on([body], **world.snapshot_kwargs())
    # Then it is dropped as malformed: no unit run, nothing failed
    assert (result["units"], result["failed"]) == (0, []), result
