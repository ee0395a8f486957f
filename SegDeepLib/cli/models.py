"""``segdeep models``: the model catalogue (shipped models + the user's models folder)."""

from __future__ import annotations

import argparse
import json
from typing import Any


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("models", help="list the available models (catalogue + user models)")
    parser.add_argument("--json", action="store_true", help="print the catalogue as JSON")
    parser.add_argument("--id", default=None, help="show one model's full card")
    parser.set_defaults(func=run)


def _fmt(value: Any) -> str:
    if isinstance(value, dict):
        return ", ".join(f"{k}: {_fmt(v)}" for k, v in value.items()) or "-"
    if isinstance(value, list):
        return ", ".join(_fmt(v) for v in value) or "-"
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)


def describe(entry: dict[str, Any], default: bool = False) -> str:
    """A model's card as text: what it segments, how well (measured) and how fast."""
    organs = ", ".join(o["name"] for o in entry["organs"])
    training = entry["training"]
    lines = [
        f"{entry['id']} (v{entry['version']}){'  [default]' if default else ''}  [{entry.get('source', 'shipped')}]",
        f"  {entry['title']}",
        f"  method:    {entry['method']}",
        (
            f"  modality:  {entry['modality']}; input: {entry['input']['channels']} channel(s), "
            f"{entry['input'].get('mode', '3d')}"
        ),
        f"  organs:    {organs}",
        f"  trained:   {training['cases']} case(s) of {training['data']}"
        + (
            "  (SYNTHETIC DATA ONLY: not an accuracy claim)"
            if training.get("synthetic_only")
            else ""
        ),
        f"  licence:   {entry['licence']}",
        f"  accuracy:  {_fmt(entry['accuracy'])}",
        f"  time:      {_fmt(entry['timing'])}",
        f"  settings:  {_fmt(entry['recommended'])}",
        (
            f"  weights:   {entry['weights']['file']} ({entry['weights']['size_bytes'] / 1e6:.2f} MB, "
            f"sha256 {entry['weights']['sha256'][:12]}...)"
        ),
    ]
    if entry.get("notes"):
        lines.append(f"  notes:     {entry['notes']}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    from SegDeepLib.core.catalogue import load_catalogue, user_models_dir
    from SegDeepLib.errors import SegDeepError

    catalogue = load_catalogue()
    models = catalogue["models"]
    if args.id:
        models = [m for m in models if m["id"] == args.id]
        if not models:
            ids = ", ".join(m["id"] for m in catalogue["models"]) or "none"
            raise SegDeepError(f"model {args.id!r}: not in the catalogue; available: {ids}")
    if args.json:
        print(json.dumps({**catalogue, "models": models}, indent=2))
        return 0
    if not models:
        print(
            f"no models installed (shipped catalogue empty; user models folder: {user_models_dir()})"
        )
        return 0
    for entry in models:
        print(describe(entry, entry["id"] == catalogue.get("default_model")))
        print()
    print(f"user models folder: {user_models_dir()} (set SEGDEEP_MODELS_DIR to change it)")
    return 0
