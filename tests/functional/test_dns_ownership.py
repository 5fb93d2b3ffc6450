"""The DNS bot's ownership promises as an attacker or an unlucky operator tries them (issue 14, DNS):

6. An account must not take another account's names: a public zone names only the home account's
   instances by default (`accounts:` says otherwise), and a name is never handed from one account's
   instance to another account's, not even while its owner is stopped.
7. No stale public names: records of an account taken out of accounts.yml go, and a public name follows
   its Elastic IP when the address moves.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from chalicelib.runtime import current
from chalicelib.settings import POLICIES_DIR
from tests.support.aws import MEMBER, load_event
from tests.support.dns import Network, deliver
from tests.support.lambdas import Emitted


def reconcile(lambdas: Any) -> dict[str, Any]:
    payload: dict[str, Any] = lambdas.invoke("reconcile_dns", load_event("scheduled-event")).payload
    return payload


def public_address(network: Network, instance: str) -> str | None:
    [described] = network.home_ec2.describe_instances(InstanceIds=[instance])["Reservations"][0]["Instances"]
    return described.get("PublicIpAddress")


# ----- 6. an account must not take another account's names ------------------------------------------


def test_a_member_instance_gets_no_public_name_by_default(network: Network, lambdas: Any) -> None:
    # Given a member-account instance tagged to look like the company's login server
    impostor = network.launch("login", member=True, **{"opsbots:dns-aliases": "sso,vpn,mail"})

    result = deliver(lambdas, impostor, "running", MEMBER)

    # Then it gets its private names, and nothing in the public zone example.com, and its answer says why
    assert network.records("example.com") == {}
    assert ("login.internal.example.com.", "A") in network.records("internal.example.com")
    assert result["added"] == 5  # private A, 3 aliases, PTR
    assert result["not_made"] == [f"account {MEMBER} may not have names in example.com (its accounts:)"]


def test_a_name_is_never_handed_to_another_accounts_instance_even_while_its_owner_is_stopped(
    network: Network, lambdas: Any, emitted: Emitted
) -> None:
    # Given home's login server holding login.internal.example.com, then stopped for maintenance
    server = network.launch("login")
    deliver(lambdas, server, "running")
    network.home_ec2.stop_instances(InstanceIds=[server])
    assert deliver(lambdas, server, "stopped")["removed"] == 3  # private and public A, PTR
    # When a member-account instance named login starts meanwhile
    impostor = network.launch("login", member=True)
    taken = deliver(lambdas, impostor, "running", MEMBER)

    # Then the name stays reserved for the home account: a conflict, counted, and nothing written
    assert taken["added"] == 0
    assert any("names stay with their account" in conflict for conflict in taken["conflicts"])
    assert ("login.internal.example.com.", "A") not in network.records("internal.example.com")
    assert emitted("RecordConflicts") >= 1
    # And when the real server comes back it gets its name again
    network.home_ec2.start_instances(InstanceIds=[server])
    assert deliver(lambdas, server, "running")["added"] == 3
    [private_address] = network.records("internal.example.com")[("login.internal.example.com.", "A")]
    described = network.home_ec2.describe_instances(InstanceIds=[server])["Reservations"][0]["Instances"][0]
    assert private_address == described["PrivateIpAddress"]


def test_a_zone_lists_the_accounts_it_names(
    network: Network, lambdas: Any, policies_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given example.com opened to the member account too
    path = policies_dir / "dns.yml"
    path.write_text(path.read_text().replace("address: public", f'address: public\n    accounts: [home, "{MEMBER}"]'))
    monkeypatch.setenv(POLICIES_DIR, str(policies_dir))
    current.cache_clear()
    worker = network.launch("worker", member=True)

    deliver(lambdas, worker, "running", MEMBER)

    assert ("worker.example.com.", "A") in network.records("example.com")


# ----- 7. no stale public names ---------------------------------------------------------------------


def test_the_records_of_an_account_taken_out_of_accounts_yml_are_reconciled_away(
    network: Network, lambdas: Any, policies_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given the member account's instance named by a reconcile
    network.launch("worker", member=True)
    network.launch("web")
    assert reconcile(lambdas)["added"] == 2 + 3
    # When the account is taken out of accounts.yml (the role may be gone: its instances cannot be read)
    path = policies_dir / "accounts.yml"
    path.write_text(path.read_text().split("accounts:\n")[0] + "accounts: []\n")
    monkeypatch.setenv(POLICIES_DIR, str(policies_dir))
    current.cache_clear()

    result = reconcile(lambdas)

    # Then its records go, and home's stay
    assert (result["removed"], result["failures"]) == (2, [])
    assert ("worker.internal.example.com.", "A") not in network.records("internal.example.com")
    assert ("web.internal.example.com.", "A") in network.records("internal.example.com")


def test_a_public_name_follows_its_elastic_ip_when_the_address_moves(network: Network, lambdas: Any) -> None:
    # Given web-1 named on an Elastic IP
    ec2 = network.home_ec2
    first, second = network.launch("web-1"), network.launch("web-2")
    address = ec2.allocate_address(Domain="vpc")
    ec2.associate_address(InstanceId=first, AllocationId=address["AllocationId"])
    reconcile(lambdas)
    assert network.records("example.com")[("web-1.example.com.", "A")] == [address["PublicIp"]]

    # When the address moves to web-2, with no state-change event for either (disassociated, then associated:
    # moto's AllowReassociation leaves the address on web-1 too, which EC2 does not)
    [held] = ec2.describe_addresses(AllocationIds=[address["AllocationId"]])["Addresses"]
    ec2.disassociate_address(AssociationId=held["AssociationId"])
    ec2.associate_address(InstanceId=second, AllocationId=address["AllocationId"])
    result = reconcile(lambdas)

    # Then the hourly reconcile makes the public names follow: only web-2's points at the address now
    assert result["failures"] == []
    pointing = [
        name for (name, kind), values in network.records("example.com").items() if address["PublicIp"] in values
    ]
    assert pointing == ["web-2.example.com."]
    now = public_address(network, first)
    assert network.records("example.com").get(("web-1.example.com.", "A")) == ([now] if now else None)
