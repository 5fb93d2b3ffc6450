"""`opsbots simulate` runs the handlers' own decisions: what a dry run says is what the handler then does."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path
from typing import Any

from chalicelib.cli import simulate_event
from chalicelib.policy import load_policies
from tests.support.aws import ROOT
from tests.support.dns import Network, deliver, state_event

RECORD_LINE = re.compile(r"^  (\S+) (A|AAAA|CNAME) (\S+) \(TTL \d+\)$", re.MULTILINE)


def test_the_dns_dry_run_shows_the_records_the_handler_writes(network: Network, lambdas: Any, tmp_path: Path) -> None:
    # Given a running instance with a name and an alias, as EC2 describes it
    instance = network.launch("App 1", **{"opsbots:dns-aliases": "api"})
    described = tmp_path / "described.json"
    described.write_text(json.dumps(network.home_ec2.describe_instances(InstanceIds=[instance]), default=str))
    event = tmp_path / "event.json"
    event.write_text(json.dumps(state_event(instance, "running")))

    # When its running event is dry-run, then handled
    out = io.StringIO()
    assert simulate_event(event, load_policies(ROOT / "policies"), out, described) == 0
    deliver(lambdas, instance, "running")

    # Then the forward records the dry run showed are the ones Route53 now holds (PTRs go to reverse
    # zones only Route53 can list, which the dry run says)
    shown = set(RECORD_LINE.findall(out.getvalue()))
    written = {
        (name, kind, value)
        for zone in ("example.com", "internal.example.com")
        for (name, kind), values in network.records(zone).items()
        for value in values
    }
    assert shown == written
    assert len(shown) == 4
    assert "PTR" in out.getvalue()
