"""Policy files: the shipped ones load, and every mistake is reported as `file:line: location: message`."""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chalicelib.policy import (
    POLICY_FILES,
    AccountsPolicy,
    Policies,
    PolicyError,
    PolicyProblem,
    json_schema,
    load_policies,
    model_of,
)
from chalicelib.security_groups.policy import PortRange, SecurityGroupsPolicy
from chalicelib.thumbnails.policy import ThumbnailsPolicy

SHIPPED = Path(__file__).parents[2] / "policies"
SG = "policies/security_groups.yml"
ACCOUNTS = "policies/accounts.yml"

SECURITY_GROUPS_YML = """\
mode: enforce
notify:
  email:
    sender: opsbots@example.com
    recipients: [security@example.com]
exemption_tag: opsbots:exempt-until
rules:
  - name: no-rdp-from-internet
    protocols: [tcp]
    ports: [3389]
    sources: internet
  - name: no-ssh-from-internet
    protocols: [tcp]
    ports: [22]
    sources: [0.0.0.0/0]
    allowed_sources: [10.0.0.0/8]
"""

ACCOUNTS_YML = """\
defaults:
  roles: {dns: opsbots-dns-reader}
  regions: [eu-west-1]
accounts:
  - id: "222222222222"
    name: workloads
  - id: "333333333333"
    name: data
    regions: [eu-central-1, us-east-1]
    roles: {snapshots: data-opsbots}
"""

DNS_YML = """\
zones:
  - zone: internal.example.com
    address: private
  - zone: example.com
    address: public
    ttl: 300
select_tag: opsbots:dns
"""

SNAPSHOTS_YML = """\
policies:
  - name: daily
    every: 24h
    select: {tags: {Backup: daily}}
    accounts: [home, "222222222222"]
    retention: {count: 7, max_age: 30d}
"""

THUMBNAILS_YML = """\
buckets:
  - bucket: photos-upload
    prefix: uploads/
    output_prefix: thumbnails/
    sizes:
      - {name: small, width: 256, height: 256, fit: cover}
      - {name: large, width: 1024}
  - bucket: scans
    output_bucket: scans-thumbnails
    output_prefix: ""
    sizes:
      - {name: page, height: 800}
    format: same
limits: {max_bytes: 20MiB, max_pixels: 50000000}
"""
THUMBS = "policies/thumbnails.yml"

VALID = {
    "security_groups.yml": SECURITY_GROUPS_YML,
    "accounts.yml": ACCOUNTS_YML,
    "dns.yml": DNS_YML,
    "snapshots.yml": SNAPSHOTS_YML,
    "thumbnails.yml": THUMBNAILS_YML,
}
FILES = ", ".join(f"{stem}.yml" for stem in POLICY_FILES)  # accounts.yml, then each bot's, as registered
DNS_FIELDS = ("zones", "name_tag", "alias_tag", "reverse", "select_tag")
UNKNOWN_FIELD = (
    "unknown field; expected one of: name, direction, protocols, ports, except_ports, sources, allowed_sources"
)


ORGANIZATION = 'organization: {account: "111111111111", ous: [prod], exclude: ["333333333333"]}\n'


def sg(old: str, new: str) -> dict[str, str | None]:
    assert old in SECURITY_GROUPS_YML
    return {"security_groups.yml": SECURITY_GROUPS_YML.replace(old, new)}


def accounts(old: str, new: str) -> dict[str, str | None]:
    assert old in ACCOUNTS_YML
    return {"accounts.yml": ACCOUNTS_YML.replace(old, new)}


def dns(old: str, new: str) -> dict[str, str | None]:
    assert old in DNS_YML
    return {"dns.yml": DNS_YML.replace(old, new)}


def snapshots(old: str, new: str) -> dict[str, str | None]:
    assert old in SNAPSHOTS_YML
    return {"snapshots.yml": SNAPSHOTS_YML.replace(old, new)}


def thumbs(old: str, new: str) -> dict[str, str | None]:
    assert old in THUMBNAILS_YML
    return {"thumbnails.yml": THUMBNAILS_YML.replace(old, new)}


