"""Chapter: the snapshot bot (`take_snapshots`, and `work_on`, the body of `snapshot_worker`).

Tagged EBS volumes in the home and the member account, one volume without the tag, and a snapshot
someone made by hand in each account. The first run is the real hourly handler, invoked the way
Lambda does with no queue configured, so it runs the account x region units itself. The handler
reads the wall clock, so the later runs (ten simulated days, a shorter retention, a duplicate SQS
message) call `chalicelib.snapshots` directly with a `now` of their own, through the same runtime.
Every count the bot reports is checked against moto's state: the snapshots each account holds in
eu-west-1 and in the disaster-recovery region eu-central-1, read before and after each run.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from chalicelib.aws import tags_of
from chalicelib.runtime import current
from chalicelib.settings import POLICIES_DIR, SHIPPED_POLICIES
from chalicelib.snapshots.decisions import (
    BOT,
    COPY_OF,
    MANAGED,
    POLICY,
    VOLUME,
    WINDOW,
    plan_units,
    window_start,
    window_tag,
)
from chalicelib.snapshots.handlers import schedule_snapshots, snapshot_deps, work_on
from chalicelib.snapshots.policy import SnapshotsPolicy
from demo import show
from demo.dns import bot_logs, wrapped
from demo.environment import HOME, MEMBER, REGION
from demo.stage import Account, Stage, sample_event

if TYPE_CHECKING:
    from mypy_boto3_ec2 import EC2Client
    from mypy_boto3_ec2.type_defs import TagSpecificationTypeDef, TagTypeDef

    from chalicelib.snapshots.policy import Retention, SnapshotPolicy

DR_REGION = "eu-central-1"  # policies/snapshots.yml: copy_to
POLICY_NAME = "daily"  # policies/snapshots.yml: the policy this chapter follows
SELECT = ("Backup", "daily")  # its select: {tags: {Backup: daily}}
SHIPPED_RETENTION = "retention: {count: 7, max_age: 30d}"
DAYS = 10
RUN_HOURS = (1, 2)  # UTC: the second run of each day copies what the first one took
SHORT_COUNT = 2
TAGGED = {HOME: ("web-data", "db-data"), MEMBER: ("app-data", "queue-data", "logs-data")}
UNTAGGED = "scratch"  # in the member account, without the Backup tag
BY_HAND = {HOME: ("web-data", "before the kernel upgrade"), MEMBER: ("app-data", "before the schema migration")}
HOURLY = timedelta(hours=1)
COUNTED = ("taken", "present", "pruned", "copied")


@dataclass(frozen=True)
class Disk:
    id: str
    name: str
    account: str
    tagged: bool


@dataclass(frozen=True)
class Held:
    """One snapshot as moto holds it."""

    id: str
    account: str
    region: str
    volume: str
    tags: Mapping[str, str]
    volume_id: str = ""  # as DescribeSnapshots states it, whatever the tags say

    @property
    def ours(self) -> bool:
        return self.tags.get(MANAGED) == "true" and self.tags.get(POLICY) == POLICY_NAME

    @property
    def copy_of(self) -> str | None:
        return self.tags.get(COPY_OF)

    @property
    def source(self) -> bool:
        """One of the bot's own snapshots in the volume's region (not a DR copy)."""
        return self.ours and self.region == REGION and not self.copy_of

    @property
    def window(self) -> str:
        return self.tags.get(WINDOW, "")


State = Mapping[str, Held]  # every snapshot of both accounts in both regions, by id


@dataclass(frozen=True)
class Tally:
    """What one run did in one account, read from moto's state before and after it."""

    taken: int = 0
    present: int = 0
    pruned: int = 0
    copied: int = 0

    def __add__(self, other: Tally) -> Tally:
        return Tally(*(getattr(self, key) + getattr(other, key) for key in COUNTED))

    def matches(self, answer: Mapping[str, Any]) -> bool:
        """The bot's own counts are these, and it reported no failure."""
        return all(answer.get(key) == getattr(self, key) for key in COUNTED) and answer.get("failed") == []

    def cells(self) -> str:
        """Right-aligned under "taken present pruned copied"."""
        return " ".join(f"{getattr(self, key):>{len(key)}}" for key in COUNTED)


