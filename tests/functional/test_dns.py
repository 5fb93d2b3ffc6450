"""The DNS bot end to end through Chalice's test client, against moto: zones, ownership, ordering."""

from __future__ import annotations

from typing import Any

import boto3

from chalicelib.aws import HOME as HOME_KEY
from chalicelib.aws import Target
from chalicelib.dns.executors import Registry
from chalicelib.dns.handlers import DnsDeps, ZoneCache, dns_deps, handle_state_change, reconcile
from chalicelib.policy import load_policies
from chalicelib.runtime import current
from tests.support.aws import MEMBER, REGION, ROOT, load_event
from tests.support.dns import Network, deliver, state_event
from tests.support.estate import counting_clients
from tests.support.faults import answer_with_error


def test_a_running_instance_gets_its_records_and_loses_them_when_stopped(network: Network, lambdas: Any) -> None:
    # Given a running instance with a name and an alias
    instance = network.launch("App 1", **{"opsbots:dns-aliases": "api"})
    described = network.home_ec2.describe_instances(InstanceIds=[instance])["Reservations"][0]["Instances"][0]
    private_ip, public_ip = described["PrivateIpAddress"], described["PublicIpAddress"]

    # When its running event arrives
    result = deliver(lambdas, instance, "running")

    # Then A, CNAME and PTR records exist in the private, public and reverse zones (no reverse zone
    # holds the public address)
    assert result["added"] == 5
    assert network.records("internal.example.com") == {
        ("app-1.internal.example.com.", "A"): [private_ip],
        ("api.internal.example.com.", "CNAME"): ["app-1.internal.example.com."],
    }
    assert network.records("example.com") == {
        ("app-1.example.com.", "A"): [public_ip],
        ("api.example.com.", "CNAME"): ["app-1.example.com."],
    }
    ptr = ".".join(reversed(private_ip.split("."))) + ".in-addr.arpa."
    assert network.records("10.in-addr.arpa") == {(ptr, "PTR"): ["app-1.internal.example.com."]}

    # And when it stops, every one of them goes
    network.home_ec2.stop_instances(InstanceIds=[instance])
    assert deliver(lambdas, instance, "stopped")["removed"] == 5
    for zone in network.zones:
        assert network.records(zone) == {}


def test_a_manual_record_with_the_same_name_is_never_touched(network: Network, lambdas: Any) -> None:
    # Given someone's own record at web.internal.example.com
    network.upsert("internal.example.com", "web.internal.example.com.", "10.9.9.9")
    instance = network.launch("web")

    result = deliver(lambdas, instance, "running")

    # Then it is a conflict, and the record survives the instance's start and stop
    assert any("web.internal.example.com. A" in conflict for conflict in result["conflicts"])
    assert network.records("internal.example.com")[("web.internal.example.com.", "A")] == ["10.9.9.9"]
    network.home_ec2.terminate_instances(InstanceIds=[instance])
    deliver(lambdas, instance, "terminated")
    assert network.records("internal.example.com") == {("web.internal.example.com.", "A"): ["10.9.9.9"]}


def test_an_alias_never_lands_on_a_name_someone_else_holds(network: Network, lambdas: Any) -> None:
    # Given a hand-made A record where an instance wants its alias (a CNAME) to go
    network.upsert("internal.example.com", "api.internal.example.com.", "10.9.9.9")
    instance = network.launch("app", **{"opsbots:dns-aliases": "api"})

    result = deliver(lambdas, instance, "running")

    assert any("api.internal.example.com. CNAME" in conflict for conflict in result["conflicts"])
    records = network.records("internal.example.com")
    assert ("api.internal.example.com.", "CNAME") not in records
    assert records[("api.internal.example.com.", "A")] == ["10.9.9.9"]
    assert ("app.internal.example.com.", "A") in records


def test_a_name_lost_to_a_conflict_gets_no_alias_and_no_reverse_record(network: Network, lambdas: Any) -> None:
    network.upsert("internal.example.com", "web.internal.example.com.", "10.9.9.9")
    instance = network.launch("web", **{"opsbots:dns-aliases": "www"})

    deliver(lambdas, instance, "running")

    assert network.records("internal.example.com") == {("web.internal.example.com.", "A"): ["10.9.9.9"]}
    assert network.records("10.in-addr.arpa") == {}