def write_policies(directory: Path, changes: dict[str, str | None]) -> None:
    """The valid documents with `changes` applied: new text per file name, None to leave a file out."""
    directory.mkdir(exist_ok=True)
    for name, text in (VALID | changes).items():
        if text is not None:
            (directory / name).write_text(text, encoding="utf-8")


def problems_in(directory: Path) -> list[str]:
    with pytest.raises(PolicyError) as raised:
        load_policies(directory)
    return str(raised.value).splitlines()


@pytest.fixture
def policies(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    return tmp_path / "policies"


def test_the_shipped_policies_load() -> None:
    # Given the policies directory that ships with the app
    # When it is loaded
    loaded = load_policies(SHIPPED)
    # Then both files are there with the documented defaults
    assert loaded.of(SecurityGroupsPolicy).mode == "enforce"
    assert [rule.name for rule in loaded.of(SecurityGroupsPolicy).rules] == [
        "no-admin-ports-from-internet",
        "only-web-from-internet",
    ]
    assert [account.id for account in loaded.accounts.accounts] == ["222222222222"]


def test_the_valid_test_documents_load(policies: Path) -> None:
    # Given the documents every broken case starts from
    write_policies(policies, {})
    # When they are loaded
    loaded = load_policies("policies")
    # Then every field is read as written
    rule = loaded.of(SecurityGroupsPolicy).rules[1]
    assert rule.ports == (PortRange(22, 22),)
    assert [str(network) for network in rule.allowed_sources] == ["10.0.0.0/8"]
    assert loaded.accounts.defaults.regions == ("eu-west-1",)


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        pytest.param(
            sg("ports: [22]", "ports: [22, ssh]"),
            [f"{SG}:14: rules[1].ports[1]: 'ssh' is not a port or range"],
            id="port-name",
        ),
        pytest.param(
            sg("ports: [22]", "ports: [22, 70000, 25-20]"),
            [
                f"{SG}:14: rules[1].ports[1]: port 70000 is outside 0-65535",
                f"{SG}:14: rules[1].ports[2]: port range 25-20 ends before it starts",
            ],
            id="port-out-of-range",
        ),
        pytest.param(sg("ports: [22]", "port: [22]"), [f"{SG}:14: rules[1].port: {UNKNOWN_FIELD}"], id="typo"),
        pytest.param(
            sg("exemption_tag: opsbots:exempt-until", "exemption_tag: 42"),
            [f"{SG}:6: exemption_tag: Input should be a valid string"],
            id="wrong-type",
        ),
        pytest.param(
            sg("protocols: [tcp]\n    ports: [22]", "protocols: tcp\n    ports: [22]"),
            [f"{SG}:13: rules[1].protocols: Input should be a list"],
            id="scalar-for-list",
        ),
        pytest.param(
            sg("mode: enforce", "mode: dry-run"),
            [f"{SG}:1: mode: Input should be 'enforce' or 'report'"],
            id="bad-choice",
        ),
        pytest.param(
            sg("[10.0.0.0/8]", "[10.0.0.0/8, 10.0.0.300/8]"),
            [f"{SG}:16: rules[1].allowed_sources[1]: '10.0.0.300/8' is not a CIDR"],
            id="bad-cidr",
        ),
        pytest.param(
            sg("sources: internet", "sources: everywhere"),
            [f"{SG}:11: rules[0].sources: 'everywhere' is not 'internet', 'any' or a list of CIDRs"],
            id="bad-sources",
        ),
        pytest.param(
            sg("ports: [3389]", "ports: [3389]\n    except_ports: [443]"),
            [f"{SG}:11: rules[0].except_ports: give either ports or except_ports, not both"],
            id="ports-and-except-ports",
        ),
        pytest.param(
            sg("name: no-ssh-from-internet", "name: no-rdp-from-internet"),
            [f"{SG}:7: rules: rules[0] and rules[1] have the same name 'no-rdp-from-internet'"],
            id="duplicate-rule-name",
        ),
        pytest.param(
            sg("name: no-ssh-from-internet", "name: No SSH"),
            [f"{SG}:12: rules[1].name: 'No SSH' is not a rule name (a-z, 0-9 and '-')"],
            id="bad-rule-name",
        ),
        pytest.param(
            sg("    sender: opsbots@example.com\n", ""),
            [f"{SG}:3: notify.email.sender: Field required"],
            id="missing-field",
        ),
        pytest.param(
            sg("recipients: [security@example.com]", "recipients: [security]"),
            [f"{SG}:5: notify.email.recipients[0]: 'security' is not an email address"],
            id="bad-email",
        ),
        pytest.param(
            sg("recipients: [security@example.com]", "recipients: []"),
            [f"{SG}:5: notify.email.recipients: must list at least one item"],
            id="no-recipients",
        ),
        pytest.param(
            sg("    protocols: [tcp]\n    ports: [3389]", "    protocols: [tcp]\n    protocols: [udp]"),
            [f"{SG}:10: rules[0].protocols: duplicate key; line 9 already sets it"],
            id="duplicate-key",
        ),
        pytest.param(
            accounts('id: "222222222222"', "id: 2222"),
            [f"{ACCOUNTS}:5: accounts[0].id: 2222 is not an account id: account ids are 12 digits; quote them in YAML"],
            id="unquoted-short-account-id",
        ),
        pytest.param(
            accounts('id: "222222222222"', 'id: "22222222222x"'),
            [f"{ACCOUNTS}:5: accounts[0].id: '22222222222x' is not an account id: account ids are 12 digits"],
            id="bad-account-id",
        ),
        pytest.param(
            accounts('id: "333333333333"', 'id: "222222222222"'),
            [f"{ACCOUNTS}:4: accounts: accounts[0] and accounts[1] have the same id '222222222222'"],
            id="duplicate-account-id",
        ),
        pytest.param(
            accounts("[eu-central-1, us-east-1]", "[eu-central-1, frankfurt]"),
            [f"{ACCOUNTS}:9: accounts[1].regions[1]: 'frankfurt' is not an AWS region name"],
            id="bad-region",
        ),
        pytest.param(
            accounts("roles: {snapshots: data-opsbots}", "role_name: data-opsbots"),
            [
                f"{ACCOUNTS}:7: accounts[1]: role_name was replaced by roles, one member role per bot "
                "(deploy/member-role.yml): roles: {security_groups: ..., dns: ..., snapshots: ...}"
            ],
            id="role-name-of-one-role-for-all-bots",
        ),
        pytest.param(
            accounts("roles: {snapshots: data-opsbots}", "roles: {thumbnails: data-opsbots}"),
            [
                f"{ACCOUNTS}:10: accounts[1].roles.thumbnails: unknown field; "
                "expected one of: security_groups, dns, snapshots"
            ],
            id="role-of-a-bot-that-has-none",
        ),
        pytest.param(
            accounts("    roles: {snapshots: data-opsbots}\n", "    roles: {snapshots: data-opsbots}\n" + ORGANIZATION),
            [f"{ACCOUNTS}:11: organization.ous[0]: 'prod' is not an OU id (ou-...) or a root id (r-...)"],
            id="organization-ou-by-name",
        ),
        pytest.param(
            accounts(
                "    roles: {snapshots: data-opsbots}\n",
                "    roles: {snapshots: data-opsbots}\n" + ORGANIZATION.replace("[prod]", "[ou-ab12-cd34ef56]"),
            ),
            [f"{ACCOUNTS}:11: organization: exclude names 333333333333, which accounts lists: keep one"],
            id="organization-excludes-a-listed-account",
        ),
        pytest.param(
            sg("recipients: [security@example.com]", "recipients: [security@example.com"),
            [f"{SG}:6: invalid YAML: while parsing a flow sequence, expected ',' or ']', but got ':'"],
            id="yaml-syntax",
        ),
        pytest.param({"accounts.yml": ""}, [f"{ACCOUNTS}:1: file is empty"], id="empty-file"),
        pytest.param(
            {"accounts.yml": "- id: '222222222222'\n"},
            [f"{ACCOUNTS}:1: expected a mapping of settings at the top level"],
            id="top-level-list",
        ),
        pytest.param(
            snapshots('"222222222222"', '"999999999999"'),
            [
                "policies/snapshots.yml:5: policies[0].accounts: "
                "'999999999999' is not 'home' or an account id in accounts.yml"
            ],
            id="snapshot-unknown-account",
        ),
        pytest.param(
            snapshots("every: 24h", "every: 1 day"),
            ["policies/snapshots.yml:3: policies[0].every: '1 day' is not a duration like 90m, 24h, 30d or 2w"],
            id="snapshot-bad-duration",
        ),
        pytest.param(
            snapshots("select: {tags: {Backup: daily}}", "select: {}"),
            [
                "policies/snapshots.yml:4: policies[0].select: "
                "an empty selection would take every volume; give tags or instance_tags"
            ],
            id="snapshot-empty-selection",
        ),
        pytest.param(
            dns("ttl: 300", 'ttl: 300\n    accounts: [home, "999999999999"]'),
            ["policies/dns.yml:7: zones[1].accounts: '999999999999' is not 'home' or an account id in accounts.yml"],
            id="dns-zone-unknown-account",
        ),
        pytest.param(
            dns("address: private", "address: internal"),
            ["policies/dns.yml:3: zones[0].address: Input should be 'private', 'public' or 'ipv6'"],
            id="dns-address",
        ),
        pytest.param(
            dns("zone: example.com", "zone: exa mple.com"),
            ["policies/dns.yml:4: zones[1].zone: 'exa mple.com' is not a DNS zone name like internal.example.com"],
            id="dns-zone-name",
        ),
        pytest.param(
            dns("zones:", "zonez:"),
            [
                "policies/dns.yml:1: zones: Field required",
                "policies/dns.yml:1: zonez: unknown field; expected one of: " + ", ".join(DNS_FIELDS),
            ],
            id="dns-typo",
        ),
        pytest.param(
            thumbs("prefix: uploads/", "prefix: thumbnails/"),
            [
                f"{THUMBS}:1: buckets: buckets[0]: output_prefix 'thumbnails/' overlaps prefix 'thumbnails/' on "
                "bucket photos-upload: thumbnails would be made of thumbnails"
            ],
            id="thumbnails-loop",
        ),
        pytest.param(
            thumbs("prefix: uploads/", "prefix: ''"),
            [
                f"{THUMBS}:1: buckets: buckets[0]: output_prefix 'thumbnails/' overlaps prefix '' on "
                "bucket photos-upload: thumbnails would be made of thumbnails"
            ],
            id="thumbnails-whole-bucket-into-itself",
        ),
        pytest.param(
            thumbs(
                'output_bucket: scans-thumbnails\n    output_prefix: ""',
                "output_bucket: photos-upload\n    output_prefix: uploads/x/",
            ),
            [
                f"{THUMBS}:1: buckets: buckets[1] and buckets[0]: output_prefix 'uploads/x/' overlaps prefix "
                "'uploads/' on bucket photos-upload: thumbnails would be made of thumbnails"
            ],
            id="thumbnails-loop-across-entries",
        ),
        pytest.param(
            thumbs("  - bucket: scans\n", "  - bucket: photos-upload\n    prefix: uploads/scans/\n"),
            [
                f"{THUMBS}:1: buckets: buckets[0] and buckets[1]: prefixes 'uploads/' and 'uploads/scans/' overlap "
                "on bucket photos-upload: an upload may match one rule only"
            ],
            id="thumbnails-overlapping-inputs",
        ),
        pytest.param(
            thumbs("{name: large, width: 1024}", "{name: large}"),
            [f"{THUMBS}:7: buckets[0].sizes[1]: give width, height or both"],
            id="thumbnails-size-without-box",
        ),
        pytest.param(
            thumbs("width: 256, height: 256, fit: cover", "width: 256, fit: cover"),
            [f"{THUMBS}:6: buckets[0].sizes[0]: fit: cover crops to a box: give both width and height"],
            id="thumbnails-cover-needs-a-box",
        ),
        pytest.param(
            thumbs("{name: large, width: 1024}", "{name: small, width: 1024}"),
            [f"{THUMBS}:5: buckets[0].sizes: sizes[0] and sizes[1] have the same name 'small'"],
            id="thumbnails-duplicate-size",
        ),
        pytest.param(
            thumbs("{name: large, width: 1024}", "{name: large, width: 20000}"),
            [f"{THUMBS}:7: buckets[0].sizes[1].width: Input should be less than or equal to 8192"],
            id="thumbnails-too-wide",
        ),
        pytest.param(
            thumbs("name: large", "name: large/x"),
            [f"{THUMBS}:7: buckets[0].sizes[1].name: 'large/x' is not a size name (letters, digits, '-' and '_')"],
            id="thumbnails-size-name",
        ),
        pytest.param(
            thumbs("format: same", "format: gif"),
            [f"{THUMBS}:13: buckets[1].format: Input should be 'webp', 'jpeg', 'png', 'avif' or 'same'"],
            id="thumbnails-format",
        ),
        pytest.param(
            thumbs("max_bytes: 20MiB", "max_bytes: 20 megs"),
            [f"{THUMBS}:14: limits.max_bytes: '20 megs' is not a size like 50MB, 20MiB or 1000000"],
            id="thumbnails-byte-size",
        ),
        pytest.param(
            thumbs("  - bucket: scans\n", "  - bucket: Scans_Bucket\n"),
            [f"{THUMBS}:8: buckets[1].bucket: 'Scans_Bucket' is not an S3 bucket name"],
            id="thumbnails-bucket-name",
        ),
        pytest.param(
            {"thumbnail.yml": "buckets: []\n"},
            [f"policies/thumbnail.yml:1: unknown policy file; expected only {FILES}"],
            id="unknown-file",
        ),
        pytest.param(
            {"accounts.yml": None, "accounts.yaml": ACCOUNTS_YML},
            [
                f"policies/accounts.yaml:1: unknown policy file; expected only {FILES}",
                f"{ACCOUNTS}:1: policy file not found in policies: every bot reads accounts.yml",
            ],
            id="missing-file",
        ),
    ],
)
def test_a_broken_document_is_reported_at_its_file_and_line(
    policies: Path, changes: dict[str, str | None], expected: list[str]
) -> None:
    # Given a policy directory with one mistake
    write_policies(policies, changes)
    # When it is loaded
    # Then the mistake is reported where the user made it, and nothing else is
    assert problems_in(Path("policies")) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("!!bool maybe", "cannot read 'maybe' as bool"),
        ("!!int ''", "cannot read '' as int"),
        ("!!float abc", "cannot read 'abc' as float"),
        ("2024-02-30", "cannot read '2024-02-30' as timestamp"),
        ("!!timestamp tomorrow", "cannot read 'tomorrow' as timestamp"),
        ("!!binary ä", "invalid YAML: failed to convert base64 data into ascii: 'ascii' codec can't encode"),
        ("!!python/name:os.system", "invalid YAML: could not determine a constructor"),
        ("&a [*a, *a]", "exemption_tag: Input should be a valid string"),
    ],
)
def test_a_value_yaml_cannot_construct_is_a_problem_not_a_crash(policies: Path, value: str, expected: str) -> None:
    # Given a value that PyYAML's own constructors choke on
    write_policies(policies, sg("exemption_tag: opsbots:exempt-until", f"exemption_tag: {value}"))
    # When it is loaded
    # Then it is reported at its line
    [problem] = problems_in(policies)
    assert problem.startswith(f"{SG}:6: ")
    assert expected in problem


