"""Entry point of ``segdeep`` / ``python -m SegDeepLib``."""

from __future__ import annotations

import argparse
import contextlib
import importlib
import signal
import sys
import threading
from collections.abc import Iterator, Sequence

from SegDeepLib.errors import CancelledError, SegDeepError
from SegDeepLib.version import __version__

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


def _terminate(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM (what the Slicer module's Cancel sends first) unwinds like Ctrl+C: temporary
    files are removed by their ``finally`` blocks and the exit code is 130."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _os_error(exc: OSError) -> str:
    where = exc.filename if exc.filename is not None else "segdeep"
    return f"{where}: {exc.strerror or exc}"


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:  # config overrides may also follow options (segdeep train cfg.yaml --resume a.b=1)
        if getattr(args, "overrides", None) is None or any(e.startswith("-") or "=" not in e for e in extra):
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        args.overrides = [*args.overrides, *extra]
    try:
        with _sigterm_as_interrupt():
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
    except OSError as exc:  # disk full, permission denied...: the file and the reason, one line
        print(f"segdeep: error: {_os_error(exc)}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
