"""What `opsbots simulate` shows for the thumbnail bot: the handler's plan and its first decision.

The plan and the decision of what to write run as in the handler; S3's answers (which thumbnails exist,
and whose) are unknown to a dry run, so every thumbnail is taken to be missing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from chalicelib.events import SkippedEvent
from chalicelib.thumbnails.decisions import FUNCTION_MEMORY_MB, MIB, Plan, decode_budget, plan_thumbnails, to_write
from chalicelib.thumbnails.events import parse_object_created
from chalicelib.thumbnails.policy import ThumbnailsPolicy

if TYPE_CHECKING:
    from collections.abc import Mapping

    from chalicelib.cli import DryRun


def on_image_uploaded(raw: Mapping[str, Any], run: DryRun) -> None:
    policy = run.policies.of(ThumbnailsPolicy)
    for upload in parse_object_created(raw):
        try:
            plan = plan_thumbnails(upload, policy)
        except SkippedEvent as skipped:
            run.out.write(f"skipped: {skipped}\n")
            continue
        _show(plan, policy, run)


def _show(plan: Plan, policy: ThumbnailsPolicy, run: DryRun) -> None:
    upload, out = plan.upload, run.out
    out.write(f"upload s3://{upload.bucket}/{upload.key} (ETag {upload.etag}, {upload.size} bytes)\n")
    out.write("AWS calls it would make:\n")
    for output in plan.outputs:
        out.write(
            f"  s3.head_object(Bucket='{plan.bucket}', Key='{output.key}')  # whose it is, made from which ETag\n"
        )
    decision = to_write(plan, dict.fromkeys(output.key for output in plan.outputs))  # S3's answer: none there yet
    budget = decode_budget(FUNCTION_MEMORY_MB, upload.size or policy.limits.max_bytes) // MIB
    out.write(
        f"  s3.get_object(Bucket='{upload.bucket}', Key='{upload.key}', IfMatch='{upload.etag}')"
        f"  # at most {policy.limits.max_bytes:,} bytes; decoded within {budget:,} MiB\n"
    )
    for write in decision.writes:
        size = write.output.size
        box = f"{size.width or '*'}x{size.height or '*'} {size.fit}"
        condition = f"IfMatch='{write.replaces}'" if write.replaces else "IfNoneMatch='*'"
        out.write(f"  s3.put_object(Key='{write.output.key}', {condition})  # {box}, {plan.output_format}\n")
    out.write(f"decision: {len(decision.writes)} thumbnail(s) to write, if each key is still free or ours\n")
