"""``segdeep train CONFIG.yaml [key.sub=value ...] [--resume] [--progress json]``.

Also ``--check`` (validate the config and the dataset, then stop) and ``--fingerprint`` (print the
dataset fingerprint and the proposed spacing / patch size / batch size). Works under ``torchrun``.
"""

from __future__ import annotations

import argparse
import json

from SegDeepLib.progress import JsonLinesReporter, ProgressEvent, TextReporter


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("train", help="train or fine-tune a model from a YAML config",
                            description="Train a model from a YAML config; overrides as key.sub=value.")
    parser.add_argument("config", help="YAML config (see configs/*.yaml)")
    parser.add_argument("overrides", nargs="*", help="config overrides, e.g. optimizer.lr=1e-3 training.epochs=5")
    parser.add_argument("--resume", action="store_true", help="continue from output_dir/checkpoints/last.pt")
    parser.add_argument("--check", action="store_true", help="validate config and data, then stop")
    parser.add_argument("--fingerprint", action="store_true",
                        help="print the dataset fingerprint and proposed plan (JSON), then stop")
    parser.add_argument("--memory-gb", type=float, default=None, help="memory budget for --fingerprint")
    parser.add_argument("--progress", choices=["text", "json"], default="text",
                        help="progress output: text (stderr) or json (JSON lines on stdout)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from SegDeepLib.training.config import load_config

    config = load_config(args.config, args.overrides)
    if args.check:
        from SegDeepLib.training.setup import build_network, model_config, prepare_data

        setup = prepare_data(config)
        build_network(model_config(config, setup), config.sampling.mode)
        print(f"config OK: {len(setup.train_ids)} training / {len(setup.val_ids)} validation cases, "
              f"classes {list(setup.mapping.names)}")
        return 0
    if args.fingerprint:
        from SegDeepLib.data.datasets import load_dataset
        from SegDeepLib.data.fingerprint import compute_fingerprint, propose_plan

        fingerprint = compute_fingerprint(load_dataset(config.data.root, config.data.format))
        plan = propose_plan(fingerprint, memory_gb=args.memory_gb)
        print(json.dumps({"fingerprint": fingerprint, "plan": plan}, indent=2))
        return 0
    from SegDeepLib.training import train

    reporter = JsonLinesReporter() if args.progress == "json" else TextReporter()
    folder = train(config, resume=args.resume, progress=reporter)
    if args.progress == "json":
        reporter(ProgressEvent(event="done", message="training finished", data={"outputs": {"model": str(folder)}}))
    else:
        print(f"model folder: {folder}")
    return 0
