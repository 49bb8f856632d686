"""``gate``: the streaming process and its camera management commands.

The streaming subcommands (run, demo, attach, detach, cameras, events) land with the
gate issue; until then this entry point only describes itself.
"""

from __future__ import annotations

import argparse
import sys


def build_parser() -> argparse.ArgumentParser:
    return argparse.ArgumentParser(
        prog="gate",
        description="facegate streaming gate. Not built yet: the subcommands run, demo, attach, "
        "detach, cameras and events arrive with the gate (see README).",
    )


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    parser.parse_args(argv)
    parser.print_help(sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