def test_a_name_route53_refuses_gets_no_alias_nor_reverse_record_pointing_at_it(network: Network, lambdas: Any) -> None:
    # Given someone's own record at web.internal.example.com, and an instance "web" with an alias "portal"
    network.upsert("internal.example.com", "web.internal.example.com.", "10.9.9.9")
    instance = network.launch("web", **{"opsbots:dns-aliases": "portal"})

    result = deliver(lambdas, instance, "running")

    # Then Route53 refused the CREATE of the name: a conflict, never overwritten; the alias and the PTR that would
    # point at it waited for that answer and were never written; the public name and its alias were
    records = network.records("internal.example.com")
    assert records == {("web.internal.example.com.", "A"): ["10.9.9.9"]}
    assert network.records("10.in-addr.arpa") == {}
    assert set(network.records("example.com")) == {("web.example.com.", "A"), ("portal.example.com.", "CNAME")}
    assert any(
        "web.internal.example.com. A" in c and "a record opsbots did not write" in c for c in result["conflicts"]
    )
    assert len(result["skipped"]) == 2


def test_changes_route53_refuses_are_conflicts_and_leave_no_claim(network: Network, lambdas: Any) -> None:
    # Given Route53 refuses every change (as it does a name taken or changed meanwhile)
    instance = network.launch("app")
    answer_with_error(current().built(dns_deps).route53, "ChangeResourceRecordSets", "InvalidChangeBatch", status=400)

    result = deliver(lambdas, instance, "running")

    # Then nothing is counted as added, each refused name is reported, the PTR pointing at a refused name is
    # never sent, and the registry claims nothing
    assert result["added"] == 0
    assert sum("a record opsbots did not write (Route53: " in conflict for conflict in result["conflicts"]) == 2
    assert [skipped.split(" ")[1] for skipped in result["skipped"]] == ["PTR:"]
    assert boto3.client("dynamodb").scan(TableName="opsbots-dns")["Items"] == []


def test_the_current_owner_keeps_a_name_two_instances_want(network: Network, lambdas: Any) -> None:
    first, second = network.launch("db"), network.launch("db")
    deliver(lambdas, first, "running")
    first_ip = network.records("internal.example.com")[("db.internal.example.com.", "A")]

    result = deliver(lambdas, second, "running")

    assert result["conflicts"]
    assert network.records("internal.example.com")[("db.internal.example.com.", "A")] == first_ip


def test_duplicates_and_a_late_stopped_event_change_nothing(network: Network, lambdas: Any) -> None:
    instance = network.launch("app")
    deliver(lambdas, instance, "running")
    before = {zone: network.records(zone) for zone in network.zones}

    # When the running event comes again, and then a stale "stopped" arrives after it
    again = deliver(lambdas, instance, "running")
    stale = deliver(lambdas, instance, "stopped")

    # Then nothing changed: the bot asked EC2, which says the instance runs
    assert (again["added"], again["removed"], stale["removed"]) == (0, 0, 0)
    assert stale["state"] == "running"
    assert {zone: network.records(zone) for zone in network.zones} == before


def test_a_pending_event_writes_nothing(network: Network, lambdas: Any) -> None:
    instance = network.launch("app")
    network.home_ec2.stop_instances(InstanceIds=[instance])
    assert deliver(lambdas, instance, "pending")["added"] == 0


def test_an_instance_ec2_no_longer_knows_loses_its_records_from_the_registry(network: Network, lambdas: Any) -> None:
    # Given records for an instance, and then an event naming an instance EC2 does not know
    instance = network.launch("app")
    deliver(lambdas, instance, "running")
    result = deliver(lambdas, "i-0123456789abcdef0", "stopped")

    # Then nothing of the known instance is touched
    assert result["state"] == "gone"
    assert result["removed"] == 0
    assert ("app.internal.example.com.", "A") in network.records("internal.example.com")


def test_a_member_account_instance_is_described_through_its_role(network: Network, lambdas: Any) -> None:
    instance = network.launch("worker", member=True)
    private_ip = network.member_ec2.describe_instances(InstanceIds=[instance])["Reservations"][0]["Instances"][0][
        "PrivateIpAddress"
    ]

    deliver(lambdas, instance, "running", account=MEMBER)

    assert network.records("internal.example.com")[("worker.internal.example.com.", "A")] == [private_ip]


def test_an_unselected_instance_gets_nothing(network: Network, lambdas: Any) -> None:
    instance = network.home_ec2.run_instances(
        ImageId="ami-12345678", MinCount=1, MaxCount=1, SubnetId=network.home_subnet
    )["Instances"][0]["InstanceId"]
    assert deliver(lambdas, instance, "running")["added"] == 0


