"""``segdeep import model.zip -o FOLDER``: unpack a model zip safely (no paths outside FOLDER)."""

from __future__ import annotations

import argparse


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("import", help="unpack a model zip into a model folder")
    parser.add_argument("zip", help="zip written by 'segdeep export'")
    parser.add_argument("-o", "--output", required=True, help="model folder to create")
    parser.add_argument("--overwrite", action="store_true")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from SegDeepLib.training.export import import_zip

    print(f"imported {import_zip(args.zip, args.output, args.overwrite)}")
    return 0