@dataclass(frozen=True)
class Run:
    """One scheduled run at `now`: the bot's answer and moto's state around it."""

    now: datetime
    answer: Mapping[str, Any]
    before: State
    after: State
    tallies: Mapping[str, Tally]  # by account

    @property
    def total(self) -> Tally:
        return sum(self.tallies.values(), Tally())

    @property
    def label(self) -> str:
        return f"{self.now:%Y-%m-%d %H:%M}"


def duration(delta: timedelta) -> str:
    """As policies write it: 30d, 24h, 90m."""
    if delta.days > 1 and not delta % timedelta(days=1):
        return f"{delta.days}d"
    return f"{delta / HOURLY:g}h" if not delta % HOURLY else f"{delta / timedelta(minutes=1):g}m"


def retention_text(retention: Retention) -> str:
    parts = [
        f"beyond the newest {retention.count}" if retention.count else "",
        f"older than {duration(retention.max_age)}" if retention.max_age else "",
    ]
    return " AND ".join(part for part in parts if part)


def copy_retention(policy: SnapshotPolicy) -> int:
    retention = (policy.copy_to.retention if policy.copy_to else None) or policy.retention
    return retention.count or 0


def policy_text(policy: SnapshotPolicy) -> str:
    select = ", ".join(f"{key}={value}" for key, value in policy.select.tags.items())
    copy = f"; copies to {policy.copy_to.region} keeping {copy_retention(policy)}" if policy.copy_to else ""
    regions = ", ".join(policy.regions or ("each account's",))
    return (
        f"policy {policy.name}: every {duration(policy.every)}, volumes tagged {select}, "
        f"regions {regions}; prunes {retention_text(policy.retention)}"
        f"{copy}; copy_tags {str(policy.copy_tags).lower()}"
    )


def copy_of_policies(directory: Path, old: str, new: str) -> Path:
    """The shipped policies, with `old` replaced by `new` in snapshots.yml; refuses an edit that misses."""
    directory.mkdir(parents=True, exist_ok=True)
    for path in SHIPPED_POLICIES.glob("*.yml"):
        (directory / path.name).write_text(path.read_text())
    snapshots = directory / "snapshots.yml"
    text = snapshots.read_text()
    if old not in text:
        raise ValueError(f"policies/snapshots.yml no longer contains {old!r}: the demo's edit does not apply")
    snapshots.write_text(text.replace(old, new))
    return directory


def use_policies(directory: Path | None) -> None:
    """Point the runtime at `directory` (None: the shipped policies), as a new container would read them."""
    if directory is None:
        os.environ.pop(POLICIES_DIR, None)
    else:
        os.environ[POLICIES_DIR] = str(directory)
    current.cache_clear()


def daily_policy() -> SnapshotPolicy:
    return next(p for p in current().policies.of(SnapshotsPolicy).policies if p.name == POLICY_NAME)


def answer_text(answer: Mapping[str, Any]) -> str:
    return ", ".join(f"{key} {value}" for key, value in answer.items())


