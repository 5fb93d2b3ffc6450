"""Chapter: the security-group guard (`on_security_group_change` and `sweep_security_groups`).

Every scene makes the change for real in moto first, then replays the CloudTrail event that change
would have produced (a recorded sample with the real account, group and rule ids swapped in) through
the real handler, and finally checks the outcome against moto's state, not the handler's word.
"""

from __future__ import annotations

import re
import tempfile
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from chalicelib.runtime import current
from demo import show
from demo.dns import bot_logs, wrapped
from demo.environment import MEMBER, REGION, create_table
from demo.organization import MANAGEMENT
from demo.organization import build as build_organization
from demo.stage import (
    EXTERNAL_ID,
    IDEMPOTENCY_TABLE,
    MEMBER_ROLES,
    ROOT,
    SENDER,
    Account,
    Stage,
    own_policies,
    read_policies,
    sample_event,
)

if TYPE_CHECKING:
    from moto.ses.models import Message
    from mypy_boto3_ec2 import EC2Client
    from mypy_boto3_ec2.type_defs import IpPermissionTypeDef, IpRangeTypeDef, SecurityGroupRuleTypeDef

RECIPIENT = "security@example.com"
ADMIN_PORTS = "no-admin-ports-from-internet"
SAMPLE_GROUP = "sg-0a7c3e91d54b26f80"  # the group of the ssh-world and multi samples
SAMPLE_SSH_RULE = "sgr-0e3b7d29a5c1f8464"
MAX_EXPOSURE_SECONDS = 10.0

SAMPLE_PREFIX_LIST = "pl-0b8e4d2a6c1f93507"  # the list of the prefix-list sample
EXEMPTION_TAG = "opsbots:exempt-until"

RuleKey = tuple[str, int, int, str]


def tcp(port: int, cidr: str = "0.0.0.0/0", description: str = "") -> IpPermissionTypeDef:
    source: IpRangeTypeDef = {"CidrIp": cidr, "Description": description} if description else {"CidrIp": cidr}
    return {"IpProtocol": "tcp", "FromPort": port, "ToPort": port, "IpRanges": [source]}


def rules_of(ec2: EC2Client, group_id: str | None = None) -> dict[str, SecurityGroupRuleTypeDef]:
    """A group's rules as moto holds them now (or every rule of the account), by rule id."""
    filters = [{"Name": "group-id", "Values": [group_id]}] if group_id else []
    pages = ec2.get_paginator("describe_security_group_rules").paginate(Filters=filters)  # type: ignore[arg-type]
    return {rule["SecurityGroupRuleId"]: rule for page in pages for rule in page["SecurityGroupRules"]}


def rule_key(rule: SecurityGroupRuleTypeDef) -> RuleKey:
    source = rule.get("CidrIpv4") or rule.get("CidrIpv6") or rule.get("PrefixListId")
    source = source or rule.get("ReferencedGroupInfo", {}).get("GroupId", "")
    return (rule["IpProtocol"], rule.get("FromPort", -1), rule.get("ToPort", -1), source)


def from_list(port: int, prefix_list_id: str) -> IpPermissionTypeDef:
    return {"IpProtocol": "tcp", "FromPort": port, "ToPort": port, "PrefixListIds": [{"PrefixListId": prefix_list_id}]}


def permission_key(permission: IpPermissionTypeDef) -> RuleKey:
    sources = [r["CidrIp"] for r in permission.get("IpRanges", [])] + [
        pair["GroupId"] for pair in permission.get("UserIdGroupPairs", [])
    ]
    return (permission["IpProtocol"], permission.get("FromPort", -1), permission.get("ToPort", -1), sources[0])


def describe(rule: SecurityGroupRuleTypeDef) -> str:
    protocol, first, last, source = rule_key(rule)
    traffic = "all traffic" if protocol == "-1" else f"{protocol} {first}" + (f"-{last}" if last != first else "")
    label = f' "{rule["Description"]}"' if rule.get("Description") else ""
    return f"{traffic} {'to' if rule.get('IsEgress') else 'from'} {source}{label}"


def exposure_in(body: str) -> float | None:
    found = re.search(r"Exposure: ([\d.]+) seconds", body)
    return float(found.group(1)) if found else None


def revoked_in(body: str) -> list[str]:
    """The rule ids an email says were revoked ("- revoked sgr-...")."""
    return re.findall(r"revoked (sgr-[0-9a-f]+)", body)


def rule_facts(rules: Mapping[str, SecurityGroupRuleTypeDef]) -> dict[str, str]:
    """Rules as the report states them: by rule id, what each allows."""
    return {rule_id: describe(rule) for rule_id, rule in rules.items()}


def email_facts(emails: Sequence[Message]) -> list[dict[str, object]]:
    """Who each email went to, from whom, and its subject."""
    return [
        {"from": email.source, "to": email.destinations.get("ToAddresses", []), "subject": email.subject}
        for email in emails
    ]


