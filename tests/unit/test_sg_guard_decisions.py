"""The guard's decisions as tables and properties: plain data, no AWS, no moto."""

from __future__ import annotations

import ipaddress
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from chalicelib.policy import load_policies
from chalicelib.security_groups.decisions import (
    Failure,
    RevokeResult,
    Verdict,
    Violation,
    broken_rules,
    find_violations,
    is_internet,
    keep_exempt,
    plan_revocations,
    port_span,
    prefix_lists_to_resolve,
    read_exemption,
    risky_entries,
)
from chalicelib.security_groups.events import GroupSource, Network, Permission, PrefixListSource, Source
from chalicelib.security_groups.policy import PortRange, SecurityGroupRule, SecurityGroupsPolicy
from tests.support.aws import ROOT

POLICY: SecurityGroupsPolicy = load_policies(ROOT / "policies").of(SecurityGroupsPolicy)
ADMIN = "no-admin-ports-from-internet"
WEB = "only-web-from-internet"
NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)


def permission(
    source: Source | str,
    protocol: str = "tcp",
    ports: tuple[int, int] = (22, 22),
    direction: str | None = "ingress",
    rule_id: str | None = "sgr-0123456789abcdef0",
) -> Permission:
    return Permission(
        group_id="sg-0123456789abcdef0",
        direction=direction,  # type: ignore[arg-type]
        protocol=protocol,
        from_port=ports[0],
        to_port=ports[1],
        source=ipaddress.ip_network(source) if isinstance(source, str) else source,
        rule_id=rule_id,
    )


@pytest.mark.parametrize(
    ("perm", "expected"),
    [
        pytest.param(permission("0.0.0.0/0"), {ADMIN, WEB}, id="tcp 22 from the IPv4 internet"),
        pytest.param(permission("::/0"), {ADMIN, WEB}, id="tcp 22 from the IPv6 internet"),
        pytest.param(permission("0.0.0.0/1"), {ADMIN, WEB}, id="first half of a split range"),
        pytest.param(permission("128.0.0.0/1"), {ADMIN, WEB}, id="second half of a split range"),
        pytest.param(permission("52.95.110.0/24", ports=(20, 25)), {ADMIN, WEB}, id="range holding 22, public"),
        pytest.param(permission("0.0.0.0/0", protocol="-1", ports=(-1, -1)), {ADMIN, WEB}, id="all traffic"),
        pytest.param(permission("0.0.0.0/0", ports=(8080, 8080)), {WEB}, id="tcp 8080 from the internet"),
        pytest.param(permission("0.0.0.0/0", ports=(443, 443)), set(), id="tcp 443 is web"),
        pytest.param(permission("0.0.0.0/0", ports=(80, 443)), {WEB}, id="80-443 holds more than web"),
        pytest.param(permission("10.0.0.0/8"), set(), id="tcp 22 from private space"),
        pytest.param(permission("100.64.0.0/10"), set(), id="carrier-grade NAT is not internet"),
        pytest.param(permission("fc00::/7"), set(), id="unique-local IPv6 is not internet"),
        pytest.param(permission("2001:db8::/32"), {ADMIN, WEB}, id="public IPv6 block"),
        pytest.param(permission(GroupSource("sg-0fedcba9876543210")), set(), id="from a referenced group"),
        pytest.param(permission("0.0.0.0/0", ports=(25, 25), direction="egress"), set(), id="egress has no rule"),
        pytest.param(permission("0.0.0.0/0", protocol="udp", ports=(3389, 3389)), {ADMIN, WEB}, id="udp 3389"),
        pytest.param(permission("0.0.0.0/0", protocol="icmp", ports=(8, -1)), set(), id="icmp is not tcp/udp"),
        pytest.param(permission("0.0.0.0/0", direction=None), {ADMIN, WEB}, id="direction unknown (modify)"),
        pytest.param(permission("0.0.0.0/0", ports=(0, 65535)), {ADMIN, WEB}, id="every tcp port"),
        pytest.param(permission("8.8.8.8/32", ports=(3000, 3389)), {ADMIN, WEB}, id="range ending on 3389"),
        pytest.param(permission("0.0.0.0/8"), set(), id="0.0.0.0/8 'this network' is not routable"),
        pytest.param(permission("0.0.0.0/32"), set(), id="0.0.0.0/32 is not routable"),
        pytest.param(permission("0.0.0.0/7"), {ADMIN, WEB}, id="0.0.0.0/7 holds 1.0.0.0/8"),
    ],
)
def test_the_default_policy_judges_each_permission(perm: Permission, expected: set[str]) -> None:
    # Given the shipped policy and one permission (SSH from the internet breaks both rules: 22 is not web)
    # When it is judged
    # Then exactly the expected policy rules are broken
    assert set(broken_rules(perm, POLICY.rules)) == expected