def test_a_file_that_is_not_utf8_is_reported_at_the_offending_line(policies: Path) -> None:
    # Given an accounts file saved in Latin-1
    write_policies(policies, {})
    (policies / "accounts.yml").write_bytes(ACCOUNTS_YML.replace("workloads", "caf\xe9").encode("latin-1"))
    # When it is loaded
    # Then the problem names the line with the bad byte
    assert problems_in(policies) == [f"{ACCOUNTS}:6: not UTF-8 text: invalid continuation byte"]


def test_problems_in_both_files_are_all_reported_at_once(policies: Path) -> None:
    # Given mistakes in both files and an unknown file next to them
    write_policies(
        policies,
        {
            "security_groups.yml": SECURITY_GROUPS_YML.replace("ports: [22]", "ports: [ssh]").replace(
                "mode: enforce", "mode: loud"
            ),
            "accounts.yml": ACCOUNTS_YML.replace("regions: [eu-west-1]", "regions: []"),
            "thumbnail.yml": "keep: 7\n",
        },
    )
    # When they are loaded
    # Then every mistake is listed, file by file, in line order
    assert problems_in(policies) == [
        f"policies/thumbnail.yml:1: unknown policy file; expected only {FILES}",
        f"{ACCOUNTS}:3: defaults.regions: must list at least one item",
        f"{SG}:1: mode: Input should be 'enforce' or 'report'",
        f"{SG}:14: rules[1].ports[0]: 'ssh' is not a port or range",
    ]


