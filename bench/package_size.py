"""`python -m bench.package_size`: the zipped size of each Lambda function, ours against Custodian's policy Lambda.

Ours: what `make package` builds, without its cfn-lint step and into a temporary directory (so a
concurrent `make package` is left alone): `chalice package --stage prod --pkg-format cloudformation
--merge-template deploy/resources.json`, then `deploy/drop_runtime_libs.py` on deployment.zip.
Chalice puts every function of the app in that one zip (each function's CodeUri names it), so each
of ours is listed with the same zip. Chalice reuses the dependency zip it cached in
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
    """`make package`'s two build steps into `directory`; returns the directory holding sam.json and the zip."""
    out = directory / "package"
    environment = {**os.environ, "AWS_DEFAULT_REGION": os.environ.get("AWS_DEFAULT_REGION", "us-east-1")}
    chalice = Path(sys.executable).parent / "chalice"
    template = ["--pkg-format", "cloudformation", "--merge-template", "deploy/resources.json"]
    for command in (
        [chalice, "package", "--stage", STAGE, *template, out],
        [sys.executable, "deploy/drop_runtime_libs.py", out / "deployment.zip"],
    ):
        done = subprocess.run(list(map(str, command)), cwd=ROOT, env=environment, capture_output=True, check=False)
        if done.returncode:
            raise RuntimeError(f"{command[1]} failed:\n{done.stderr.decode(errors='replace')[-2000:]}")
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


def table(ours: Sequence[tuple[str, str, int]], sizes: Mapping[str, int], peer: Mapping[str, Any] | None) -> list[str]:
    lines = [
        "| function | zipped | unzipped | files | vs Custodian's policy Lambda zip |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, code, _memory in ours:
        against = ratio(sizes["zip_bytes"], peer["zip_bytes"], 1) if peer else "not run"
        lines.append(
            f"| ours: {name} (`{code}`, shared) | {mb(sizes['zip_bytes'])} | {mb(sizes['unzipped_bytes'])} "
            f"| {sizes['files']:,} | {against} |"
        )
    if peer:
        lines.append(
            f"| **Custodian: custodian-sg-remove-world-ssh** (one zip per policy) | {mb(peer['zip_bytes'])} "
            f"| {mb(peer['unzipped_bytes'])} | {peer['files']:,} | 1.0x |"
        )
    return lines


def run() -> str:
    started = time.perf_counter()
    peer, note = None, "not run: no c7n in bench/.venv-peers (`make bench` installs it)"
    with tempfile.TemporaryDirectory(prefix="opsbots-package-") as directory:
        print("  chalice package (prod stage) + drop_runtime_libs", flush=True)
        out = package(Path(directory))
        ours = functions(json.loads((out / "sam.json").read_text()))
        sizes = zip_sizes(out / "deployment.zip")
        largest = largest_packages(out / "deployment.zip")
        python = peer_python()
        if python is not None and peer_has("c7n"):
            print("  c7n.mu: the policy's Lambda zip", flush=True)
            peer = run_worker([python, "-m", "bench.custodian", "archive", "--out", Path(directory) / "custodian"])
            note = ", ".join(f"{name} {value}" for name, value in peer["versions"].items())
    lines = [
        "## Deployment size: each function's zip, ours vs Cloud Custodian's policy Lambda",
        "",
        f"- ours: `chalice package --stage {STAGE}` + `deploy/drop_runtime_libs.py` (`make package` without cfn-lint): "
        f"{len(ours)} functions, all with CodeUri deployment.zip, one zip shared by every function",
        f"- Custodian: `c7n.mu.PolicyLambda(policy).get_archive()` for bench/custodian.py's policy ({note}); one "
        "function and one zip per policy",
        f"- largest parts of ours, compressed: {', '.join(f'{name} {mb(size)}' for name, size in largest)}",
        f"- neither zip holds compiled bytecode (.pyc: ours {sizes['compiled_files']}, "
        f"Custodian {peer['compiled_files'] if peer else 'n/a'}); whole section {time.perf_counter() - started:.0f} s",
        "",
        *table(ours, sizes, peer),
        "",
        "Result (no target in the issue): each of ours' functions deploys "
        + (
            f"{mb(sizes['zip_bytes'])}, {sizes['zip_bytes'] / peer['zip_bytes']:.1f}x Custodian's "
            f"{mb(peer['zip_bytes'])} per policy."
            if peer
            else f"{mb(sizes['zip_bytes'])}; Custodian {note}."
        ),
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
