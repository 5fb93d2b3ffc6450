"""`python -m bench.package_size`: the zipped size of each Lambda function, ours against Custodian's policy Lambda.

Ours: what `make package` builds, without its cfn-lint step and into a temporary directory (so a
concurrent `make package` is left alone): `chalice package --stage prod --pkg-format cloudformation
--merge-template deploy/resources.json`, then `deploy/package_zips.py` (the runtime's libraries and what no
function runs left out, bytecode for what they import, the imaging libraries in the thumbnail bot's zip alone)
and `deploy/finish_template.py` (which zip each function deploys). Chalice reuses the dependency zip it cached in
.chalice/deployments; without one, it downloads the requirements' wheels (the only network use of
`make bench` beyond installing the peers' venv).

Custodian: the zip `c7n.mu.PolicyLambda(policy).get_archive()` builds for bench/custodian.py's policy
(in the peers' venv): Custodian deploys one such function, with its own zip, per policy.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from bench.common import RESULTS, ROOT, peer_has, peer_python, ratio, run_worker
from bench.machine import publish

TITLE = "Deployment size"  # its heading in bench/results/latest.md

STAGE = "prod"


def package(directory: Path) -> Path:
    """`make package`'s build steps into `directory`; returns the directory holding sam.json and the zips."""
    out = directory / "package"
    environment = {**os.environ, "AWS_DEFAULT_REGION": os.environ.get("AWS_DEFAULT_REGION", "us-east-1")}
    chalice = Path(sys.executable).parent / "chalice"
    template = ["--pkg-format", "cloudformation", "--merge-template", "deploy/resources.json"]
    for command in (
        [chalice, "package", "--stage", STAGE, *template, out],
        [sys.executable, "-m", "deploy.package_zips", out],
        [sys.executable, "-m", "deploy.finish_template", out / "sam.json"],
    ):
        done = subprocess.run(list(map(str, command)), cwd=ROOT, env=environment, capture_output=True, check=False)
        if done.returncode:
            raise RuntimeError(f"{command[1:3]} failed:\n{done.stderr.decode(errors='replace')[-2000:]}")
    return out


def functions(template: Mapping[str, Any]) -> list[tuple[str, str, int]]:
    """(logical id, CodeUri, memory MB) of each function in the SAM template."""
    found = []
    for name, resource in sorted(template.get("Resources", {}).items()):
        if resource.get("Type") in ("AWS::Serverless::Function", "AWS::Lambda::Function"):
            properties = resource.get("Properties", {})
            found.append((name, str(properties.get("CodeUri", "")), int(properties.get("MemorySize", 128))))
    return found


def zip_sizes(path: Path) -> dict[str, int]:
    with zipfile.ZipFile(path) as archive:
        members = archive.infolist()
    return {
        "zip_bytes": path.stat().st_size,
        "unzipped_bytes": sum(member.file_size for member in members),
        "files": len(members),
        "compiled_files": sum(member.filename.endswith(".pyc") for member in members),
    }


def largest_packages(path: Path, limit: int = 6) -> list[tuple[str, int]]:
    """Compressed bytes by top-level entry of the zip, largest first."""
    sizes: dict[str, int] = {}
    with zipfile.ZipFile(path) as archive:
        for member in archive.infolist():
            top = member.filename.split("/")[0]
            sizes[top] = sizes.get(top, 0) + member.compress_size
    return sorted(sizes.items(), key=lambda item: -item[1])[:limit]


def mb(size: int) -> str:
    return f"{size / 1e6:.2f} MB"


def table(
    ours: Sequence[tuple[str, str, int]], sizes: Mapping[str, Mapping[str, int]], peer: Mapping[str, Any] | None
) -> list[str]:
    lines = [
        "| function | its zip | zipped | unzipped | files (.pyc) | vs Custodian's policy Lambda zip |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for name, code, _memory in ours:
        size = sizes[code]
        against = ratio(size["zip_bytes"], peer["zip_bytes"], 1) if peer else "not run"
        lines.append(
            f"| ours: {name} | `{code}` | {mb(size['zip_bytes'])} | {mb(size['unzipped_bytes'])} "
            f"| {size['files']:,} ({size['compiled_files']:,}) | {against} |"
        )
    if peer:
        lines.append(
            f"| **Custodian: custodian-sg-remove-world-ssh** (one zip per policy) | | {mb(peer['zip_bytes'])} "
            f"| {mb(peer['unzipped_bytes'])} | {peer['files']:,} ({peer['compiled_files']:,}) | 1.0x |"
        )
    return lines


def run() -> str:
    started = time.perf_counter()
    peer, note = None, "not run: no c7n in bench/.venv-peers (`make bench` installs it)"
    with tempfile.TemporaryDirectory(prefix="opsbots-package-") as directory:
        print("  chalice package (prod stage) + package_zips + finish_template", flush=True)
        out = package(Path(directory))
        ours = functions(json.loads((out / "sam.json").read_text()))
        zips = sorted({code for _, code, _ in ours})
        sizes = {code: zip_sizes(out / code) for code in zips}
        largest = {code: largest_packages(out / code) for code in zips}
        python = peer_python()
        if python is not None and peer_has("c7n"):
            print("  c7n.mu: the policy's Lambda zip", flush=True)
            peer = run_worker([python, "-m", "bench.custodian", "archive", "--out", Path(directory) / "custodian"])
            note = ", ".join(f"{name} {value}" for name, value in peer["versions"].items())
    security_groups = next(code for name, code, _ in ours if name == "OnSecurityGroupChange")
    sg_bytes = sizes[security_groups]["zip_bytes"]
    lines = [
        "## Deployment size: each function's zip, ours vs Cloud Custodian's policy Lambda",
        "",
        f"- ours: `chalice package --stage {STAGE}` + `deploy/package_zips.py` + `deploy/finish_template.py` "
        f"(`make package` without cfn-lint): {len(ours)} functions, {len(zips)} zips ("
        + ", ".join(f"`{code}` for {sum(c == code for _, c, _ in ours)}" for code in zips)
        + ")",
        f"- Custodian: `c7n.mu.PolicyLambda(policy).get_archive()` for bench/custodian.py's policy ({note}); one "
        "function and one zip per policy",
        *(
            f"- largest parts of `{code}`, compressed: {', '.join(f'{name} {mb(size)}' for name, size in parts)}"
            for code, parts in largest.items()
        ),
        f"- whole section {time.perf_counter() - started:.0f} s",
        "",
        *table(ours, sizes, peer),
        "",
        "Targets:",
        "",
        f"- the security-group function's zip (`{security_groups}`) <= 4.5 MB: {mb(sg_bytes)} "
        + ("(met)" if sg_bytes <= 4.5e6 else "(**MISSED**)")
        + (f", {sg_bytes / peer['zip_bytes']:.1f}x Custodian's {mb(peer['zip_bytes'])} per policy" if peer else ""),
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    arguments = parser().parse_args(argv)
    text = run()
    publish(text, arguments.out, "Deployment size benchmark", "chalice")
    return 0


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench.package_size", description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=RESULTS / "package_size.md", help="where the markdown goes")
    return parser


if __name__ == "__main__":
    sys.exit(main())