def test_a_directory_outside_the_working_directory_is_shown_as_given(tmp_path: Path) -> None:
    # Given a policy directory that is not under the working directory
    write_policies(tmp_path, {"accounts.yml": ""})
    # When it is loaded
    # Then the problem names the file by the path it was given
    assert problems_in(tmp_path) == [f"{tmp_path / 'accounts.yml'}:1: file is empty"]


@pytest.mark.parametrize(
    ("problem", "shown"),
    [
        (PolicyProblem("policies/a.yml", 3, "rules[0]", "bad"), "policies/a.yml:3: rules[0]: bad"),
        (PolicyProblem("policies/a.yml", 1, "", "file is empty"), "policies/a.yml:1: file is empty"),
    ],
)
def test_a_problem_reads_like_a_compiler_error(problem: PolicyProblem, shown: str) -> None:
    # Given a problem, with or without a location
    # When it is shown
    # Then it reads file:line: location: message
    assert str(problem) == shown


@given(first=st.integers(0, 65535), last=st.integers(0, 65535))
def test_a_port_range_reads_back_what_it_prints(first: int, last: int) -> None:
    # Given any valid range
    ports = PortRange(min(first, last), max(first, last))
    # When it is printed and read back, or written by hand
    # Then it is the same range
    assert PortRange.parse(str(ports)) == ports
    assert PortRange.parse(f"{ports.first}-{ports.last}") == ports


