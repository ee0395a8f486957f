"""``segdeep export MODEL_FOLDER -o model.zip``: zip a trained model folder (sha256 checked first)."""

from __future__ import annotations

import argparse


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("export", help="zip a trained model folder")
    parser.add_argument("folder", help="model folder (model.json + weights.pt), e.g. runs/NAME/model")
    parser.add_argument("-o", "--output", required=True, help="zip file to write")
    parser.add_argument("--overwrite", action="store_true")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from SegDeepLib.training.export import export_zip

    print(f"wrote {export_zip(args.folder, args.output, args.overwrite)}")
    return 0