@dataclass
class SnapshotsChapter:
    stage: Stage
    workdir: Path
    disks: list[Disk] = field(default_factory=list)
    by_hand: dict[str, str] = field(default_factory=dict)  # account -> snapshot id
    spoofed: set[str] = field(default_factory=set)  # snapshots made by hand that someone tagged as opsbots'
    first_day: datetime = field(default_factory=lambda: datetime.now(UTC))
    _clients: dict[tuple[str, str], EC2Client] = field(default_factory=dict)

    def play(self) -> bool:
        scenes: Sequence[tuple[str, Callable[[], bool]]] = (
            ("tagged volumes in both accounts, one untagged, and a snapshot made by hand", self.estate),
            ("the hourly schedule fires: the take_snapshots handler, without a queue", self.first_run),
            (f"{DAYS} days of runs at 01:00 and 02:00 UTC", self.days),
            (f"retention cut to the newest {SHORT_COUNT}", self.short_retention),
            ("someone copies opsbots' tags onto a golden snapshot made by hand", self.spoofed_golden),
            ("the worker receives the same SQS message twice", self.duplicate_message),
            ("the schedule is down from 00:00 to 10:00 UTC: the 10:00 run still takes the day's", self.late_run),
        )
        try:
            return show.play_scenes("snap", scenes)
        finally:
            use_policies(None)

    # ----- moto's state -------------------------------------------------------------------------

    def account(self, account_id: str) -> Account:
        return self.stage.home if account_id == HOME else self.stage.member

    def ec2(self, account_id: str, region: str = REGION) -> EC2Client:
        key = (account_id, region)
        if key not in self._clients:
            self._clients[key] = self.account(account_id).session.client("ec2", region_name=region)
        return self._clients[key]

    def state(self) -> dict[str, Held]:
        held: dict[str, Held] = {}
        for account in TAGGED:
            for region in (REGION, DR_REGION):
                pages = self.ec2(account, region).get_paginator("describe_snapshots").paginate(OwnerIds=["self"])
                for raw in (snapshot for page in pages for snapshot in page["Snapshots"]):
                    tags = tags_of(raw.get("Tags"))
                    volume = tags.get(VOLUME) or raw.get("VolumeId", "")
                    held[raw["SnapshotId"]] = Held(
                        raw["SnapshotId"], account, region, volume, tags, raw.get("VolumeId", "")
                    )
        return held

    @property
    def tagged(self) -> list[Disk]:
        return [disk for disk in self.disks if disk.tagged]

    def name(self, volume_id: str) -> str:
        return next((disk.name for disk in self.disks if disk.id == volume_id), volume_id)

    def tally(self, account: str, before: State, after: State, window: str) -> Tally:
        new = [held for key, held in after.items() if key not in before and held.account == account]
        done = {held.volume for held in before.values() if held.source and held.window == window}
        return Tally(
            taken=sum(held.source for held in new),
            present=sum(disk.id in done for disk in self.tagged if disk.account == account),
            pruned=sum(key not in after and held.account == account for key, held in before.items()),
            copied=sum(bool(held.ours and held.copy_of) for held in new),
        )

    def run(self, now: datetime, work: Callable[[], Mapping[str, Any]], before: State | None = None) -> Run:
        before = self.state() if before is None else before
        with bot_logs() as logs:
            answer = work()
        for entry in logs:  # the bots log JSON; the timeline shows what they warned of, in a line
            show.note(
                wrapped(f'the bot logged {entry.get("level")} "{entry.get("message")}": {entry.get("snapshots")}')
            )
        after = self.state()
        window = window_tag(window_start(now, daily_policy().every))
        return Run(now, answer, before, after, {a: self.tally(a, before, after, window) for a in TAGGED})

    def scheduled(self, now: datetime, before: State | None = None) -> Run:
        """The scheduled run as the handler makes it, but at `now`."""
        runtime = current()
        return self.run(
            now,
            lambda: schedule_snapshots(
                policies=runtime.policies.of(SnapshotsPolicy),
                accounts=runtime.policies.accounts,
                deps=runtime.built(snapshot_deps),
                mailer=runtime.mailer(BOT, None),
                now=now,
            ),
            before,
        )

    def windows_of(self, state: State, region: str = REGION) -> dict[str, list[str]]:
        """The windows of the bot's snapshots of each tagged volume in `region` (of its copies in the DR region)."""
        found: dict[str, list[str]] = {disk.id: [] for disk in self.tagged}
        for held in state.values():
            if held.ours and held.region == region and held.volume in found:
                found[held.volume].append(held.window)
        return {volume: sorted(windows) for volume, windows in found.items()}

    def survivors(self, state: State) -> bool:
        """The snapshots made by hand are all there, without any opsbots tag but those someone spoofed."""
        return all(
            key in state and (key in self.spoofed or not any(tag.startswith("opsbots:") for tag in state[key].tags))
            for key in self.by_hand.values()
        )

    def untouched(self, state: State) -> bool:
        """Nothing of the untagged volume's, in either region."""
        untagged = {disk.id for disk in self.disks if not disk.tagged}
        return not any(held.volume in untagged for held in state.values())

    def copied_newest(self, state: State) -> bool:
        """Each tagged volume's newest snapshot has a DR copy, which names it in opsbots:copy-of."""
        newest: dict[str, Held] = {}
        for held in sorted((h for h in state.values() if h.source), key=lambda h: h.window):
            newest[held.volume] = held
        copied = {held.copy_of for held in state.values() if held.ours and held.region == DR_REGION}
        return set(newest) == {disk.id for disk in self.tagged} and all(h.id in copied for h in newest.values())

    # ----- the report's facts -------------------------------------------------------------------

    def by_hand_facts(self, state: State) -> dict[str, object]:
        """Each account's snapshot made by hand: whether moto still holds it, and any opsbots tag it carries."""
        return {
            account: {
                "snapshot": key,
                "present": key in state,
                "opsbots_tags": sorted(tag for tag in state[key].tags if tag.startswith("opsbots:"))
                if key in state
                else [],
            }
            for account, key in self.by_hand.items()
        }

    def counts_of(self, state: State, region: str = REGION) -> dict[str, int]:
        """By volume name, how many of the bot's snapshots (in the DR region: copies) moto holds."""
        return {self.name(volume): len(windows) for volume, windows in sorted(self.windows_of(state, region).items())}

    def untagged_count(self, state: State) -> int:
        untagged = {disk.id for disk in self.disks if not disk.tagged}
        return sum(held.volume in untagged or held.volume_id in untagged for held in state.values())

    @staticmethod
    def run_facts(run: Run) -> dict[str, object]:
        """The bot's answer and what moto's state says each account's run did."""
        return {"answer": dict(run.answer), "tallies": {a: asdict(tally) for a, tally in run.tallies.items()}}

    def table(self, runs: Sequence[Run], first: str = "day") -> str:
        rows = [["", "", *(str(self.account(account)) for account in TAGGED)]]
        rows.append([first, "UTC", *[" ".join(COUNTED)] * len(TAGGED)])
        for run in runs:
            day = (run.now - self.first_day).days + 1
            rows.append([str(day), run.label, *(run.tallies[account].cells() for account in TAGGED)])
        return show.columns(rows)

    # ----- scenes -------------------------------------------------------------------------------

    def estate(self) -> bool:
        for account, names in TAGGED.items():
            self.disks.extend(self.create_volume(account, name, tagged=True) for name in names)
        self.disks.append(self.create_volume(MEMBER, UNTAGGED, tagged=False))
        key, value = SELECT
        for account in TAGGED:
            listed = ", ".join(f"{d.name} {d.id}" for d in self.tagged if d.account == account)
            show.step(wrapped(f"{self.account(account)}: {key}={value} on {listed}"))
        show.step(f"{self.stage.member}: {UNTAGGED} {self.disks[-1].id}, without a {key} tag")
        for account, (name, description) in BY_HAND.items():
            volume = next(d for d in self.tagged if d.account == account and d.name == name)
            created = self.ec2(account).create_snapshot(VolumeId=volume.id, Description=description)
            self.by_hand[account] = created["SnapshotId"]
            show.step(f'someone snapshots {name} by hand in {account}: {created["SnapshotId"]} "{description}"')
        show.note(wrapped(f"policies/snapshots.yml, {policy_text(daily_policy())}"))
        show.note(
            wrapped(
                "opsbots finds its own snapshots by their tags (opsbots:managed, opsbots:policy), never by owner "
                "alone: moto's DescribeSnapshots even ignores OwnerIds"
            )
        )
        state = self.state()
        checks = show.Checks()
        checks.that(
            self.survivors(state),
            "the snapshots made by hand carry no opsbots tag",
            key="snap.estate.by_hand_untagged",
            facts={
                "volumes": {
                    account: [disk.name for disk in self.disks if disk.account == account and disk.tagged]
                    for account in TAGGED
                },
                "untagged": [disk.name for disk in self.disks if not disk.tagged],
                "by_hand": self.by_hand_facts(state),
            },
        )
        return checks.ok

    def create_volume(self, account: str, name: str, *, tagged: bool) -> Disk:
        tags: list[TagTypeDef] = [{"Key": "Name", "Value": name}]
        tags += [{"Key": SELECT[0], "Value": SELECT[1]}] if tagged else []
        spec: list[TagSpecificationTypeDef] = [{"ResourceType": "volume", "Tags": tags}]
        created = self.ec2(account).create_volume(AvailabilityZone=f"{REGION}a", Size=8, TagSpecifications=spec)
        return Disk(created["VolumeId"], name, account, tagged)

    def first_run(self) -> bool:
        use_policies(None)
        show.note(
            wrapped(
                "the shipped daily policy, for the window of the scheduled event's time (today's: every run "
                "of a window works on it until each volume has its snapshot). OPSBOTS_SNAPSHOT_QUEUE is unset, "
                "so the handler runs the units itself"
            )
        )
        event = sample_event("scheduled-event", {"sweep_security_groups": "take_snapshots"})
        event_time = datetime.fromisoformat(event["time"])
        hours = {window_tag(window_start(event_time, daily_policy().every))}
        show.step(f"EventBridge schedule invokes take_snapshots (event {event['id'][:8]}…, time {event['time']})")
        run = self.run(event_time, lambda: self.stage.invoke("take_snapshots", event))
        show.step(f"take_snapshots answered {answer_text(run.answer)}")
        taken = sorted((h for k, h in run.after.items() if k not in run.before), key=lambda h: (h.account, h.volume))
        for held in taken:
            tags = ", ".join(f"{k}={v}" for k, v in sorted(held.tags.items()))
            show.note(wrapped(f"{held.account} {self.name(held.volume)}: {held.id} {tags}", "    "))
        key = "snap.first_run"
        checks = show.Checks()
        checks.that(
            run.answer.get("units") == 2 and run.answer.get("failed") == [],
            "both accounts ran, no failure",
            key=f"{key}.both_accounts_ran",
            facts=self.run_facts(run),
        )
        checks.that(
            sorted(h.volume for h in taken) == sorted(d.id for d in self.tagged)
            and all(h.source and h.window in hours and h.volume for h in taken),
            f"each of the {len(self.tagged)} tagged volumes has one snapshot, tagged {MANAGED}=true, "
            f"{POLICY}={POLICY_NAME}, {WINDOW}=<today 00:00>, {VOLUME}=<its volume>, and recorded in the ledger",
            key=f"{key}.one_per_volume",
            facts={
                "window": sorted(hours),
                "taken": [
                    {
                        "account": h.account,
                        "volume": self.name(h.volume),
                        "volume_id": h.volume_id,
                        "region": h.region,
                        "tags": h.tags,
                    }
                    for h in taken
                ],
            },
        )
        checks.that(
            all(h.tags.get("Name") == self.name(h.volume) for h in taken),
            "each carries its volume's own tags too (copy_tags: true)",
            key=f"{key}.volume_tags_copied",
            facts={"name_tags": {self.name(h.volume): h.tags.get("Name") for h in taken}},
        )
        checks.that(
            self.untouched(run.after),
            f"no snapshot of {UNTAGGED}, the volume without the tag",
            key=f"{key}.untagged_untouched",
            facts={"snapshots_of_untagged": self.untagged_count(run.after)},
        )
        checks.that(
            self.survivors(run.after),
            "the snapshots made by hand in both accounts are untouched",
            key=f"{key}.by_hand_untouched",
            facts={"by_hand": self.by_hand_facts(run.after)},
        )
        checks.that(
            run.answer.get("copied") == 0,
            f"nothing copied to {DR_REGION} yet: the next run copies what this one took, once completed",
            key=f"{key}.nothing_copied_yet",
            facts={**self.run_facts(run), "copies_in_dr": self.counts_of(run.after, DR_REGION)},
        )
        return checks.ok

    def days(self) -> bool:
        use_policies(None)
        policy = daily_policy()
        keep, dr = policy.retention.count or 0, copy_retention(policy)
        age = f"older than {duration(policy.retention.max_age)}" if policy.retention.max_age else "any age"
        self.first_day = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0) + timedelta(days=1)
        show.step(
            wrapped(
                f"the shipped policy again: schedule_snapshots(now=...) at 01:00 and 02:00 UTC for {DAYS} days from "
                f"tomorrow, through the same runtime as the handler (which has no clock parameter)"
            )
        )
        runs: list[Run] = []
        state: State = self.state()
        for day in range(DAYS):
            for hour in RUN_HOURS:
                runs.append(self.scheduled(self.first_day + timedelta(days=day, hours=hour), state))
                state = runs[-1].after
        show.step(f"{len(runs)} runs; what each did per account, read from moto's state\n{self.table(runs)}")
        show.note(f"pruned: the {DR_REGION} copies beyond each volume's newest {dr}")
        last = runs[-1].after
        claims: Sequence[tuple[str, str, Callable[[int, Run], bool], Mapping[str, object]]] = (
            (
                "counts_match",
                f"on all {len(runs)} runs the bot's counts match moto's state",
                lambda _, r: r.total.matches(r.answer),
                {
                    "runs": [
                        {"day": i // 2 + 1, "utc": f"{run.now:%H:%M}", **self.run_facts(run)}
                        for i, run in enumerate(runs)
                    ]
                },
            ),
            (
                "second_run_takes_nothing",
                "every 02:00 run took nothing: a second run in the same window finds every volume done",
                lambda i, r: i % 2 == 0 or (r.total.taken, r.total.present) == (0, len(self.tagged)),
                {"taken_at_02": [run.total.taken for run in runs[1::2]]},
            ),
            (
                "never_too_few",
                f"no volume ever had fewer than min({keep}, windows so far) snapshots in {REGION}",
                # windows so far: the handler's hour, then one per day up to run i's
                lambda i, r: min(map(len, self.windows_of(r.after).values())) >= min(keep, 2 + i // 2),
                {"keep": keep, "snapshots_at_the_end": self.counts_of(last)},
            ),
            (
                "nothing_pruned_in_region",
                f"nothing pruned in {REGION}: retention lets go only beyond the newest {keep} AND {age}",
                lambda _, r: all(k in r.after for k, h in r.before.items() if h.region == REGION),
                {"snapshots_at_the_end": self.counts_of(last)},
            ),
            (
                "newest_copied",
                f"after every 02:00 run, each volume's newest snapshot has a copy in {DR_REGION} tagged {COPY_OF}",
                lambda i, r: i % 2 == 0 or self.copied_newest(r.after),
                {"copies_at_the_end": self.counts_of(last, DR_REGION)},
            ),
            (
                "dr_keeps_copies",
                f"{DR_REGION} keeps {dr} copies per volume ({dr + 1} from a 02:00 copy until the next run prunes)",
                lambda i, r: (
                    i < 2 * dr or all(dr <= len(w) <= dr + 1 for w in self.windows_of(r.after, DR_REGION).values())
                ),
                {"keep": dr, "copies_at_the_end": self.counts_of(last, DR_REGION)},
            ),
            (
                "by_hand_survive",
                f"the snapshots made by hand in both accounts survived all {len(runs)} runs",
                lambda _, r: self.survivors(r.after),
                {"by_hand": self.by_hand_facts(last)},
            ),
            (
                "untagged_never",
                f"{UNTAGGED} (no Backup tag) was never snapshotted",
                lambda _, r: self.untouched(r.after),
                {"snapshots_of_untagged": self.untagged_count(last)},
            ),
        )
        checks = show.Checks()
        for name, claim, holds, facts in claims:
            failed = [run.label for i, run in enumerate(runs) if not holds(i, run)]
            checks.that(
                not failed,
                claim,
                "not at " + ", ".join(failed),
                key=f"snap.days.{name}",
                facts={"runs_failing": failed, **facts},
            )
        return checks.ok

    def short_retention(self) -> bool:
        short = f"retention: {{count: {SHORT_COUNT}}}"
        use_policies(copy_of_policies(self.workdir / "short", SHIPPED_RETENTION, short))
        now = self.first_day + timedelta(days=DAYS - 1, hours=RUN_HOURS[-1] + 1)
        show.step(
            wrapped(
                f"a copy of the policies with {short} (OPSBOTS_POLICIES, runtime re-read); "
                f"schedule_snapshots(now={now:%Y-%m-%d %H:%M} UTC), still day {DAYS}'s window"
            )
        )
        run = self.scheduled(now)
        show.step(f"take_snapshots answered {answer_text(run.answer)}\n{self.table([run])}")
        kept = self.windows_of(run.after)
        newest = sorted({w for windows in self.windows_of(run.before).values() for w in windows})[-SHORT_COUNT:]
        for volume, windows in sorted(kept.items(), key=lambda item: self.name(item[0])):
            show.note(f"  {self.name(volume):<10} keeps {', '.join(windows)}")
        dr = copy_retention(daily_policy())
        key = "snap.short_retention"
        checks = show.Checks()
        checks.that(
            run.total.matches(run.answer),
            "the bot's counts match moto's state",
            key=f"{key}.counts_match",
            facts=self.run_facts(run),
        )
        checks.that(
            run.total.taken == 0,
            "nothing taken: every volume is done for this window",
            key=f"{key}.nothing_taken",
            facts={"taken": run.total.taken},
        )
        checks.that(
            all(windows == newest for windows in kept.values()),
            f"each volume keeps exactly its newest {SHORT_COUNT} snapshots in {REGION}, pruned down from {DAYS + 1}",
            key=f"{key}.newest_kept",
            facts={
                "snapshots_before": self.counts_of(run.before),
                "snapshots_after": self.counts_of(run.after),
                "newest_windows": newest,
                "kept_windows": {self.name(volume): windows for volume, windows in sorted(kept.items())},
            },
        )
        checks.that(
            all(len(windows) == dr for windows in self.windows_of(run.after, DR_REGION).values()),
            f"{DR_REGION} keeps {dr} copies per volume (copy_to has a retention of its own)",
            key=f"{key}.dr_keeps_copies",
            facts={"keep": dr, "copies": self.counts_of(run.after, DR_REGION)},
        )
        checks.that(
            self.survivors(run.after),
            "the snapshots made by hand survive: retention considers only opsbots'",
            key=f"{key}.by_hand_survive",
            facts={"by_hand": self.by_hand_facts(run.after)},
        )
        return checks.ok

    def spoofed_golden(self) -> bool:
        golden = self.by_hand[HOME]
        volume = next(disk.id for disk in self.disks if disk.account == HOME and disk.name == BY_HAND[HOME][0])
        old_window = self.first_day - timedelta(days=60)
        spoofed = {MANAGED: "true", POLICY: POLICY_NAME, WINDOW: window_tag(old_window), VOLUME: volume}
        self.ec2(HOME).create_tags(Resources=[golden], Tags=[{"Key": k, "Value": v} for k, v in spoofed.items()])
        self.spoofed.add(golden)
        show.step(
            wrapped(
                f"someone allowed ec2:CreateTags (no delete right needed) tags {golden}, the golden snapshot "
                f"made by hand, {', '.join(f'{k}={v}' for k, v in spoofed.items())}: by its tags, a "
                f"60-day-old {POLICY_NAME} snapshot, due for pruning"
            )
        )
        now = self.first_day + timedelta(days=DAYS - 1, hours=RUN_HOURS[-1] + 2)
        run = self.scheduled(now)
        show.step(f"schedule_snapshots(now={now:%Y-%m-%d %H:%M} UTC) answered {answer_text(run.answer)}")
        show.note(
            wrapped(
                "the bot proves ownership by its ledger (the DynamoDB table opsbots-snapshot-ledger, written only "
                "by its own roles), not by tags: a tagged snapshot the ledger does not hold is foreign"
            )
        )
        key = "snap.spoofed_golden"
        checks = show.Checks()
        checks.that(
            golden in run.after,
            f"{golden}, the golden snapshot, is still there",
            key=f"{key}.golden_kept",
            facts={"golden": golden, "by_hand": self.by_hand_facts(run.after)},
        )
        checks.that(
            run.answer.get("foreign") == 1,
            "the run reports one foreign snapshot",
            f"{run.answer}",
            key=f"{key}.foreign_reported",
            facts={"answer": dict(run.answer)},
        )
        checks.that(
            run.total.matches(run.answer),
            "the bot's counts match moto's state: it pruned none of it",
            key=f"{key}.counts_match",
            facts=self.run_facts(run),
        )
        return checks.ok

    def late_run(self) -> bool:
        now = self.first_day + timedelta(days=DAYS + 1, hours=10)
        show.step(
            wrapped(
                f"day {DAYS + 2}: no run from 00:00 to 09:00 UTC (an outage, a role fixed late); "
                f"schedule_snapshots(now={now:%Y-%m-%d %H:%M} UTC), the first run of the day"
            )
        )
        run = self.scheduled(now)
        show.step(f"take_snapshots answered {answer_text(run.answer)}\n{self.table([run])}")
        window = window_tag(window_start(now, daily_policy().every))
        key = "snap.late_run"
        checks = show.Checks()
        checks.that(
            run.total.matches(run.answer),
            "the bot's counts match moto's state",
            key=f"{key}.counts_match",
            facts=self.run_facts(run),
        )
        windows_after = self.windows_of(run.after)
        checks.that(
            run.total.taken == len(self.tagged) and all(window in windows for windows in windows_after.values()),
            f"each of the {len(self.tagged)} tagged volumes got the day's snapshot ({WINDOW}={window}) at 10:00",
            key=f"{key}.day_snapshot_taken",
            facts={
                "window": window,
                "taken": run.total.taken,
                "has_the_window": {self.name(volume): window in windows for volume, windows in windows_after.items()},
            },
        )
        return checks.ok

    def duplicate_message(self) -> bool:
        use_policies(None)
        runtime = current()
        accounts, policies = runtime.policies.accounts, runtime.policies.of(SnapshotsPolicy)
        now = self.first_day + timedelta(days=DAYS, hours=RUN_HOURS[0])
        units = plan_units(policies, accounts, runtime.clients.units(accounts, BOT), now)
        unit = next(unit for unit in units if unit.account_id == MEMBER)
        message = unit.to_message()
        show.step(
            wrapped(
                f"day {DAYS + 1}, {now:%H:%M} UTC: of the {len(units)} unit message(s) the scheduler queues, "
                f"the one for {MEMBER}/{REGION} is delivered twice to the worker: work_on([message, message])"
            )
        )
        show.note(wrapped(f"message body: {message}", "    "))
        run = self.run(
            now,
            lambda: work_on(
                [message, message],
                policies=policies,
                accounts=accounts,
                deps=runtime.built(snapshot_deps),
                mailer=runtime.mailer(BOT, None),
                clock=lambda: now,  # the worker's clock, at the simulated hour
            ),
        )
        members = [disk.id for disk in self.tagged if disk.account == MEMBER]
        show.step(f"work_on answered {answer_text(run.answer)}")
        window = window_tag(window_start(now, daily_policy().every))
        taken = sorted(h.volume for k, h in run.after.items() if k not in run.before and h.source)
        show.note(
            wrapped(
                f"copied {run.answer.get('copied')}: moto completes a snapshot at once, so the second delivery "
                f"found the first one's snapshots completed and copied them to {DR_REGION}"
            )
        )
        key = "snap.duplicate_message"
        windows_after = self.windows_of(run.after)
        checks = show.Checks()
        checks.that(
            (run.answer.get("units"), run.answer.get("taken"), run.answer.get("present"))
            == (2, len(members), len(members)),
            f"the first delivery took {len(members)} snapshots, the second found those {len(members)} done "
            "and took nothing",
            key=f"{key}.taken_once",
            facts={"member_volumes": len(members), **self.run_facts(run)},
        )
        checks.that(
            taken == sorted(members) and all(windows_after[v].count(window) == 1 for v in members),
            f"moto holds exactly one snapshot per member volume for the window {window}",
            key=f"{key}.one_per_volume",
            facts={
                "window": window,
                "taken": sorted(self.name(volume) for volume in taken),
                "in_the_window": {self.name(v): windows_after[v].count(window) for v in members},
            },
        )
        checks.that(
            self.survivors(run.after),
            "the snapshots made by hand survive",
            key=f"{key}.by_hand_survive",
            facts={"by_hand": self.by_hand_facts(run.after)},
        )
        return checks.ok


def run(stage: Stage) -> bool:
    with tempfile.TemporaryDirectory(prefix="opsbots-demo-snapshots-") as workdir:
        return SnapshotsChapter(stage, Path(workdir)).play()