def test_prefix_lists_are_judged_by_their_entries() -> None:
    # Given two prefix lists, one holding the internet and one holding only private space
    world, private = PrefixListSource("pl-world"), PrefixListSource("pl-private")
    entries: dict[str, tuple[Network, ...]] = {
        "pl-world": (ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("0.0.0.0/0")),
        "pl-private": (ipaddress.ip_network("10.0.0.0/8"),),
    }
    # When SSH is opened from each
    # Then only the one with a public entry violates, and both needed a look-up
    assert broken_rules(permission(world), POLICY.rules, entries) == (ADMIN, WEB)
    assert broken_rules(permission(private), POLICY.rules, entries) == ()
    assert prefix_lists_to_resolve([permission(world), permission(private)], POLICY.rules) == {"pl-world", "pl-private"}


def test_a_prefix_list_on_an_allowed_port_is_never_looked_up() -> None:
    assert prefix_lists_to_resolve([permission(PrefixListSource("pl-x"), ports=(443, 443))], POLICY.rules) == set()


def test_allowed_sources_win_over_sources() -> None:
    rule = SecurityGroupRule(
        name="ssh",
        ports=(PortRange(22, 22),),
        sources="internet",
        allowed_sources=(ipaddress.ip_network("203.0.113.0/24"),),
    )
    assert broken_rules(permission("203.0.113.5/32"), [rule]) == ()
    assert broken_rules(permission("203.0.112.0/23"), [rule]) == ("ssh",)


def test_listed_sources_match_overlapping_ranges() -> None:
    rule = SecurityGroupRule(name="no-partner", sources=(ipaddress.ip_network("198.51.100.0/24"),))
    assert broken_rules(permission("198.51.100.7/32"), [rule]) == ("no-partner",)
    assert broken_rules(permission("198.51.0.0/16"), [rule]) == ("no-partner",)
    assert broken_rules(permission("203.0.113.0/24"), [rule]) == ()


def test_any_source_includes_referenced_groups() -> None:
    rule = SecurityGroupRule(name="no-telnet", ports=(PortRange(23, 23),), sources="any")
    assert broken_rules(permission(GroupSource("sg-1"), ports=(23, 23)), [rule]) == ("no-telnet",)


@pytest.mark.parametrize(
    ("value", "state"),
    [
        pytest.param("2026-12-31", "active", id="a date within max_exemption_days"),
        pytest.param("2026-12-31T18:00:00+01:00", "active", id="a time with a zone"),
        pytest.param("2027-02-20T12:00:00Z", "active", id="exactly 89 days on"),
        pytest.param("2027-02-22", "too-far", id="more than 90 days on"),
        pytest.param("9999-12-31", "too-far", id="the endless bypass"),
        pytest.param("2020-01-01", "expired", id="in the past"),
        pytest.param("next tuesday", "unreadable", id="not a date"),
        pytest.param("", "unreadable", id="empty"),
    ],
)
def test_an_exemption_holds_only_for_a_readable_date_within_the_limit(value: str, state: str) -> None:
    # Given a group tagged with an exemption date, read on 2026-11-23 under the default 90-day limit
    # When the tag is read
    exemption = read_exemption("sg-1", {"opsbots:exempt-until": value}, POLICY, NOW)
    # Then only a readable date within the limit keeps rules open, and the note says what the tag is worth
    assert exemption is not None
    assert (exemption.state, exemption.active) == (state, state == "active")
    assert value in exemption.note or exemption.state == "active"


def test_a_group_without_the_tag_has_no_exemption() -> None:
    assert read_exemption("sg-1", {"Name": "web"}, POLICY, NOW) is None