@given(port=st.integers(0, 65535))
def test_a_single_port_is_a_range_of_one(port: int) -> None:
    # Given a port written as a YAML integer
    # When it is read
    ports = PortRange.parse(port)
    # Then it contains that port and no other
    assert ports == PortRange(port, port)
    assert ports.contains(port)
    assert not ports.contains(port + 1)


@pytest.mark.parametrize(
    ("a", "b", "overlap"),
    [
        (PortRange(20, 25), PortRange(25, 30), True),
        (PortRange(20, 25), PortRange(26, 30), False),
        (PortRange(0, 65535), PortRange(443, 443), True),
        (PortRange(443, 443), PortRange(80, 80), False),
    ],
)
def test_port_ranges_overlap_when_they_share_a_port(a: PortRange, b: PortRange, overlap: bool) -> None:
    # Given two ranges
    # When they are compared either way round
    # Then they overlap exactly when a port is in both
    assert a.overlaps(b) is overlap
    assert b.overlaps(a) is overlap


def test_accounts_fall_back_to_the_defaults(policies: Path) -> None:
    # Given one account that overrides the defaults and one that does not
    write_policies(policies, {})
    policy: AccountsPolicy = load_policies(policies).accounts
    # When its settings are looked up
    plain, custom = policy.member("222222222222"), policy.member("333333333333")
    assert plain is not None
    assert custom is not None
    # Then the account's own settings win and the defaults fill the gaps
    assert policy.regions_of(plain) == ("eu-west-1",)
    assert policy.regions_of(custom) == ("eu-central-1", "us-east-1")
    assert policy.role_arn(plain, "security_groups") == "arn:aws:iam::222222222222:role/opsbots-member-security-groups"
    assert policy.role_arn(plain, "dns") == "arn:aws:iam::222222222222:role/opsbots-dns-reader"
    assert policy.role_arn(custom, "snapshots") == "arn:aws:iam::333333333333:role/data-opsbots"
    assert policy.role_arn(custom, "dns") == "arn:aws:iam::333333333333:role/opsbots-dns-reader"
    assert policy.member("444444444444") is None


