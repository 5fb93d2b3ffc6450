"""Member accounts from an AWS Organization (moto): the OUs named and those under them, suspended and excluded
accounts left out, listed accounts keeping what accounts.yml says, a sweep and an event reaching a discovered
account, and a management-account role that is denied."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from chalicelib.aws import HOME as HOME_KEY
from chalicelib.aws import Clients, Target
from chalicelib.dns.executors import Registry
from chalicelib.dns.handlers import DnsDeps, ZoneCache, reconcile
from chalicelib.fleet import OrganizationAccounts, OrganizationUnavailableError
from chalicelib.policy import AccountsPolicy, Organization, Policies
from chalicelib.runtime import current
from chalicelib.settings import POLICIES_DIR
from demo.organization import MANAGEMENT, Layout, build
from tests.support.aws import HOME, MEMBER, REGION, ROOT, TEST_EXTERNAL_ID, load_event
from tests.support.dns import SELECT, Network, public_subnet
from tests.support.estate import Estate, member_client, tcp
from tests.support.faults import Faults, body_names
from tests.support.lambdas import Emitted


@pytest.fixture
def organization(estate: Estate) -> Layout:
    return build(member_client("organizations", MANAGEMENT))


def accounts_yml(layout: Layout, *, listed: str = "", **organization: str) -> str:
    settings = {"account": f'"{MANAGEMENT}"', "ous": f"[{layout.prod}]", **organization}
    return (
        "defaults: {regions: [eu-west-1]}\n"
        f'accounts:\n  - {{id: "{MEMBER}", name: workloads}}\n{listed}'
        f"organization: {{{', '.join(f'{key}: {value}' for key, value in settings.items())}}}\n"
    )


def fleet(text: str, tmp_path: Path, clients: Clients | None = None) -> AccountsPolicy:
    (tmp_path / "accounts.yml").write_text(text)
    return (clients or Clients(external_id=TEST_EXTERNAL_ID)).fleet(Policies(tmp_path).accounts)


def test_the_named_ous_and_those_under_them_are_members_not_suspended_excluded_or_other_accounts(
    organization: Layout, tmp_path: Path
) -> None:
    ids = organization.accounts
    found = fleet(accounts_yml(organization, exclude=f'["{ids["lab"]}"]'), tmp_path)

    # shop (prod) and web (under prod) join the listed member; old is suspended, lab excluded, sandbox elsewhere
    assert {account.id: account.name for account in found.accounts} == {
        MEMBER: "workloads",
        ids["shop"]: "shop",
        ids["web"]: "web",
    }
    assert found.regions_of(found.accounts[1]) == ("eu-west-1",)


def test_without_ous_every_active_account_of_the_organization_is_a_member(organization: Layout, tmp_path: Path) -> None:
    text = accounts_yml(organization, regions="[eu-west-1, us-east-1]").replace(f"ous: [{organization.prod}], ", "")

    found = fleet(text, tmp_path)

    names = {account.name for account in found.accounts}
    assert names == {"workloads", "master", "shop", "lab", "web", "sandbox"}  # moto names the management "master"
    assert {found.regions_of(account) for account in found.accounts[1:]} == {("eu-west-1", "us-east-1")}


def test_a_listed_account_keeps_its_name_regions_and_roles_over_the_organizations(
    organization: Layout, tmp_path: Path
) -> None:
    shop = organization.accounts["shop"]
    listed = f'  - {{id: "{shop}", name: storefront, regions: [us-east-1], roles: {{dns: shop-dns}}}}\n'

    found = fleet(accounts_yml(organization, listed=listed), tmp_path)

    [member] = [account for account in found.accounts if account.id == shop]
    assert (member.name, found.regions_of(member)) == ("storefront", ("us-east-1",))
    assert found.role_arn(member, "dns") == f"arn:aws:iam::{shop}:role/shop-dns"


def test_the_sweep_reaches_an_account_found_in_the_organization(
    organization: Layout, policies_dir: Path, lambdas: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given SSH open to the world in the organization's "web" account, which accounts.yml does not list
    web_ec2 = member_client("ec2", organization.accounts["web"])
    vpc = web_ec2.create_vpc(CidrBlock="10.3.0.0/16")["Vpc"]["VpcId"]
    group = web_ec2.create_security_group(GroupName="web", Description="web", VpcId=vpc)["GroupId"]
    web_ec2.authorize_security_group_ingress(GroupId=group, IpPermissions=[tcp(22)])
    (policies_dir / "accounts.yml").write_text(accounts_yml(organization))
    monkeypatch.setenv(POLICIES_DIR, str(policies_dir))
    current.cache_clear()

    # When the hourly sweep runs
    result = lambdas.invoke("sweep_security_groups", load_event("scheduled-event")).payload

    # Then it swept home, the listed member and the three active accounts under prod, and closed the rule
    assert result["units"] == 5
    assert result["violations"] == 1
    assert web_ec2.describe_security_groups(GroupIds=[group])["SecurityGroups"][0]["IpPermissions"] == []


def test_an_event_from_an_account_found_in_the_organization_is_acted_on(
    organization: Layout, policies_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shop = organization.accounts["shop"]
    (policies_dir / "accounts.yml").write_text(accounts_yml(organization))

    clients, accounts = Clients(external_id=TEST_EXTERNAL_ID), Policies(policies_dir).accounts
    target = clients.target_for(shop, REGION, accounts, "security_groups")
    elsewhere = clients.target_for(organization.accounts["sandbox"], REGION, accounts, "dns")

    assert target is not None
    assert target.role_arn == f"arn:aws:iam::{shop}:role/opsbots-member-security-groups"
    assert elsewhere is None  # an account outside the OUs named is not ours to touch
    assert clients.fleet(accounts) is clients.fleet(accounts)  # merged once per listing, not once per event


def denied_organization() -> Clients:
    """Clients whose AssumeRole into the organization's reader role is refused, every time."""
    faults = Faults()
    faults.fail("sts", "AssumeRole", "denied", times=None, when=body_names("opsbots-organization-reader"))
    return Clients(external_id=TEST_EXTERNAL_ID, handlers=faults.handlers())


