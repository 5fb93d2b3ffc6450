"""Which accounts of an organization are members: listed ones keep what accounts.yml says, and the home
account, excluded accounts and those listed are never added twice or at all."""

from __future__ import annotations

import pytest

from chalicelib.fleet import Found, in_words, members
from chalicelib.policy import AccountsPolicy, Organization

HOME = "123456789012"
ORGANIZATION = {"account": "111111111111", "ous": ["ou-ab12-cd34ef56"], "exclude": ["444444444444"]}


def accounts(**organization: object) -> AccountsPolicy:
    return AccountsPolicy.model_validate(
        {
            "defaults": {"regions": ["eu-west-1"]},
            "accounts": [{"id": "222222222222", "name": "workloads", "regions": ["us-east-1"]}],
            "organization": ORGANIZATION | organization,
        }
    )


@pytest.mark.parametrize(
    ("found", "added"),
    [
        pytest.param([Found("555555555555", "shop")], ["555555555555"], id="found"),
        pytest.param([Found("222222222222", "renamed")], [], id="listed-keeps-its-entry"),
        pytest.param([Found("444444444444", "lab")], [], id="excluded"),
        pytest.param([Found(HOME, "home")], [], id="home-is-always-its-own"),
    ],
)
def test_members_are_the_listed_then_those_found_that_are_not_listed_excluded_or_home(
    found: list[Found], added: list[str]
) -> None:
    fleet = members(accounts(), found, HOME)

    assert fleet[0].name == "workloads"  # what accounts.yml says of a listed account wins
    assert [account.id for account in fleet[1:]] == added


def test_a_found_account_takes_the_organizations_regions_or_else_the_defaults() -> None:
    shop = [Found("555555555555", "shop")]

    [_, own] = members(accounts(regions=["us-west-2"]), shop, HOME)
    [_, default] = members(accounts(), shop, HOME)

    assert (own.regions, default.regions) == (("us-west-2",), None)


def test_the_organization_in_words_names_its_ous_exclusions_and_role() -> None:
    assert in_words(Organization.model_validate(ORGANIZATION)) == (
        "the active accounts under ou-ab12-cd34ef56 and the OUs beneath, except 444444444444, listed at run time "
        "through arn:aws:iam::111111111111:role/opsbots-organization-reader"
    )