YAML_SOUP = st.text(alphabet=" \n\t-:[]{},#&*!|>'\"?%@`.0123456789abcdefghijklmnopqrstuvwxyz", max_size=200)
YAML_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4),
    max_leaves=20,
)
YAML_MAPPINGS = st.dictionaries(
    st.sampled_from(["mode", "notify", "rules", "exemption_tag", "email", "ports"]) | st.text(max_size=8),
    YAML_VALUES,
).map(yaml.safe_dump)
JUNK = settings(suppress_health_check=[HealthCheck.function_scoped_fixture], deadline=None)


@JUNK
@given(text=st.text() | YAML_SOUP | YAML_MAPPINGS)
def test_junk_text_in_a_policy_file_only_ever_raises_policy_error(tmp_path: Path, text: str) -> None:
    # Given any text at all in a policy file
    write_policies(tmp_path, {"security_groups.yml": text})
    # When it is loaded
    # Then it loads or is rejected with PolicyError, never another exception
    with contextlib.suppress(PolicyError):
        load_policies(tmp_path)


@JUNK
@given(data=st.binary())
def test_junk_bytes_in_a_policy_file_only_ever_raise_policy_error(tmp_path: Path, data: bytes) -> None:
    # Given any bytes at all in a policy file
    write_policies(tmp_path, {})
    (tmp_path / "accounts.yml").write_bytes(data)
    # When it is loaded
    # Then it is rejected with PolicyError, never another exception
    with contextlib.suppress(PolicyError):
        load_policies(tmp_path)


