"""The network the DNS bot works in, made in moto: VPCs with public subnets and the zones policies/dns.yml names."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from tests.conftest import REGION

if TYPE_CHECKING:
    from mypy_boto3_ec2 import EC2Client
    from mypy_boto3_route53 import Route53Client

PUBLIC_ZONE = "example.com"
PRIVATE_ZONES = ("internal.example.com", "10.in-addr.arpa")  # forward and reverse


def public_subnet(ec2: EC2Client, cidr: str) -> tuple[str, str]:
    """A VPC on `cidr` (a /16) and a subnet that gives instances public addresses: (vpc id, subnet id)."""
    vpc = ec2.create_vpc(CidrBlock=cidr)["Vpc"]["VpcId"]
    subnet = ec2.create_subnet(VpcId=vpc, CidrBlock=cidr.replace("/16", "/20"))["Subnet"]["SubnetId"]
    ec2.modify_subnet_attribute(SubnetId=subnet, MapPublicIpOnLaunch={"Value": True})
    return vpc, subnet


def zones(route53: Route53Client, vpc: str, *more_vpcs: str) -> dict[str, str]:
    """The public zone, and the private zones made in `vpc` and associated with `more_vpcs`: name -> zone id."""
    made = {PUBLIC_ZONE: route53.create_hosted_zone(Name=PUBLIC_ZONE, CallerReference=PUBLIC_ZONE)["HostedZone"]["Id"]}
    for name in PRIVATE_ZONES:
        private: dict[str, Any] = {"VPCRegion": REGION, "VPCId": vpc}
        made[name] = route53.create_hosted_zone(
            Name=name, CallerReference=name, HostedZoneConfig={"PrivateZone": True, "Comment": ""}, VPC=private
        )["HostedZone"]["Id"]
        for other in more_vpcs:
            route53.associate_vpc_with_hosted_zone(HostedZoneId=made[name], VPC={"VPCRegion": REGION, "VPCId": other})
    return {name: zone_id.rsplit("/", 1)[-1] for name, zone_id in made.items()}
