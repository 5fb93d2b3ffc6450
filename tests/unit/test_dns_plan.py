"""The DNS bot's decisions as tables and properties: instance facts + owned records + policy -> changes."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from chalicelib.dns.decisions import (
    HostedZone,
    Instance,
    OwnedRecord,
    Plan,
    Record,
    UnitScan,
    batches,
    desired_records,
    dns_label,
    plan_changes,
    ready_run,
    reconcile_plan,
    reconcile_ready,
    route53_changes,
)
from chalicelib.dns.policy import DnsPolicy, DnsZone
from chalicelib.fanout import RejectedMessageError, as_json, from_json

PRIVATE = HostedZone("ZPRIV", "internal.example.com.", private=True, vpc_ids=frozenset({"vpc-1"}))
PUBLIC = HostedZone("ZPUB", "example.com.", private=False)
REVERSE = HostedZone("ZREV", "10.in-addr.arpa.", private=True, vpc_ids=frozenset({"vpc-1"}))
V6 = HostedZone("ZV6", "v6.example.com.", private=False)
ZONES = (PRIVATE, PUBLIC, REVERSE, V6)
POLICY = DnsPolicy(
    zones=(DnsZone(zone="internal.example.com", address="private"), DnsZone(zone="example.com", address="public")),
    select_tag="opsbots:dns",
)


def instance(instance_id: str = "i-1", state: str = "running", **tags: str) -> Instance:
    return Instance(
        account_id="123456789012",
        region="eu-west-1",
        instance_id=instance_id,
        state=state,
        tags={"opsbots:dns": "", **tags},
        vpc_id="vpc-1",
        private_ipv4="10.0.1.5",
        public_ipv4="52.1.2.3",
        ipv6=("2001:db8::5",),
    )


@pytest.mark.parametrize(
    ("tag", "label"),
    [
        ("Web Server 1", "web-server-1"),
        ("a.b.example.org", "a-b-example-org"),
        ("..", None),
        ("---", None),
        ("x" * 300, "x" * 63),
        ("été", "t"),
        ("API_v2", "api-v2"),
    ],
)
def test_tag_values_become_one_valid_label(tag: str, label: str | None) -> None:
    assert dns_label(tag) == label


def test_a_running_instance_gets_a_records_aliases_and_ptr() -> None:
    records, skipped = desired_records(
        instance(Name="App 1", **{"opsbots:dns-aliases": "api, App 1,??"}), POLICY, ZONES, "home"
    )
    assert skipped == ()
    assert set(records) == {
        Record("ZPRIV", "app-1.internal.example.com.", "A", "10.0.1.5", 60),
        Record("ZPRIV", "api.internal.example.com.", "CNAME", "app-1.internal.example.com.", 60),
        Record("ZREV", "5.1.0.10.in-addr.arpa.", "PTR", "app-1.internal.example.com.", 60),
        Record("ZPUB", "app-1.example.com.", "A", "52.1.2.3", 60),
        Record("ZPUB", "api.example.com.", "CNAME", "app-1.example.com.", 60),
    }


@pytest.mark.parametrize(
    ("subject", "expected_names"),
    [
        pytest.param(
            instance(),
            {"i-1.internal.example.com.", "i-1.example.com.", "5.1.0.10.in-addr.arpa."},
            id="no name tag: the instance id",
        ),
        pytest.param(instance(state="stopped", Name="x"), set(), id="not running: nothing"),
        pytest.param(instance(state="pending", Name="x"), set(), id="pending: nothing"),
        pytest.param(Instance("1", "r", "i-2", "running", {"Name": "x"}), set(), id="not selected: nothing"),
        pytest.param(instance(Name="!!"), set(), id="a name that cannot be made valid: nothing"),
    ],
)
def test_which_names_an_instance_gets(subject: Instance, expected_names: set[str]) -> None:
    records, _ = desired_records(subject, POLICY, ZONES, "home")
    assert {record.name for record in records} == expected_names


def test_a_private_zone_not_associated_with_the_vpc_is_skipped_with_a_reason() -> None:
    other_vpc = Instance("1", "r", "i-3", "running", {"opsbots:dns": ""}, vpc_id="vpc-9", private_ipv4="10.0.0.9")
    records, skipped = desired_records(other_vpc, POLICY, ZONES, "home")
    assert records == ()
    assert skipped == ("no private hosted zone internal.example.com for vpc-9",)


def test_a_missing_zone_is_skipped_with_a_reason() -> None:
    records, skipped = desired_records(instance(Name="x"), POLICY, (PRIVATE,), "home")
    assert {r.zone_id for r in records} == {"ZPRIV"}
    assert skipped == ("no public hosted zone example.com for vpc-1",)


def test_ipv6_zones_get_aaaa_records() -> None:
    policy = DnsPolicy(zones=(DnsZone(zone="v6.example.com", address="ipv6"),), reverse=False)
    records, _ = desired_records(instance(Name="x"), policy, ZONES, "home")
    assert records == (Record("ZV6", "x.v6.example.com.", "AAAA", "2001:db8::5", 60),)


@pytest.mark.parametrize(
    ("accounts", "account", "zones"),
    [
        pytest.param(None, "home", {"ZPRIV", "ZPUB", "ZREV"}, id="default: home is named everywhere"),
        pytest.param(None, "222222222222", {"ZPRIV", "ZREV"}, id="default: a member only in private zones"),
        pytest.param(("home", "222222222222"), "222222222222", {"ZPRIV", "ZPUB", "ZREV"}, id="listed for both"),
        pytest.param("all", "222222222222", {"ZPRIV", "ZPUB", "ZREV"}, id="all"),
    ],
)
def test_a_zone_names_only_the_accounts_it_admits(accounts: object, account: str, zones: set[str]) -> None:
    policy = POLICY.model_copy(
        update={"zones": tuple(zone.model_copy(update={"accounts": accounts}) for zone in POLICY.zones)}
    )
    records, skipped = desired_records(instance(Name="login"), policy, ZONES, account)
    assert {record.zone_id for record in records} == zones
    assert all("may not have names" in reason for reason in skipped)


def test_a_name_is_never_handed_from_one_accounts_instance_to_anothers() -> None:
    # Given home's login server holding login.example.com, now stopped, and a member instance wanting the name
    home, member = "123456789012/eu-west-1/i-home", "222222222222/eu-west-1/i-member"
    plan = plan_changes([owned("login.example.com.", member)], [owned("login.example.com.", home)], lambda _: True)
    # Then the name is not handed over: the member's wish is a conflict, and home's record is released
    assert (plan.claims, plan.updates) == ((), ())
    assert [(c.owner, c.held_by) for c in plan.conflicts] == [(member, home)]
    assert [entry.owner for entry in plan.deletes] == [home]


def test_a_name_is_handed_over_within_an_account() -> None:
    old, new = "123456789012/eu-west-1/i-old", "123456789012/eu-west-1/i-new"
    plan = plan_changes([owned("web.example.com.", new)], [owned("web.example.com.", old)], lambda _: True)
    assert [(current.owner, wanted.owner) for current, wanted in plan.updates] == [(old, new)]


ACCOUNT = "123456789012/eu-west-1/"  # one account's owners: a name moves between them, never across accounts


def owned(name: str, owner: str, value: str = "10.0.0.1") -> OwnedRecord:
    return OwnedRecord(Record("Z", name, "A", value, 60), owner)


def everyone(_: str) -> bool:
    return True


@pytest.mark.parametrize(
    ("wanted", "registry", "expected"),
    [
        pytest.param([owned("a.", "i-1")], [], Plan(claims=(owned("a.", "i-1"),)), id="a new name is claimed"),
        pytest.param(
            [owned("a.", "i-1")],
            [owned("a.", "i-1")],
            Plan(kept=(owned("a.", "i-1"),)),
            id="an owned, unchanged name: nothing",
        ),
        pytest.param(
            [owned("a.", "i-1", "10.0.0.2")],
            [owned("a.", "i-1")],
            Plan(updates=((owned("a.", "i-1"), owned("a.", "i-1", "10.0.0.2")),)),
            id="a new address: update",
        ),
        pytest.param([], [owned("a.", "i-1")], Plan(deletes=(owned("a.", "i-1"),)), id="no longer wanted: delete"),
    ],
)
def test_the_plan_for_one_name(wanted: list[OwnedRecord], registry: list[OwnedRecord], expected: Plan) -> None:
    assert plan_changes(wanted, registry, everyone) == expected


def test_the_current_owner_keeps_a_name() -> None:
    # Given i-1 holds the name and an event for i-2 (only i-2 in scope) wants it too
    plan = plan_changes([owned("a.", "i-2", "10.0.0.2")], [owned("a.", "i-1")], "i-2".__eq__)
    assert not plan
    assert [(c.owner, c.held_by) for c in plan.conflicts] == [("i-2", "i-1")]


def test_a_name_its_holder_no_longer_wants_is_handed_over_in_one_step() -> None:
    # Given i-1 holds the name but (in scope) no longer wants it, and i-2 of the same account does
    first, second = f"{ACCOUNT}i-1", f"{ACCOUNT}i-2"
    plan = plan_changes([owned("a.", second, "10.0.0.2")], [owned("a.", first)], everyone)
    assert plan == Plan(updates=((owned("a.", first), owned("a.", second, "10.0.0.2")),))


def test_a_free_name_wanted_twice_goes_to_one_owner_whatever_the_order() -> None:
    contenders = [owned("a.", "i-2", "10.0.0.2"), owned("a.", "i-1")]
    for order in (contenders, contenders[::-1]):
        plan = plan_changes(order, [], everyone)
        assert plan.claims == (owned("a.", "i-1"),)
        assert [c.owner for c in plan.conflicts] == ["i-2"]


def test_records_of_owners_out_of_scope_are_never_deleted() -> None:
    plan = plan_changes([], [owned("a.", "acct-b/i-1")], lambda owner: owner.startswith("acct-a/"))
    assert plan == Plan()


def test_changes_go_in_as_few_batches_as_route53_allows() -> None:
    # Given 1,200 new names (CREATEs), 300 owned names changed (UPSERTs count twice) and 700 to delete in one zone
    plan = Plan(
        claims=tuple(owned(f"n{i}.", "i-1") for i in range(1200)),
        updates=tuple((owned(f"u{i}.", "i-1"), owned(f"u{i}.", "i-1", "10.0.0.9")) for i in range(300)),
        deletes=tuple(owned(f"d{i}.", "i-1") for i in range(700)),
    )
    # Then batches hold at most 1,000 ResourceRecord elements
    sizes = [len(batch) for batch in batches(route53_changes(plan)["Z"])]
    assert sizes == [1000, 200 + 300 + 200, 500]


def test_a_name_just_claimed_is_created_and_one_owned_is_upserted() -> None:
    plan = Plan(claims=(owned("new.", "i-1"),), updates=((owned("old.", "i-1"), owned("old.", "i-1", "10.0.0.9")),))
    assert [change["Action"] for change in route53_changes(plan)["Z"]] == ["CREATE", "UPSERT"]


def test_deletes_carry_the_exact_current_values() -> None:
    [change] = route53_changes(Plan(deletes=(owned("a.", "i-1", "10.0.0.7"),)))["Z"]
    assert change == {
        "Action": "DELETE",
        "ResourceRecordSet": {"Name": "a.", "Type": "A", "TTL": 60, "ResourceRecords": [{"Value": "10.0.0.7"}]},
    }


# ----- properties -----------------------------------------------------------------------------

owners = st.sampled_from([f"{ACCOUNT}i-1", f"{ACCOUNT}i-2", f"{ACCOUNT}i-3", f"{ACCOUNT}i-4"])
names = st.sampled_from(["a.", "b.", "c.", "d.", "e."])
values = st.sampled_from(["10.0.0.1", "10.0.0.2"])
entries = st.builds(owned, names, owners, values)
registries = st.lists(entries, max_size=8).map(lambda items: list({e.record.key: e for e in items}.values()))
scopes = st.sets(owners)


def applied(registry: list[OwnedRecord], plan: Plan) -> list[OwnedRecord]:
    """What the registry (and so Route53) holds after the plan: the executor's effect, in memory."""
    by_key = {entry.record.key: entry for entry in registry}
    for entry in plan.deletes:
        by_key.pop(entry.record.key, None)
    for entry in (*plan.claims, *(wanted for _, wanted in plan.updates)):
        by_key[entry.record.key] = entry
    return sorted(by_key.values())