@pytest.mark.parametrize("name", sorted(POLICY_FILES))
def test_json_schema_describes_each_policy_file(name: str) -> None:
    # Given a registered policy file
    # When its schema is generated
    schema = json_schema(name)
    # Then it lists the top-level fields and forbids unknown ones
    assert set(schema["properties"]) == set(model_of(name).model_fields)
    assert schema["additionalProperties"] is False


def test_thumbnail_limits_read_decimal_and_binary_units(policies: Path) -> None:
    # Given the valid documents, whose limit is written 20MiB
    write_policies(policies, thumbs("max_bytes: 20MiB", "max_bytes: 50MB"))
    # When they are loaded
    loaded = load_policies("policies").of(ThumbnailsPolicy)
    # Then 50MB is 50 million bytes, and defaults fill what the file leaves out
    assert loaded.limits.max_bytes == 50_000_000
    assert loaded.buckets[1].destination == "scans-thumbnails"
    assert loaded.buckets[0].destination == "photos-upload"
    assert (loaded.buckets[0].format, loaded.buckets[0].quality) == ("webp", 82)


def test_an_empty_thumbnails_policy_makes_no_thumbnails(policies: Path) -> None:
    write_policies(policies, {"thumbnails.yml": "buckets: []\n"})

    loaded = load_policies("policies").of(ThumbnailsPolicy)

    assert loaded.rule_for("photos-upload", "uploads/a.jpg") is None
    assert loaded.limits.max_pixels == 100_000_000


def test_a_mistake_in_accounts_yml_stops_every_bot_and_is_reported_once_per_use(policies_dir: Path) -> None:
    # Given an accounts.yml with a mistake, and otherwise good files
    (policies_dir / "accounts.yml").write_text(ACCOUNTS_YML.replace("regions: [eu-west-1]", "regions: []"))
    reported: list[PolicyError] = []
    policies = Policies(policies_dir, on_problem=reported.append)
    # When two bots are about to act
    for bot in ("security_groups", "dns"):
        with pytest.raises(PolicyError, match=r"accounts\.yml"):
            policies.require(bot)
    # Then neither acts, and accounts.yml's mistake is reported once for each, not again as the bot's own
    assert [str(error).split(":")[0].rpartition("/")[2] for error in reported] == ["accounts.yml", "accounts.yml"]