def policy_rules_in(subject: str) -> str:
    """The policy rules the bot names at the end of a violation subject ("... — rule-a, rule-b")."""
    return subject.rsplit(" — ", 1)[-1] if " — " in subject else "(none named)"


@contextmanager
def bot_calls(service: str, account_key: str = "home") -> Iterator[list[str]]:
    """The operations the bot's own client for `service` in the home account makes meanwhile."""
    from chalicelib.aws import Target
    from chalicelib.runtime import current

    client = current().clients.client(service, Target(account_key, REGION))  # type: ignore[call-overload]
    seen: list[str] = []

    def record(model: Any, **_: Any) -> None:
        seen.append(model.name)

    client.meta.events.register(f"before-call.{service}", record)
    try:
        yield seen
    finally:
        client.meta.events.unregister(f"before-call.{service}", record)


def assumed_by_the_bot() -> list[Any]:
    """moto's STS record of every AssumeRole into the member account made by the bots."""
    from moto.sts.models import sts_backends

    return [role for role in sts_backends[MEMBER]["aws"].assumed_roles if role.session_name.startswith("opsbots-")]


@dataclass
class SecurityGroupsChapter:
    stage: Stage
    first_delivery: tuple[dict[str, Any], dict[str, Any]] | None = None  # scene 1's event and answer
    untouched: tuple[tuple[EC2Client, str], ...] = ()  # compliant rules no later scene may remove

    def play(self) -> bool:
        scenes: Sequence[tuple[str, Callable[[], bool]]] = (
            ("SSH opened to the whole internet in the home account", self.ssh_to_the_world),
            ("the same event delivered a second time", self.redelivery),
            ("the run-once table is gone: the guard revokes and emails all the same", self.table_unavailable),
            ("Terraform opens five permissions in one call, one of them SSH", self.multi_permission_call),
            (f"SSH opened in member account {MEMBER}: handled through the member role", self.cross_account),
            ("an exemption tag keeps a rule open, but never silently and never for long", self.exemption),
            ("a prefix list gains 0.0.0.0/0: no security-group event, yet the rules using it go", self.prefix_list),
            ("a compliant change: SMTP egress to the internet", self.compliant_egress),
            ("the hourly sweep finds RDP opened with no event", self.sweep),
            (
                "an AWS Organization's accounts, found at run time: the sweep reaches one no file lists",
                self.organization,
            ),
        )
        return show.play_scenes("sg", scenes)

    # ----- helpers ------------------------------------------------------------------------------

    def new_group(self, account: Account, name: str) -> str:
        ec2 = account.ec2
        vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
        return ec2.create_security_group(GroupName=name, Description=f"demo {name}", VpcId=vpc)["GroupId"]

    def open(
        self, account: Account, group: str, permissions: list[IpPermissionTypeDef], egress: bool = False
    ) -> tuple[datetime, dict[RuleKey, str]]:
        """Authorize for real, in one call; returns when, and the new rule ids by (proto, from, to, source)."""
        ec2 = account.ec2
        before = set(rules_of(ec2, group))
        at = datetime.now(UTC)
        call = ec2.authorize_security_group_egress if egress else ec2.authorize_security_group_ingress
        call(GroupId=group, IpPermissions=permissions)
        # moto's response lists only the last permission's rule, so read the new ones back.
        created = {rule_key(rule): rule_id for rule_id, rule in rules_of(ec2, group).items() if rule_id not in before}
        return at, created

    def deliver(self, function: str, event: Mapping[str, Any]) -> dict[str, Any]:
        source = "EventBridge schedule" if function.startswith("sweep") else "CloudTrail → EventBridge"
        show.step(f"{source} invokes {function} (event {event['id']})")
        answer = self.stage.invoke(function, event)
        show.step(f"{function} answered {answer}")
        return answer

    def announce(self, event: Mapping[str, Any], at: datetime, what: str, where: str) -> None:
        detail = event["detail"]
        actor = detail["userIdentity"]["arn"]
        agent = detail["userAgent"].split(" ", 1)[0]
        show.step(
            f"{actor.rsplit('/', 1)[-1]} opens {what}\n"
            f"on {where}, {event['region']} ({detail['eventName']})\n"
            f"who: {actor} from {detail['sourceIPAddress']} using {agent}",
            at,
        )

    def show_emails(self, emails: list[Message]) -> None:
        for email in emails:
            to = ", ".join(email.destinations.get("ToAddresses", []))
            show.step(f"SES accepted an email from {email.source} to {to}")
            show.note(f"Subject: {email.subject}")
            show.note(show.quoted(show.html_as_text(email.body)))

    def new_emails(self, since: int) -> list[Message]:
        emails = self.stage.emails()[since:]
        self.show_emails(emails)
        return emails

    def idempotency_records(self) -> list[str]:
        """The run-once table's items: here, the email ledger's (key, state)."""
        items = self.stage.dynamodb.scan(TableName=IDEMPOTENCY_TABLE)["Items"]
        return sorted(f"{item['id']['S']} {item.get('status', {}).get('S', '?')}" for item in items)

    def tag(self, account: Account, group: str, tags: Mapping[str, str]) -> None:
        account.ec2.create_tags(Resources=[group], Tags=[{"Key": k, "Value": v} for k, v in tags.items()])

    def ssh_event(self, group: str, rule: str, at: datetime) -> dict[str, Any]:
        """CloudTrail's event for SSH opened to the world in `group`, with an event id of its own."""
        event = sample_event("sg-authorize-ingress-ssh-world", {SAMPLE_GROUP: group, SAMPLE_SSH_RULE: rule}, at)
        event["id"] = str(uuid.uuid4())
        return event

    # ----- scenes -------------------------------------------------------------------------------

    def ssh_to_the_world(self) -> bool:
        home = self.stage.home
        group = self.new_group(home, "bastion")
        opened_at, created = self.open(home, group, [tcp(22, description="temp ssh for debugging")])
        [rule] = created.values()
        event = sample_event("sg-authorize-ingress-ssh-world", {SAMPLE_GROUP: group, SAMPLE_SSH_RULE: rule}, opened_at)
        self.announce(event, opened_at, f'tcp 22 from 0.0.0.0/0 "temp ssh for debugging" (rule {rule})', f"{group}")
        show.note(f"account {home}; CloudTrail eventTime {event['detail']['eventTime']}")
        sent_before = len(self.stage.emails())

        answer = self.deliver("on_security_group_change", event)
        remaining = rules_of(home.ec2, group)
        gone_at = datetime.now(UTC)
        emails = self.stage.emails()[sent_before:]
        subject = emails[0].subject if emails else ""
        show.step(f"decision: {answer.get('status')}, breaks policy rule {policy_rules_in(subject)}")
        show.step(
            f"describe_security_group_rules {group}: {rule} {'is STILL THERE' if rule in remaining else 'is gone'}"
            f"\nleft: {', '.join(describe(r) for r in remaining.values()) or 'nothing'}",
            gone_at,
        )
        self.show_emails(emails)
        exposure = exposure_in(emails[0].body) if emails else None
        measured = (gone_at - opened_at).total_seconds()
        show.step(
            f"exposure: {exposure} s as the bot reports it (CloudTrail's whole-second eventTime to the revoke);"
            f"\n{measured:.2f} s measured by the demo, from the authorize call to the rule found gone"
        )

        key = "sg.ssh_to_the_world"
        checks = show.Checks()
        self._check_reverted(checks, answer, key=f"{key}.reverted")
        self._check_revoked(
            checks,
            f"{rule} (tcp 22 from 0.0.0.0/0) no longer exists in moto",
            group,
            rule,
            remaining,
            key=f"{key}.revoked",
        )
        self._check_one_email(checks, emails, key=f"{key}.one_email")
        body = emails[0].body if emails else ""
        wanted = (home.id, REGION, group, "alice.devops", "tcp 22", "0.0.0.0/0", ADMIN_PORTS, f"revoked {rule}")
        missing = [fact for fact in wanted if fact not in body]
        checks.that(
            not missing,
            "the email says who, what, where, which policy rule and what was done",
            f"{missing}",
            key=f"{key}.email_says_it_all",
            facts={"looked_for": wanted, "missing": missing, "revoked_in_email": revoked_in(body)},
        )
        checks.that(
            exposure is not None and 0 <= exposure < MAX_EXPOSURE_SECONDS,
            f"exposure under {MAX_EXPOSURE_SECONDS:.0f} s",
            f"{exposure}",
            key=f"{key}.exposure",
            facts={
                "reported_seconds": exposure,
                "measured_seconds": round(measured, 2),
                "limit_seconds": MAX_EXPOSURE_SECONDS,
            },
        )
        self.first_delivery = (event, answer)
        return checks.ok

    def _check_reverted(
        self, checks: show.Checks, answer: dict[str, Any], claim: str = "the handler reverted the change", *, key: str
    ) -> None:
        checks.that(
            answer.get("status") == "reverted",
            claim,
            f"answer {answer}",
            key=key,
            facts={"status": answer.get("status"), "email": answer.get("email")},
        )

    def _check_revoked(
        self,
        checks: show.Checks,
        claim: str,
        group: str,
        rule: str,
        remaining: Mapping[str, SecurityGroupRuleTypeDef],
        account: str | None = None,
        *,
        key: str,
    ) -> None:
        where = {"account": account} if account else {}
        checks.that(
            rule not in remaining,
            claim,
            key=key,
            facts={**where, "group": group, "rule": rule, "rules_left": rule_facts(remaining)},
        )

    def _check_one_email(self, checks: show.Checks, emails: list[Message], *, key: str) -> None:
        to = [email.destinations.get("ToAddresses") for email in emails]
        checks.that(
            to == [[RECIPIENT]] and emails[0].source == SENDER,
            f"exactly one email, from {SENDER} to {RECIPIENT}",
            f"{len(emails)} sent, to {to}",
            key=key,
            facts={"emails": email_facts(emails)},
        )

    def redelivery(self) -> bool:
        key = "sg.redelivery"
        checks = show.Checks()
        if self.first_delivery is None:
            return checks.that(False, "scene 1 left an event to deliver again", key=f"{key}.first_event")
        event, first_answer = self.first_delivery
        sent_before, records_before = len(self.stage.emails()), self.idempotency_records()
        show.step(f"the email ledger (table {IDEMPOTENCY_TABLE}): {', '.join(records_before)}")
        with bot_calls("ec2") as calls:
            answer = self.deliver("on_security_group_change", event)
        records = self.idempotency_records()
        emails = self.new_emails(sent_before)
        show.step(f"EC2 calls made by the bot: {', '.join(calls) or 'none'}; new emails: {len(emails)}")
        show.note("the revoke never waits on the ledger: it runs again, and finds the rule already gone")

        checks.that(
            (answer.get("status"), first_answer.get("email"), answer.get("email")) == ("reverted", "sent", "duplicate"),
            "the second delivery still ends reverted, and the ledger knows its email went out",
            f"{answer}",
            key=f"{key}.reverted_once_emailed",
            facts={
                "first": {"status": first_answer.get("status"), "email": first_answer.get("email")},
                "second": {"status": answer.get("status"), "email": answer.get("email")},
            },
        )
        checks.that(
            calls == ["DescribeSecurityGroups", "RevokeSecurityGroupIngress"],
            "the revoke ran again, unguarded, and was a no-op: the rule was already gone",
            f"{calls}",
            key=f"{key}.revoke_ran_again",
            facts={"ec2_calls": calls},
        )
        checks.that(
            not emails,
            "no second email",
            f"{len(emails)} sent",
            key=f"{key}.no_second_email",
            facts={"emails": email_facts(emails)},
        )
        checks.that(
            records == records_before and len(records) == 1,
            "the ledger is unchanged: one conditional write per event and outcome",
            f"{records_before} -> {records}",
            key=f"{key}.ledger_unchanged",
            facts={"ledger_before": records_before, "ledger_after": records},
        )
        return checks.ok

    def table_unavailable(self) -> bool:
        home, dynamodb = self.stage.home, self.stage.dynamodb
        dynamodb.delete_table(TableName=IDEMPOTENCY_TABLE)
        show.step(
            f"someone deletes the DynamoDB table {IDEMPOTENCY_TABLE}, the guard's run-once table and email ledger"
        )
        try:
            group = self.new_group(home, "debug-box")
            opened_at, created = self.open(home, group, [tcp(22, description="debugging, back in 5")])
            [rule] = created.values()
            event = self.ssh_event(group, rule, opened_at)
            self.announce(event, opened_at, f"tcp 22 from 0.0.0.0/0 (rule {rule})", group)
            sent_before = len(self.stage.emails())
            with bot_logs() as logs:
                answer = self.deliver("on_security_group_change", event)
            for entry in logs:
                show.note(
                    wrapped(f'the bot logged {entry.get("level")} "{entry.get("message")}": {entry.get("reason")}')
                )
            remaining = rules_of(home.ec2, group)
            show.step(
                f"describe_security_group_rules {group}: {rule} {'is STILL THERE' if rule in remaining else 'is gone'}"
            )
            emails = self.new_emails(sent_before)
        finally:
            create_table(dynamodb, "IdempotencyTable")
            show.step(f"the table {IDEMPOTENCY_TABLE} is created again")

        key = "sg.table_unavailable"
        checks = show.Checks()
        self._check_reverted(checks, answer, key=f"{key}.reverted")
        self._check_revoked(
            checks,
            f"{rule} is gone: the revoke never waits on bookkeeping",
            group,
            rule,
            remaining,
            key=f"{key}.revoked",
        )
        self._check_one_email(checks, emails, key=f"{key}.one_email")
        messages = [entry.get("message") for entry in logs]
        checks.that(
            "the email ledger is unavailable: sending without it (at least once)" in messages,
            "the outage is logged (and counted as DedupeUnavailable): at least once, never not at all",
            f"{messages}",
            key=f"{key}.outage_logged",
            facts={"bot_logs": [{"level": entry.get("level"), "message": entry.get("message")} for entry in logs]},
        )
        return checks.ok

    def multi_permission_call(self) -> bool:
        home = self.stage.home
        web, alb = self.new_group(home, "web"), self.new_group(home, "alb")
        requested: list[tuple[str, IpPermissionTypeDef]] = [
            ("sgr-0c18e5a7d2b94f630", tcp(443, description="public https")),
            ("sgr-07f4a2c9e6d1b3852", tcp(22, description="bastion ssh")),
            (
                "sgr-0b5e9d3a1f7c26e48",
                {
                    "IpProtocol": "tcp",
                    "FromPort": 8080,
                    "ToPort": 8080,
                    "UserIdGroupPairs": [{"GroupId": alb, "Description": "from alb"}],
                },
            ),
            (
                "sgr-02d7c4f8b1e9a5636",
                {
                    "IpProtocol": "tcp",
                    "FromPort": 0,
                    "ToPort": 65535,
                    "IpRanges": [{"CidrIp": "10.0.0.0/8", "Description": "internal all tcp"}],
                },
            ),
            (
                "sgr-0f9a3e6c5d2b78141",
                {"IpProtocol": "-1", "IpRanges": [{"CidrIp": "172.16.0.0/12", "Description": "corp vpn all traffic"}]},
            ),
        ]
        opened_at, created = self.open(home, web, [permission for _, permission in requested])
        real = {sample: created[permission_key(permission)] for sample, permission in requested}
        ssh = real["sgr-07f4a2c9e6d1b3852"]
        event = sample_event(
            "sg-authorize-ingress-multi", {SAMPLE_GROUP: web, "sg-05e8b1d7c2a94f36e": alb, **real}, opened_at
        )
        before = rules_of(home.ec2, web)
        self.announce(event, opened_at, f"{len(real)} permissions in one call", f"{web} (web), account {home}")
        show.note("\n".join(f"  {rule_id}  {describe(before[rule_id])}" for rule_id in real.values()))
        sent_before = len(self.stage.emails())

        answer = self.deliver("on_security_group_change", event)
        after = rules_of(home.ec2, web)
        show.step(
            "describe_security_group_rules:\n"
            + "\n".join(
                f"  {rule_id}  {describe(before[rule_id]):<52} {'kept' if rule_id in after else 'REVOKED'}"
                for rule_id in real.values()
            )
        )
        emails = self.new_emails(sent_before)

        kept = [rule_id for rule_id in real.values() if rule_id != ssh]
        outcome = {
            "requested": {rule_id: describe(before[rule_id]) for rule_id in real.values()},
            "kept": [rule_id for rule_id in real.values() if rule_id in after],
            "revoked": [rule_id for rule_id in real.values() if rule_id not in after],
        }
        key = "sg.multi_permission_call"
        checks = show.Checks()
        self._check_reverted(checks, answer, "the handler reverted the offending entry", key=f"{key}.reverted")
        checks.that(
            ssh not in after,
            f"the SSH entry {ssh} is gone",
            key=f"{key}.ssh_revoked",
            facts={"ssh_rule": ssh, **outcome},
        )
        checks.that(
            all(rule_id in after for rule_id in kept),
            "the other four entries stay",
            f"left: {list(after)}",
            key=f"{key}.others_stay",
            facts={"ssh_rule": ssh, **outcome},
        )
        self._check_one_email(checks, emails, key=f"{key}.one_email")
        body = emails[0].body if emails else ""
        checks.that(
            "1 rule(s) broke the policy" in body and f"revoked {ssh}" in body,
            "the email reports that one rule and only that one",
            key=f"{key}.email_names_one_rule",
            facts={"says_one_rule_broke": "1 rule(s) broke the policy" in body, "revoked_in_email": revoked_in(body)},
        )
        self.untouched += tuple((home.ec2, rule_id) for rule_id in kept)
        return checks.ok

    def cross_account(self) -> bool:
        member = self.stage.member
        group = self.new_group(member, "app")
        opened_at, created = self.open(member, group, [tcp(22)])
        [rule] = created.values()
        event = sample_event(
            "sg-authorize-ingress-cross-account",
            {"sg-0b91c4e7a2d6f3580": group, "sgr-04c9e2a7b5f1d8364": rule},
            opened_at,
        )
        self.announce(event, opened_at, f"tcp 22 from 0.0.0.0/0 (rule {rule})", f"{group}, account {member}")
        sent_before, assumed_before = len(self.stage.emails()), len(assumed_by_the_bot())

        answer = self.deliver("on_security_group_change", event)
        assumed = assumed_by_the_bot()[assumed_before:]
        for role in assumed:
            show.step(
                f"moto's STS: the bot assumed {role.role_arn}"
                f"\n(session {role.session_name}, ExternalId {role.external_id})"
            )
        remaining = rules_of(member.ec2, group)
        state = "is STILL THERE" if rule in remaining else "is gone"
        show.step(f"describe_security_group_rules in {member.id}: {rule} {state}")
        emails = self.new_emails(sent_before)

        key = "sg.cross_account"
        checks = show.Checks()
        self._check_reverted(checks, answer, key=f"{key}.reverted")
        self._check_revoked(
            checks,
            f"{rule} no longer exists in account {member.id}",
            group,
            rule,
            remaining,
            account=member.id,
            key=f"{key}.revoked",
        )
        checks.that(
            [(r.role_arn, r.external_id) for r in assumed] == [(MEMBER_ROLES["security_groups"], EXTERNAL_ID)],
            f"the bot reached {member.id} through its own {MEMBER_ROLES['security_groups'].split(':')[-1]} with the "
            "ExternalId",
            f"{[(r.role_arn, r.external_id) for r in assumed]}",
            key=f"{key}.member_role",
            facts={
                "assumed": [
                    {"role_arn": r.role_arn, "external_id": r.external_id, "session_name": r.session_name}
                    for r in assumed
                ]
            },
        )
        self._check_one_email(checks, emails, key=f"{key}.one_email")
        subject = emails[0].subject if emails else ""
        checks.that(
            f"{member.id} ({member.name})" in subject,
            f"the email names the member account {member}",
            key=f"{key}.email_names_account",
            facts={"subject": subject},
        )
        return checks.ok

    def exemption(self) -> bool:
        home = self.stage.home
        until = (datetime.now(UTC) + timedelta(days=30)).date().isoformat()
        vendor, legacy = self.new_group(home, "vendor-jump"), self.new_group(home, "legacy-ftp")
        self.tag(home, vendor, {EXEMPTION_TAG: until})
        self.tag(home, legacy, {EXEMPTION_TAG: "9999-12-31"})
        show.step(
            f"{vendor} (vendor-jump) is tagged {EXEMPTION_TAG}={until}, 30 days from now;\n"
            f"{legacy} (legacy-ftp) is tagged {EXEMPTION_TAG}=9999-12-31 by whoever could tag it"
        )
        sent_before = len(self.stage.emails())
        answers, opened = {}, {}
        for group in (vendor, legacy):
            opened_at, created = self.open(home, group, [tcp(22)])
            [opened[group]] = created.values()
            event = self.ssh_event(group, opened[group], opened_at)
            self.announce(event, opened_at, f"tcp 22 from 0.0.0.0/0 (rule {opened[group]})", group)
            answers[group] = self.deliver("on_security_group_change", event)
        kept = opened[vendor] in rules_of(home.ec2, vendor)
        gone = opened[legacy] not in rules_of(home.ec2, legacy)
        show.step(
            f"describe_security_group_rules: {opened[vendor]} {'is kept' if kept else 'is GONE'}, "
            f"{opened[legacy]} {'is gone' if gone else 'is STILL THERE'}"
        )
        emails = self.new_emails(sent_before)

        key = "sg.exemption"
        checks = show.Checks()
        subjects = [email.subject for email in emails]
        bodies = " ".join(email.body for email in emails)
        checks.that(
            (answers[vendor].get("status"), kept) == ("exempt", True),
            f"the exemption until {until} keeps {opened[vendor]} open",
            f"{answers[vendor]}",
            key=f"{key}.exempt_rule_kept",
            facts={"status": answers[vendor].get("status"), "rule": opened[vendor], "rule_exists": kept},
        )
        checks.that(
            len(emails) == 2 and "kept (exempt)" in subjects[0] and f"exempt until {until}" in bodies,
            "and security is still told: one email saying it was kept, and until when",
            f"{subjects}",
            key=f"{key}.kept_is_emailed",
            facts={
                "emails": email_facts(emails),
                "exempt_until": until,
                "says_until": f"exempt until {until}" in bodies,
            },
        )
        checks.that(
            (answers[legacy].get("status"), gone) == ("reverted", True),
            f"9999-12-31 exempts nothing: {opened[legacy]} is revoked",
            f"{answers[legacy]}",
            key=f"{key}.far_tag_ignored",
            facts={"status": answers[legacy].get("status"), "rule": opened[legacy], "rule_exists": not gone},
        )
        ignored = [
            line.removeprefix("- ")
            for email in emails
            for line in show.html_as_text(email.body).splitlines()
            if " ignored: " in line
        ]
        checks.that(
            "ignored: more than max_exemption_days (90) from now" in bodies,
            "and its email says why the tag was ignored",
            key=f"{key}.ignored_tag_explained",
            facts={"ignored_in_emails": ignored},
        )
        self.untouched += ((home.ec2, opened[vendor]),)
        return checks.ok

    def prefix_list(self) -> bool:
        home = self.stage.home
        ec2 = home.ec2
        offices = ec2.create_managed_prefix_list(
            PrefixListName="partner-offices",
            MaxEntries=5,
            AddressFamily="IPv4",
            Entries=[{"Cidr": "10.8.0.0/16", "Description": "partner office VPN"}],
        )["PrefixList"]["PrefixListId"]
        ssh_group, web_group = self.new_group(home, "partner-ssh"), self.new_group(home, "partner-web")
        _, ssh_rules = self.open(home, ssh_group, [from_list(22, offices)])
        _, web_rules = self.open(home, web_group, [from_list(443, offices)])
        [ssh], [web] = ssh_rules.values(), web_rules.values()
        show.step(
            f"prefix list {offices} (partner-offices) holds 10.8.0.0/16;\n"
            f"{ssh} in {ssh_group} allows tcp 22 from it, {web} in {web_group} tcp 443: both compliant"
        )
        opened_at = datetime.now(UTC)
        ec2.modify_managed_prefix_list(
            PrefixListId=offices, CurrentVersion=1, AddEntries=[{"Cidr": "0.0.0.0/0", "Description": "vendor access"}]
        )
        event = sample_event("sg-modify-prefix-list-world", {SAMPLE_PREFIX_LIST: offices}, opened_at)
        self.announce(event, opened_at, f"0.0.0.0/0 in prefix list {offices}", f"{offices} (no security group changed)")
        sent_before = len(self.stage.emails())

        answer = self.deliver("on_security_group_change", event)
        ssh_gone = ssh not in rules_of(ec2, ssh_group)
        web_kept = web in rules_of(ec2, web_group)
        show.step(
            f"describe_security_group_rules: {ssh} (tcp 22 from the list) "
            f"{'is gone' if ssh_gone else 'is STILL THERE'},\n{web} (tcp 443) {'is kept' if web_kept else 'is GONE'}"
        )
        emails = self.new_emails(sent_before)

        key = "sg.prefix_list"
        checks = show.Checks()
        self._check_reverted(checks, answer, "the edit of the list was judged and reverted", key=f"{key}.reverted")
        checks.that(
            ssh_gone,
            f"SSH from the list ({ssh}) is revoked: the list now holds the internet",
            key=f"{key}.ssh_revoked",
            facts={"prefix_list": offices, "rule": ssh, "rule_exists": not ssh_gone},
        )
        checks.that(
            web_kept,
            f"HTTPS from the list ({web}) stays: the web port may face the internet",
            key=f"{key}.https_stays",
            facts={"prefix_list": offices, "rule": web, "rule_exists": web_kept},
        )
        self._check_one_email(checks, emails, key=f"{key}.one_email")
        body = emails[0].body if emails else ""
        checks.that(
            f"prefix list {offices} gained 0.0.0.0/0" in body and f"revoked {ssh}" in body,
            "the email names the cause (the list's new entry) and the rule revoked",
            key=f"{key}.email_names_cause",
            facts={
                "says_cause": f"prefix list {offices} gained 0.0.0.0/0" in body,
                "revoked_in_email": revoked_in(body),
            },
        )
        self.untouched += ((ec2, web),)
        return checks.ok

    def compliant_egress(self) -> bool:
        home = self.stage.home
        group = self.new_group(home, "smtp-relay")
        opened_at, created = self.open(home, group, [tcp(25, description="smtp relay")], egress=True)
        [rule] = created.values()
        event = sample_event(
            "sg-authorize-egress", {"sg-0d3f6a2c8e17b5904": group, "sgr-06b2e8d4f1a9c7353": rule}, opened_at
        )
        self.announce(event, opened_at, f'egress tcp 25 to 0.0.0.0/0 "smtp relay" (rule {rule})', f"{group}")
        sent_before = len(self.stage.emails())

        with bot_calls("ec2") as calls:
            answer = self.deliver("on_security_group_change", event)
        remaining = rules_of(home.ec2, group)
        emails = self.new_emails(sent_before)
        show.step(f"EC2 calls made by the bot: {', '.join(calls) or 'none'}; emails: {len(emails)}")

        key = "sg.compliant_egress"
        checks = show.Checks()
        checks.that(
            answer.get("status") == "compliant",
            "the handler found it compliant",
            f"{answer}",
            key=f"{key}.compliant",
            facts={"status": answer.get("status")},
        )
        checks.that(
            rule in remaining,
            f"{rule} is still there",
            key=f"{key}.rule_stays",
            facts={"rule": rule, "rules": rule_facts(remaining)},
        )
        checks.that(
            not emails, "no email", f"{len(emails)} sent", key=f"{key}.no_email", facts={"emails": email_facts(emails)}
        )
        checks.that(
            not calls,
            "judged from the event alone: no EC2 call",
            f"{calls}",
            key=f"{key}.no_ec2_call",
            facts={"ec2_calls": calls},
        )
        self.untouched += ((home.ec2, rule),)
        return checks.ok

    def sweep(self) -> bool:
        member = self.stage.member
        group = self.new_group(member, "legacy-rdp")
        opened_at, created = self.open(member, group, [tcp(3389, description="vendor remote desktop")])
        [rdp] = created.values()
        show.step(
            f'someone opens tcp 3389 from 0.0.0.0/0 "vendor remote desktop" (rule {rdp})\n'
            f"on {group} (legacy-rdp), account {member}; no event reaches the bot",
            opened_at,
        )
        accounts = (self.stage.home.ec2, member.ec2)
        before = [set(rules_of(ec2)) for ec2 in accounts]
        sent_before = len(self.stage.emails())

        event = sample_event("scheduled-event", {})
        answer = self.deliver("sweep_security_groups", event)
        after = [set(rules_of(ec2)) for ec2 in accounts]
        removed = set().union(*(b - a for b, a in zip(before, after, strict=True)))
        show.step(f"describe_security_group_rules, both accounts: removed {', '.join(sorted(removed)) or 'nothing'}")
        emails = self.new_emails(sent_before)

        key = "sg.sweep"
        checks = show.Checks()
        checks.that(
            (answer.get("violations"), answer.get("reverted"), answer.get("failed_units")) == (1, 1, []),
            "the sweep found one violation, reverted it, and reached every account",
            f"{answer}",
            key=f"{key}.one_violation_reverted",
            facts={name: answer.get(name) for name in ("units", "violations", "reverted", "failed_units", "kept")},
        )
        checks.that(
            removed == {rdp},
            f"{rdp} (RDP) is gone, and nothing else in either account",
            f"{removed}",
            key=f"{key}.only_rdp_removed",
            facts={"rdp_rule": rdp, "removed": removed},
        )
        missing = [rule_id for ec2, rule_id in self.untouched if rule_id not in rules_of(ec2)]
        checks.that(
            not missing,
            "the compliant rules of the earlier scenes are untouched",
            key=f"{key}.earlier_rules_untouched",
            facts={"watched": [rule_id for _, rule_id in self.untouched], "missing": missing},
        )
        self._check_one_email(checks, emails, key=f"{key}.one_email")
        subject = emails[0].subject if emails else ""
        checks.that(
            "sweep: 1 violation(s)" in subject,
            "it is the sweep's digest, reporting one violation",
            key=f"{key}.digest",
            facts={"subject": subject},
        )
        return checks.ok

    def organization(self) -> bool:
        management = self.stage.home.other(MANAGEMENT, "management")
        layout = build_organization(management.session.client("organizations"))
        show.step(
            f"the management account {MANAGEMENT} has an organization: prod ({layout.prod}) holds shop, lab\n"
            "and old (closed), prod/web holds web, sandbox holds sandbox; accounts.yml lists none of them"
        )
        web = self.stage.home.other(layout.accounts["web"], "web")
        group = self.new_group(web, "web-admin")
        opened_at, created = self.open(web, group, [tcp(22)])
        [ssh] = created.values()
        show.step(f"someone opens tcp 22 from 0.0.0.0/0 (rule {ssh}) on {group}, account {web}", opened_at)
        with tempfile.TemporaryDirectory(prefix="opsbots-demo-organization-") as folder, own_policies():
            for shipped in (ROOT / "policies").glob("*.yml"):
                (Path(folder) / shipped.name).write_text(shipped.read_text())
            accounts = Path(folder) / "accounts.yml"
            lab = layout.accounts["lab"]
            organization = f'organization: {{account: "{MANAGEMENT}", ous: [{layout.prod}], exclude: ["{lab}"]}}\n'
            accounts.write_text(accounts.read_text() + organization)
            show.step(f"accounts.yml gains: {organization.strip()}")
            read_policies(Path(folder))
            runtime = current()
            fleet = runtime.clients.fleet(runtime.policies.accounts)  # what the functions list, as they list it
            members = {account.name: account.id for account in fleet.accounts}
            show.step(f"the bots list the organization through {fleet.organization and fleet.organization.role_arn}:")
            show.note("\n".join(f"  {name} {account}" for name, account in members.items()))
            sent_before = len(self.stage.emails())
            event = sample_event("scheduled-event", {})
            event["id"] = str(uuid.uuid4())  # the next hour's run: the earlier scene's was run once already
            answer = self.deliver("sweep_security_groups", event)
            emails = self.new_emails(sent_before)
        left = rules_of(web.ec2, group)

        key = "sg.organization"
        checks = show.Checks()
        ids = layout.accounts
        checks.that(
            set(members) == {"workloads", "shop", "web"},
            "members: the listed account, and prod's active accounts (web under prod/web), not lab (excluded), "
            "old (closed) or sandbox (another OU)",
            f"{members}",
            key=f"{key}.members",
            facts={"members": sorted(members), "ids_found": sorted(set(members.values()) - {MEMBER}), "ids": ids},
        )
        checks.that(
            ssh not in left and answer.get("units") == 4,
            "the sweep covered home and the three members, and revoked the SSH rule in web",
            f"units {answer.get('units')}, left {sorted(left)}",
            key=f"{key}.revoked",
            facts={"units": answer.get("units"), "violations": answer.get("violations"), "ssh_left": ssh in left},
        )
        subject = emails[0].subject if emails else ""
        checks.that(
            len(emails) == 1 and ids["web"] in show.html_as_text(emails[0].body),
            "one digest, naming the web account",
            subject,
            key=f"{key}.digest",
            facts={"subjects": [email.subject for email in emails]},
        )
        return checks.ok


def run(stage: Stage) -> bool:
    return SecurityGroupsChapter(stage).play()
