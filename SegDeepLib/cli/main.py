"""Entry point of ``segdeep`` / ``python -m SegDeepLib``."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from SegDeepLib import __version__
from SegDeepLib.errors import CancelledError, SegDeepError

# sub-command -> module in SegDeepLib.cli (each defines add_parser(subparsers) and run(args) -> int)
COMMANDS = {
    "segment": "segment",
    "train": "train",
    "evaluate": "evaluate",
    "models": "models",
    "demo": "demo",
    "info": "info",
    "crf": "crf",
    "export": "export",
    "import": "import_model",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="segdeep",
        description="SegDeep: deep-learning organ segmentation for CT and MRI.",
    )
    parser.add_argument("--version", action="version", version=f"SegDeepLib {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for module_name in COMMANDS.values():
        module = importlib.import_module(f"SegDeepLib.cli.{module_name}")
        module.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:  # config overrides may also follow options (segdeep train cfg.yaml --resume a.b=1)
        if getattr(args, "overrides", None) is None or any(e.startswith("-") or "=" not in e for e in extra):
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        args.overrides = [*args.overrides, *extra]
    try:
        return int(args.func(args) or 0)
    except CancelledError as exc:
        print(f"segdeep: cancelled: {exc}", file=sys.stderr)
        return 130
    except SegDeepError as exc:
        print(f"segdeep: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("segdeep: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