@given(st.lists(entries, max_size=10), registries, scopes)
def test_never_a_change_to_a_record_not_owned(
    wanted: list[OwnedRecord], registry: list[OwnedRecord], scope: set[str]
) -> None:
    plan = plan_changes([w for w in wanted if w.owner in scope], registry, scope.__contains__)
    owned_keys = {entry.record.key for entry in registry}
    assert all(claim.record.key not in owned_keys for claim in plan.claims)
    assert all(
        current in registry and (current.owner == wanted_.owner or current.owner in scope)
        for current, wanted_ in plan.updates
    )
    assert all(entry in registry and entry.owner in scope for entry in plan.deletes)


@given(st.lists(entries, max_size=10), registries, scopes)
def test_applying_the_plan_twice_is_a_no_op(
    wanted: list[OwnedRecord], registry: list[OwnedRecord], scope: set[str]
) -> None:
    mine = [w for w in wanted if w.owner in scope]
    once = applied(registry, plan_changes(mine, registry, scope.__contains__))
    assert not plan_changes(mine, once, scope.__contains__)


@given(st.lists(entries, max_size=12), st.randoms(use_true_random=False))
def test_any_order_of_events_ends_in_the_same_records(world: list[OwnedRecord], shuffle: random.Random) -> None:
    # Given a world of instances and what each wants; each event reconciles one instance from that world
    instances = sorted({entry.owner for entry in world})
    events = [owner for owner in instances for _ in range(2)]  # every event delivered twice

    def run(order: list[str]) -> list[OwnedRecord]:
        registry: list[OwnedRecord] = []
        for owner in order:
            mine = [w for w in world if w.owner == owner]
            registry = applied(registry, plan_changes(mine, registry, owner.__eq__))
        return registry

    in_order = run(events)
    shuffle.shuffle(events)
    shuffled = run(events)
    # Then names wanted by one instance end the same; a contested name goes to one of its contenders
    wanters: dict[tuple[str, str, str], set[str]] = {}
    for entry in world:
        wanters.setdefault(entry.record.key, set()).add(entry.owner)
    uncontested = {key for key, who in wanters.items() if len(who) == 1}
    assert [e for e in in_order if e.record.key in uncontested] == [e for e in shuffled if e.record.key in uncontested]
    assert all(entry.owner in wanters[entry.record.key] for entry in shuffled)


