"""`segdeep demo` (filled in by its own issue)."""

from __future__ import annotations

import argparse

from SegDeepLib.errors import SegDeepError


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("demo", help="(not available yet in this build)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    raise SegDeepError("'segdeep demo' is not available in this build yet")