def test_a_malformed_event_is_skipped(network: Network, lambdas: Any) -> None:
    event = state_event("i-0123456789abcdef0", "running")
    del event["detail"]["instance-id"]
    assert lambdas.invoke("on_instance_state_change", event).payload["status"] == "malformed"


def test_reconcile_adds_what_is_missing_and_removes_what_no_longer_runs(network: Network, lambdas: Any) -> None:
    # Given 200 running instances that no event reported, in two accounts
    home = [network.launch(f"h{n}") for n in range(150)]
    for n in range(50):
        network.launch(f"m{n}", member=True)
    scheduled = load_event("scheduled-event")

    first = lambdas.invoke("reconcile_dns", scheduled).payload

    # Then each gets its private and PTR records, and home's instances their public ones too (a public zone
    # names only the home account's instances, by default)
    assert first["added"] == 150 * 3 + 50 * 2
    assert first["failures"] == []
    assert len(network.records("internal.example.com")) == 200

    # When 40 home instances end, the next reconcile removes exactly theirs
    network.home_ec2.terminate_instances(InstanceIds=home[:40])
    second = lambdas.invoke("reconcile_dns", scheduled).payload
    assert second["added"] == 0
    assert second["removed"] == 40 * 3
    assert len(network.records("internal.example.com")) == 160
    assert ("m0.internal.example.com.", "A") in network.records("internal.example.com")


def counted_deps() -> tuple[DnsDeps, list[str]]:
    clients, calls = counting_clients()
    home = Target(HOME_KEY, REGION)
    route53 = clients.client("route53", home)
    return DnsDeps(
        clients, route53, Registry(clients.client("dynamodb", home), "opsbots-dns"), ZoneCache(route53)
    ), calls


def test_aws_calls_per_event(network: Network) -> None:
    # Given a warm container (home account id and hosted zones already known)
    deps, calls = counted_deps()
    deps.clients.home()
    deps.zones.get()
    policies = load_policies(ROOT / "policies")
    instance = network.launch("app")
    calls.clear()

    def count(state: str) -> list[str]:
        calls.clear()
        handle_state_change(state_event(instance, state), policies=policies, deps=deps)
        return list(calls)

    # Then: running = describe + registry query + the 3 claims in one transaction + one batch per zone (Route53
    # takes one zone per call; no name is looked up first: Route53 refuses a CREATE over a record it holds)
    running = count("running")
    assert running.count("DescribeInstances") == 1
    assert running.count("TransactWriteItems") == 1
    assert running.count("ChangeResourceRecordSets") == 3
    assert len(running) == 6
    # A repeated event only reads: describe + registry query
    assert count("running") == ["DescribeInstances", "Query"]
    # Stopped: describe + query + one batch per zone + the 3 registry deletes in one transaction
    network.home_ec2.stop_instances(InstanceIds=[instance])
    stopped = count("stopped")
    assert stopped.count("ChangeResourceRecordSets") == 3
    assert stopped.count("TransactWriteItems") == 1
    assert len(stopped) == 6
    # Terminated, the one state an instance never leaves: no describe (query, one batch per zone, transaction)
    network.home_ec2.start_instances(InstanceIds=[instance])
    count("running")
    network.home_ec2.terminate_instances(InstanceIds=[instance])
    terminated = count("terminated")
    assert "DescribeInstances" not in terminated
    assert terminated.count("ChangeResourceRecordSets") == 3
    assert len(terminated) == 5


def test_aws_calls_to_reconcile_a_thousand_instances(network: Network) -> None:
    network.home_ec2.run_instances(
        ImageId="ami-12345678",
        MinCount=1000,
        MaxCount=1000,
        SubnetId=network.home_subnet,
        TagSpecifications=[{"ResourceType": "instance", "Tags": [{"Key": "opsbots:dns", "Value": "yes"}]}],
    )
    deps, calls = counted_deps()

    result = reconcile(policies=load_policies(ROOT / "policies"), deps=deps)

    assert result["added"] == 3000
    route53 = [
        call
        for call in calls
        if call in {"ListHostedZones", "GetHostedZone", "ListResourceRecordSets", "ChangeResourceRecordSets"}
    ]
    # 3 zones: listing (1 + 2 private zones' VPCs), one listing of each zone, and 1,000 CREATEs per batch (the
    # PTRs once the names they point at are written)
    assert calls.count("ChangeResourceRecordSets") == 1 + 1 + 1
    assert len(route53) == 3 + 3 + 3
    # A reconcile's many claims are written one by one, not in transactions (dns.TRANSACT_UP_TO)
    assert calls.count("PutItem") == 3000
    assert "TransactWriteItems" not in calls
