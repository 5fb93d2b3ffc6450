"""The shipped policy files (policies/*.yml), and directories of them with one file changed."""

from __future__ import annotations

from pathlib import Path

from tests.support.aws import ROOT

SHIPPED = {path.name: path.read_text(encoding="utf-8") for path in sorted((ROOT / "policies").glob("*.yml"))}


def write_policies(directory: Path, name: str, text: str) -> None:
    """The shipped policies in `directory`, with `name` holding `text`."""
    directory.mkdir(exist_ok=True)
    for shipped, content in SHIPPED.items():
        (directory / shipped).write_text(text if shipped == name else content, encoding="utf-8")


def local_websites(port: int, name: str, path: str, *, status_page: bool = False) -> str:
    """websites.yml with one check, `name`, of a site on 127.0.0.1 only: a test's run sends nothing off this
    machine, whatever the shipped file names. With `status_page`, the shipped file's status page, to which the
    role is scoped."""
    page = next(line for line in SHIPPED["websites.yml"].splitlines() if line.startswith("status_page:"))
    return (
        "notify: {email: {sender: opsbots@example.com, recipients: [oncall@example.com]}}\n"
        f"checks: [{{name: {name}, url: 'http://127.0.0.1:{port}{path}', allow_private: true, timeout: 2s}}]\n"
        + (f"{page}\n" if status_page else "")
    )
