"""`python -m demo [CHAPTER ...] [--report PATH]`: play every chapter (or the named ones); exit 0 only if all
passed. `--report PATH` also writes what the demo observed as JSON (demo/show.py's `Report`): every chapter,
scene and check, each check with its key, verdict and the state facts it was decided on."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from demo import environment


def main(argv: list[str] | None = None) -> int:
    arguments = _parser().parse_args(argv)
    if hasattr(sys.stdout, "reconfigure"):
        sys.stdout.reconfigure(errors="replace", line_buffering=True)
    environment.fake_aws()  # before anything below imports boto3, moto or the app

    from demo import show, stage
    from demo.chapters import CHAPTERS

    unknown = set(arguments.chapters) - {chapter.name for chapter in CHAPTERS}
    if unknown:
        print(f"unknown chapter(s): {', '.join(sorted(unknown))}; known: {', '.join(c.name for c in CHAPTERS)}")
        return 2
    chosen = [chapter for chapter in CHAPTERS if not arguments.chapters or chapter.name in arguments.chapters]
    report = show.new_report()
    started = time.monotonic()
    print("opsbots demo: the bots against moto's HTTP server, nothing leaves this machine")
    try:
        with environment.moto_server() as endpoint:
            report.endpoint = endpoint
            the_stage = stage.build(endpoint)
            stage.introduce(the_stage)
            for number, chapter in enumerate(chosen, 1):
                record = show.chapter(number, chapter.title, name=chapter.name, bot=chapter.bot)
                record.passed = chapter.play(the_stage)
    finally:  # a run cut short by an error still leaves its report
        elapsed = time.monotonic() - started
        report.elapsed_seconds = round(elapsed, 1)
        if arguments.report:
            report.write(arguments.report)
    print(f"\n{'═' * show.WIDTH}")
    for chapter_record in report.chapters:
        passed = bool(chapter_record.passed)
        print(f"{show.PASS if passed else show.FAIL} chapter {chapter_record.name}: {'passed' if passed else 'FAILED'}")
    print(f"{'all checks passed' if report.passed else 'SOME CHECKS FAILED'} in {elapsed:.1f} s")
    return 0 if report.passed else 1


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m demo", description=__doc__)
    parser.add_argument("chapters", nargs="*", metavar="CHAPTER", help="chapters to play (default: all)")
    parser.add_argument(
        "--report", type=Path, metavar="PATH", help="also write what the demo observed, as JSON, to PATH"
    )
    return parser


if __name__ == "__main__":
    sys.exit(main())