def test_with_the_organization_role_denied_the_listed_accounts_are_still_swept_and_the_failure_counted(
    organization: Layout, tmp_path: Path, emitted: Emitted
) -> None:
    (tmp_path / "accounts.yml").write_text(accounts_yml(organization))
    clients, accounts = denied_organization(), Policies(tmp_path).accounts

    units = clients.units(accounts, "security_groups")

    assert [target.account_id for target, _ in units] == [HOME, MEMBER]
    assert emitted("OrganizationUnavailable") == 1
    # And an event from an account only the organization knows is not dropped: it fails, for Lambda to retry it
    with pytest.raises(OrganizationUnavailableError):
        clients.target_for(organization.accounts["shop"], REGION, accounts, "security_groups")


def test_the_organization_is_listed_again_after_its_lifetime_and_its_last_listing_outlives_an_outage(
    organization: Layout,
) -> None:
    listings: list[str] = []
    denied = False
    now = [0.0]

    def client_for(_: Organization) -> Any:
        listings.append("list")
        if denied:
            return denied_organization().client("organizations", Clients(external_id=TEST_EXTERNAL_ID).home())
        return member_client("organizations", MANAGEMENT)

    kept = OrganizationAccounts(client_for, lifetime=600, clock=lambda: now[0])
    named = Organization(account=MANAGEMENT, ous=(organization.prod,))
    first = kept.found(named)
    now[0] = 599
    assert kept.found(named) == first  # within its lifetime: not listed again
    assert len(listings) == 1

    now[0], denied = 601, True
    assert kept.found(named) == first  # listed again, refused: the last listing stands
    assert len(listings) == 2


def test_a_dns_reconcile_without_the_organization_keeps_the_records_of_accounts_only_it_names(
    organization: Layout, network: Network, tmp_path: Path
) -> None:
    # Given an instance in the organization's "shop" account, which accounts.yml does not list, with its records
    shop = organization.accounts["shop"]
    shop_ec2 = member_client("ec2", shop)
    vpc, subnet = public_subnet(shop_ec2, "10.4.0.0/16")
    network.route53.associate_vpc_with_hosted_zone(
        HostedZoneId=network.zones["internal.example.com"], VPC={"VPCRegion": REGION, "VPCId": vpc}
    )
    shop_ec2.run_instances(
        ImageId="ami-12345678",
        MinCount=1,
        MaxCount=1,
        SubnetId=subnet,
        TagSpecifications=[{"ResourceType": "instance", "Tags": [{"Key": "Name", "Value": "till"}, *SELECTED]}],
    )
    (tmp_path / "accounts.yml").write_text(accounts_yml(organization))
    (tmp_path / "dns.yml").write_text((ROOT / "policies" / "dns.yml").read_text())
    policies = Policies(tmp_path)
    first = reconcile(policies=policies, deps=dns_deps_with(Clients(external_id=TEST_EXTERNAL_ID)))
    assert (first["complete"], first["failures"]) == (True, [])
    assert ("till.internal.example.com.", "A") in network.records("internal.example.com")

    # When the next run cannot list the organization
    second = reconcile(policies=policies, deps=dns_deps_with(denied_organization()))

    # Then it reconciles the accounts listed, and takes shop, which it did not cover, for nothing: its records stay
    assert (second["complete"], second["removed"]) == (False, 0)
    assert ("till.internal.example.com.", "A") in network.records("internal.example.com")


SELECTED = [{"Key": key, "Value": value} for key, value in SELECT.items()]


def dns_deps_with(clients: Clients) -> DnsDeps:
    home = Target(HOME_KEY, REGION)
    route53 = clients.client("route53", home)
    return DnsDeps(clients, route53, Registry(clients.client("dynamodb", home), "opsbots-dns"), ZoneCache(route53))
