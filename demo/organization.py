"""An AWS Organization in moto, for the demo and the tests: OUs, accounts under them, one suspended.

    root
    ├── prod            shop, old (closed: SUSPENDED), lab
    │   └── web         web
    └── sandbox         sandbox

Built by the management account (`MANAGEMENT`), as a platform team's would be; the bots list it through
the read-only role deploy/organization-role.yml creates there.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mypy_boto3_organizations import OrganizationsClient

MANAGEMENT = "111111111111"


@dataclass(frozen=True)
class Layout:
    root: str
    prod: str
    web: str  # an OU under prod
    sandbox: str
    accounts: dict[str, str]  # name -> id (moto makes the ids up)


def build(organizations: OrganizationsClient) -> Layout:
    """The organization above, made through the management account's `organizations` client."""
    organizations.create_organization(FeatureSet="ALL")
    root = organizations.list_roots()["Roots"][0]["Id"]

    def unit(parent: str, name: str) -> str:
        return organizations.create_organizational_unit(ParentId=parent, Name=name)["OrganizationalUnit"]["Id"]

    prod = unit(root, "prod")
    web, sandbox = unit(prod, "web"), unit(root, "sandbox")
    accounts: dict[str, str] = {}
    for name, parent in (("shop", prod), ("old", prod), ("lab", prod), ("web", web), ("sandbox", sandbox)):
        made = organizations.create_account(Email=f"{name}@example.com", AccountName=name)["CreateAccountStatus"]
        accounts[name] = made["AccountId"]
        organizations.move_account(AccountId=made["AccountId"], SourceParentId=root, DestinationParentId=parent)
    organizations.close_account(AccountId=accounts["old"])
    return Layout(root, prod, web, sandbox, accounts)