def test_max_exemption_days_is_the_policys() -> None:
    strict = POLICY.model_copy(update={"max_exemption_days": 7})
    week = (NOW + timedelta(days=7)).isoformat()
    eight_days = (NOW + timedelta(days=8)).isoformat()
    assert read_exemption("sg-1", {"opsbots:exempt-until": week}, strict, NOW).active  # type: ignore[union-attr]
    assert not read_exemption("sg-1", {"opsbots:exempt-until": eight_days}, strict, NOW).active  # type: ignore[union-attr]


@given(st.datetimes(timezones=st.just(UTC)))
def test_no_exemption_outlasts_max_exemption_days(until: datetime) -> None:
    exemption = read_exemption("sg-1", {"opsbots:exempt-until": until.isoformat()}, POLICY, NOW)
    assert exemption is not None
    if exemption.active:
        assert NOW < until <= NOW + timedelta(days=POLICY.max_exemption_days)


def test_only_an_active_exemption_keeps_violations_open() -> None:
    # Given violations in three groups: one validly exempt, one tagged 9999-12-31, one untagged
    groups = ("sg-exempt", "sg-forever", "sg-plain")
    violations = [
        Violation(Permission(g, "ingress", "tcp", 22, 22, ipaddress.ip_network("0.0.0.0/0"), f"sgr-{i}"), (ADMIN,))
        for i, g in enumerate(groups)
    ]
    exemptions = [
        read_exemption("sg-exempt", {"opsbots:exempt-until": "2026-12-01"}, POLICY, NOW),
        read_exemption("sg-forever", {"opsbots:exempt-until": "9999-12-31"}, POLICY, NOW),
    ]
    # When they are split
    to_act, kept = keep_exempt(violations, [e for e in exemptions if e])
    # Then only the validly exempt group's violation is kept, and the other two are acted on
    assert [v.permission.group_id for v in kept] == ["sg-exempt"]
    assert [v.permission.group_id for v in to_act] == ["sg-forever", "sg-plain"]


@pytest.mark.parametrize(
    ("added", "risky"),
    [
        pytest.param(["0.0.0.0/0"], ["0.0.0.0/0"], id="the internet"),
        pytest.param(["10.1.0.0/16", "192.168.0.0/24"], [], id="private space only"),
        pytest.param(["10.1.0.0/16", "52.95.110.0/24"], ["52.95.110.0/24"], id="one public entry of two"),
        pytest.param(["0.0.0.0/8"], [], id="not routable"),
        pytest.param([], [], id="entries only removed"),
    ],
)
def test_a_prefix_list_edit_matters_only_when_it_adds_a_forbidden_source(added: list[str], risky: list[str]) -> None:
    # Given entries added to a prefix list, When they are judged against the shipped policy (traffic unknown)
    found = risky_entries([ipaddress.ip_network(entry) for entry in added], POLICY.rules)
    # Then only the entries some rule forbids as a source call for a look-up of the rules using the list
    assert [str(entry) for entry in found] == risky


@pytest.mark.parametrize(
    ("failures", "retrying"),
    [
        pytest.param([], False, id="nothing failed"),
        pytest.param(
            [Failure("sgr-1", "UnauthorizedOperation: no", transient=False)], False, id="denied: report and stop"
        ),
        pytest.param([Failure("sgr-1", "RequestLimitExceeded", transient=True)], True, id="throttled: retry"),
        pytest.param(
            [Failure("sgr-1", "denied", transient=False), Failure("sgr-2", "timeout", transient=True)],
            True,
            id="one of two may pass: retry",
        ),
    ],
)
def test_a_verdict_is_retried_when_a_failure_may_pass(failures: list[Failure], retrying: bool) -> None:
    assert Verdict("revoke-failed", results=(RevokeResult(failed=tuple(failures)),)).retrying is retrying


def test_revocations_are_grouped_per_group_and_direction() -> None:
    # Given violations on two groups, one with two rules, and one violation with no known rule id
    first = permission("0.0.0.0/0", rule_id="sgr-a")
    second = permission("::/0", rule_id="sgr-b")
    other = Permission("sg-other", "egress", "tcp", 22, 22, ipaddress.ip_network("0.0.0.0/0"), "sgr-c")
    unknown = permission("0.0.0.0/0", rule_id=None)
    # When the revocations are planned
    plan = plan_revocations(find_violations([first, second, other, unknown], [*POLICY.rules, _egress_rule()]))
    # Then there is one call per group and direction, and nothing for the unknown rule
    assert {(r.group_id, r.direction, r.rule_ids) for r in plan} == {
        ("sg-0123456789abcdef0", "ingress", ("sgr-a", "sgr-b")),
        ("sg-other", "egress", ("sgr-c",)),
    }


