"""``segdeep import model.zip [-o FOLDER]``: unpack a model zip safely (no paths outside FOLDER).

Without ``-o`` the model goes into the user's model folder (``$SEGDEEP_MODELS_DIR``, default
``~/.segdeep/models``) under its id, where ``segdeep models`` and ``segment --model ID`` find it.
"""

from __future__ import annotations

import argparse


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("import", help="unpack a model zip into a model folder")
    parser.add_argument("zip", help="zip written by 'segdeep export'")
    parser.add_argument(
        "-o",
        "--output",
        default=None,
        help="model folder to create (default: $SEGDEEP_MODELS_DIR/<model id>, ~/.segdeep/models)",
    )
    parser.add_argument("--overwrite", action="store_true")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from SegDeepLib.training.export import import_zip

    print(f"imported {import_zip(args.zip, args.output, args.overwrite)}")
    return 0
