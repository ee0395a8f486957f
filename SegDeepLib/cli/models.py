"""`segdeep models` (filled in by its own issue)."""

from __future__ import annotations

import argparse

from SegDeepLib.errors import SegDeepError


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("models", help="(not available yet in this build)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    raise SegDeepError("'segdeep models' is not available in this build yet")