def _egress_rule() -> SecurityGroupRule:
    return SecurityGroupRule(name="no-egress-ssh", direction="egress", ports=(PortRange(22, 22),), sources="internet")


def test_port_spans_follow_the_protocol() -> None:
    assert port_span(permission("0.0.0.0/0", protocol="-1", ports=(-1, -1))) == PortRange(0, 65535)
    assert port_span(permission("0.0.0.0/0", protocol="icmp", ports=(8, 0))) is None
    assert port_span(permission("0.0.0.0/0", ports=(25, 20))) == PortRange(20, 25)


# ----- properties -----------------------------------------------------------------------------

ipv4 = st.builds(
    lambda address, prefix: ipaddress.ip_network(f"{ipaddress.IPv4Address(address)}/{prefix}", strict=False),
    st.integers(0, 2**32 - 1),
    st.integers(0, 32),
)
ipv6 = st.builds(
    lambda address, prefix: ipaddress.ip_network(f"{ipaddress.IPv6Address(address)}/{prefix}", strict=False),
    st.integers(0, 2**128 - 1),
    st.integers(0, 128),
)
networks = st.one_of(ipv4, ipv6)
port_ranges = st.tuples(st.integers(0, 65535), st.integers(0, 65535)).map(lambda p: PortRange(min(p), max(p)))
permissions = st.builds(
    Permission,
    group_id=st.sampled_from(["sg-a", "sg-b"]),
    direction=st.sampled_from(["ingress", "egress", None]),
    protocol=st.sampled_from(["tcp", "udp", "icmp", "icmpv6", "-1", "50"]),
    from_port=st.integers(-1, 65535),
    to_port=st.integers(-1, 65535),
    source=st.one_of(networks, st.builds(GroupSource, st.just("sg-ref"))),
    rule_id=st.one_of(st.none(), st.text("abcdef0123456789", min_size=1, max_size=4).map("sgr-".__add__)),
)
rules = st.builds(
    SecurityGroupRule,
    name=st.just("r"),
    direction=st.sampled_from(["ingress", "egress"]),
    protocols=st.one_of(st.none(), st.lists(st.sampled_from(["tcp", "udp", "icmp", "icmpv6"]), min_size=1).map(tuple)),
    ports=st.one_of(st.none(), st.lists(port_ranges, min_size=1, max_size=3).map(tuple)),
    sources=st.one_of(st.sampled_from(["internet", "any"]), st.lists(networks, min_size=1, max_size=3).map(tuple)),
    allowed_sources=st.lists(networks, max_size=3).map(tuple),
)


@given(st.lists(permissions, max_size=8), st.lists(rules, min_size=1, max_size=3))
def test_a_compliant_permission_is_never_revoked(
    perms: list[Permission], policy_rules: list[SecurityGroupRule]
) -> None:
    revoked = {rule_id for r in plan_revocations(find_violations(perms, policy_rules)) for rule_id in r.rule_ids}
    compliant_ids = {p.rule_id for p in perms if not broken_rules(p, policy_rules)}
    violating_ids = {p.rule_id for p in perms if broken_rules(p, policy_rules)}
    assert revoked <= violating_ids
    assert not (revoked & (compliant_ids - violating_ids))


@given(permissions, rules, networks)
def test_adding_an_allowed_source_never_creates_a_violation(
    perm: Permission, rule: SecurityGroupRule, allowed: Network
) -> None:
    wider = rule.model_copy(update={"allowed_sources": (*rule.allowed_sources, allowed)})
    assert set(broken_rules(perm, [wider])) <= set(broken_rules(perm, [rule]))


@given(networks)
def test_a_network_inside_private_space_is_never_internet(network: Network) -> None:
    private = [ipaddress.ip_network(n) for n in ("10.0.0.0/8", "192.168.0.0/16", "fc00::/7")]
    if any(network.version == p.version and network.subnet_of(p) for p in private):  # type: ignore[arg-type]
        assert not is_internet(network)
