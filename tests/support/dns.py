"""The network the DNS bot works in, made in moto: VPCs with public subnets and the zones policies/dns.yml names;
instances launched into it, and their state-change events delivered to the bot."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from tests.support.aws import HOME, REGION, load_event

# moto keeps Lambda functions without running them (no Docker): an asynchronous invocation is accepted, as Lambda
# accepts it, and the test then hands the payload to the function itself.
MOTO_LAMBDA: dict[str, Any] = {"lambda": {"use_docker": False}}

if TYPE_CHECKING:
    from mypy_boto3_ec2 import EC2Client
    from mypy_boto3_route53 import Route53Client
    from mypy_boto3_route53.type_defs import VPCTypeDef

PUBLIC_ZONE = "example.com"
PRIVATE_ZONES = ("internal.example.com", "10.in-addr.arpa")  # forward and reverse
SAMPLE_INSTANCE = "i-0c4f1a9e27b83d615"
SELECT = {"opsbots:dns": "yes"}


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
        private: VPCTypeDef = {"VPCRegion": REGION, "VPCId": vpc}
        made[name] = route53.create_hosted_zone(
            Name=name, CallerReference=name, HostedZoneConfig={"PrivateZone": True, "Comment": ""}, VPC=private
        )["HostedZone"]["Id"]
        for other in more_vpcs:
            route53.associate_vpc_with_hosted_zone(HostedZoneId=made[name], VPC={"VPCRegion": REGION, "VPCId": other})
    return {name: zone_id.rsplit("/", 1)[-1] for name, zone_id in made.items()}


@dataclass
class Network:
    """VPCs with public subnets in the home and the member account, and the zones: where instances are launched."""

    route53: Route53Client
    zones: dict[str, str]  # zone name -> id
    home_subnet: str
    member_subnet: str
    member_ec2: EC2Client
    home_ec2: EC2Client

    def launch(self, name: str | None = None, member: bool = False, **tags: str) -> str:
        ec2 = self.member_ec2 if member else self.home_ec2
        all_tags = {**SELECT, **({"Name": name} if name else {}), **tags}
        return ec2.run_instances(
            ImageId="ami-12345678",
            MinCount=1,
            MaxCount=1,
            SubnetId=self.member_subnet if member else self.home_subnet,
            TagSpecifications=[
                {"ResourceType": "instance", "Tags": [{"Key": k, "Value": v} for k, v in all_tags.items()]}
            ],
        )["Instances"][0]["InstanceId"]

    def records(self, zone: str) -> dict[tuple[str, str], list[str]]:
        pages = self.route53.get_paginator("list_resource_record_sets").paginate(HostedZoneId=self.zones[zone])
        return {
            (record["Name"], record["Type"]): [value["Value"] for value in record.get("ResourceRecords", [])]
            for page in pages
            for record in page["ResourceRecordSets"]
            if record["Type"] not in ("SOA", "NS")
        }

    def upsert(self, zone: str, name: str, value: str) -> None:
        self.route53.change_resource_record_sets(
            HostedZoneId=self.zones[zone],
            ChangeBatch={
                "Changes": [
                    {
                        "Action": "UPSERT",
                        "ResourceRecordSet": {
                            "Name": name,
                            "Type": "A",
                            "TTL": 300,
                            "ResourceRecords": [{"Value": value}],
                        },
                    }
                ]
            },
        )


def state_event(instance_id: str, state: str, account: str = HOME) -> dict[str, Any]:
    return load_event("ec2-state-running", **{SAMPLE_INSTANCE: instance_id, '"running"': f'"{state}"', HOME: account})


def deliver(lambdas: Any, instance_id: str, state: str, account: str = HOME) -> dict[str, Any]:
    payload: dict[str, Any] = lambdas.invoke(
        "on_instance_state_change", state_event(instance_id, state, account)
    ).payload
    return payload


def writer_function(name: str = "opsbots-test-on_instance_state_change") -> str:
    """The DNS writer as moto's Lambda knows it, for the reconcile's last worker to hand its run to: its name."""
    import io
    import json
    import zipfile

    import boto3

    role = boto3.client("iam").create_role(
        RoleName=f"{name}-role",
        AssumeRolePolicyDocument=json.dumps(
            {
                "Version": "2012-10-17",
                "Statement": [
                    {"Effect": "Allow", "Principal": {"Service": "lambda.amazonaws.com"}, "Action": "sts:AssumeRole"}
                ],
            }
        ),
    )["Role"]["Arn"]
    code = io.BytesIO()
    with zipfile.ZipFile(code, "w") as archive:
        archive.writestr("app.py", "")
    boto3.client("lambda").create_function(
        FunctionName=name, Runtime="python3.11", Role=role, Handler="app.handler", Code={"ZipFile": code.getvalue()}
    )
    return name


class HandedRuns:
    """The DNS writer as the reconcile's last worker sees it: the runs handed to it, for the test to apply."""

    def __init__(self) -> None:
        self.runs: list[str] = []

    def apply(self, run: str) -> None:
        self.runs.append(run)
