"""The header every results file starts with: title, date and the machine, so runs can be compared."""

from __future__ import annotations

import os
import platform
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path


def machine(*packages: str) -> str:
    """`x86_64, 2 CPU(s) (nproc), Python 3.11.7, boto3 1.44.5`: the versions of the packages named."""
    versions = "".join(f", {package} {version(package)}" for package in packages)
    cpus = len(os.sched_getaffinity(0))
    return f"{platform.machine()}, {cpus} CPU(s) (nproc), Python {platform.python_version()}{versions}"


def header(title: str, *packages: str, note: str = "") -> list[str]:
    """The first lines of a results file; `note` follows the machine line (e.g. what else was running)."""
    return [
        f"# {title}",
        "",
        f"- date: {datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
        f"- machine: {machine(*packages)}{note}",
    ]


def publish(text: str, out: Path | None, title: str, *packages: str) -> None:
    """Print a section's markdown, and write it to `out` under the header (`--out`; none: print only)."""
    print("\n" + text)
    if out:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text("\n".join(header(title, *packages)) + "\n\n" + text)
        print(f"written to {out}")
