"""`python -m demo [CHAPTER ...]`: play every chapter (or the named ones); exit 0 only if all passed."""

from __future__ import annotations

import argparse
import sys
import time

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
    started = time.monotonic()
    print("opsbots demo: the bots against moto's HTTP server, nothing leaves this machine")
    with environment.moto_server() as endpoint:
        the_stage = stage.build(endpoint)
        stage.introduce(the_stage)
        results = {}
        for number, chapter in enumerate(chosen, 1):
            show.chapter(number, chapter.title)
            results[chapter.name] = chapter.play(the_stage)
    elapsed = time.monotonic() - started
    print(f"\n{'═' * show.WIDTH}")
    for name, passed in results.items():
        print(f"{show.PASS if passed else show.FAIL} chapter {name}: {'passed' if passed else 'FAILED'}")
    passed = all(results.values())
    print(f"{'all checks passed' if passed else 'SOME CHECKS FAILED'} in {elapsed:.1f} s")
    return 0 if passed else 1


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m demo", description=__doc__)
    parser.add_argument("chapters", nargs="*", metavar="CHAPTER", help="chapters to play (default: all)")
    return parser


if __name__ == "__main__":
    sys.exit(main())