# ----- a reconcile run: every unit's scan, the registry, and when each of its items last changed -----

HOUR = datetime(2026, 12, 1, 10, tzinfo=UTC)
HOME_UNIT = "123456789012/eu-west-1"


def scan(*instances: Instance, unit: str = HOME_UNIT, error: str | None = None) -> UnitScan:
    account_id, region = unit.split("/")
    return UnitScan(account_id, region, HOUR, instances, error)


def held(instance_id: str, unit: str = HOME_UNIT) -> OwnedRecord:
    return OwnedRecord(
        Record("ZPRIV", f"{instance_id}.internal.example.com.", "A", "10.0.1.5", 300), f"{unit}/{instance_id}"
    )


def run_plan(
    scans: list[UnitScan],
    registry: list[OwnedRecord],
    *,
    complete: bool = True,
    changed: dict[Any, datetime] | None = None,
) -> Plan:
    return reconcile_plan(
        scans, registry, changed or {}, ZONES, POLICY, home_account_id="123456789012", complete=complete
    )


@pytest.mark.parametrize(
    ("scans", "complete", "deleted"),
    [
        ([scan()], True, {"gone", "elsewhere"}),  # a scanned unit is reconciled, an uncovered one no longer managed
        ([scan()], False, {"gone"}),  # without the organization, an uncovered unit may be one only it names
        ([scan(), scan(unit="999999999999/eu-west-1", error="AccessDenied")], True, {"gone"}),  # failed: kept
        ([scan(error="Throttling"), scan(unit="999999999999/eu-west-1", error="AccessDenied")], True, set()),
    ],
)
def test_what_a_run_may_delete(scans: list[UnitScan], complete: bool, deleted: set[str]) -> None:
    registry = [held("gone"), held("elsewhere", "999999999999/eu-west-1")]

    plan = run_plan(scans, registry, complete=complete)

    assert {entry.owner.rsplit("/", 1)[1] for entry in plan.deletes} == deleted


