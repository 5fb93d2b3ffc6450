"""What `opsbots simulate` shows for the snapshot bot: the handler's units for the scheduled time, and their calls.

The units (which policies are due where, at the event's time) come from the handler's own `plan_units`;
what each unit finds (volumes, snapshots, the ledger) only AWS can say, so its calls are printed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from chalicelib.snapshots.decisions import BOT, POLICY, WINDOW, Unit, plan_units, policy_window, window_tag
from chalicelib.snapshots.executors import ledger_scope
from chalicelib.snapshots.policy import SnapshotsPolicy

if TYPE_CHECKING:
    from collections.abc import Mapping

    from chalicelib.cli import DryRun
    from chalicelib.snapshots.policy import Retention


def take_snapshots(raw: Mapping[str, Any], run: DryRun) -> None:
    policies = run.policies.of(SnapshotsPolicy)
    units = plan_units(policies, run.policies.accounts, run.units(BOT), run.at)
    run.out.write(f"  {len(units)} unit(s) with a policy due (nothing is taken or deleted here):\n")
    for unit in units:
        print_unit(unit, policies, run.out)


def print_unit(unit: Unit, policies: SnapshotsPolicy, out: Any) -> None:
    """A dry run of one unit: the calls it would make, without making any."""
    out.write(f"    {unit.account_id} ({unit.account_name}) {unit.region}: {', '.join(unit.policies)}\n")
    for policy in (p for p in policies.policies if p.name in unit.policies):
        window = window_tag(policy_window(policy, unit.now))
        selection = policy.select.model_dump(exclude_defaults=True)
        out.write(f"      ec2.describe_volumes({selection}) + describe_snapshots({POLICY}={policy.name})\n")
        scope = ledger_scope(unit.account_id, unit.region, policy.name)
        out.write(f"      dynamodb.query(ledger {scope})  # whose they are\n")
        out.write(f"      ec2.create_snapshot for each selected volume without its {WINDOW}={window} snapshot\n")
        out.write(f"      ec2.delete_snapshot for ledger snapshots beyond {_retention_text(policy.retention)}\n")
        if policy.copy_to:
            out.write(
                f"      ec2.copy_snapshot to {policy.copy_to.region} for each volume's newest uncopied snapshot\n"
            )


def _retention_text(retention: Retention) -> str:
    count = f"the newest {retention.count}" if retention.count else ""
    age = f"{retention.max_age.days} days old" if retention.max_age and retention.max_age.days else ""
    age = age or (f"{retention.max_age.total_seconds() / 3600:g} hours old" if retention.max_age else "")
    return " and ".join(filter(None, (count, age)))