def test_a_name_changed_after_its_units_scan_is_left_as_the_event_left_it() -> None:
    # Events wrote after the scan: `new`, claimed by an instance the scan did not see, and `gone`'s names,
    # released by its instance after the scan saw it running; `old` was in the registry before the scan
    later, earlier = HOUR + timedelta(minutes=5), HOUR - timedelta(hours=1)
    gone = instance("i-gone", Name="gone")
    registry = [held("new"), held("old")]
    changed = {held("new").record.key: later, held("old").record.key: earlier}
    changed |= {record.key: later for record in desired_records(gone, POLICY, ZONES, "home")[0]}

    plan = run_plan([scan(gone)], registry, changed=changed)

    assert [entry.record.name for entry in plan.deletes] == ["old.internal.example.com."]
    assert plan.claims == ()  # gone's names are not brought back


@pytest.mark.parametrize(
    ("event", "reason"),
    [
        ({"detail": {"run": "dns-hour-1"}}, None),
        ({"detail": {"run": "../x"}}, "is not valid"),
        ({"detail": {"run": 7}}, "is not valid"),
        ({"detail": "dns-hour-1"}, "is not valid"),
        ({}, "is not valid"),
    ],
)
def test_the_run_a_reconcile_ready_event_names(event: dict[str, Any], reason: str | None) -> None:
    if reason is None:
        assert ready_run(event) == "dns-hour-1"
        assert ready_run(reconcile_ready("dns-hour-1")) == "dns-hour-1"
    else:
        with pytest.raises(RejectedMessageError, match=reason):
            ready_run(event)


@given(
    st.lists(
        st.builds(
            Instance,
            account_id=st.just("123456789012"),
            region=st.just("eu-west-1"),
            instance_id=st.from_regex(r"i-[0-9a-f]{8}", fullmatch=True),
            state=st.sampled_from(["running", "stopped"]),
            tags=st.dictionaries(st.text(max_size=20), st.text(max_size=40), max_size=4),
            private_ipv4=st.none() | st.just("10.0.0.1"),
            ipv6=st.lists(st.just("2001:db8::1"), max_size=1).map(tuple),
        ),
        max_size=5,
    ),
    st.none() | st.text(max_size=30),
)
def test_a_scan_is_stored_and_read_back_unchanged(instances: list[Instance], error: str | None) -> None:
    stored = UnitScan("123456789012", "eu-west-1", HOUR, tuple(instances), error)

    assert from_json(UnitScan, as_json(stored)) == stored
