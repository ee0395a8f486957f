"""``segdeep evaluate PRED GT``: per-class metrics of label maps (files or folders of cases).

Writes ``per_case.csv`` (one row per case and class) and ``summary.json`` (mean, std, median, min,
max per class and metric) into ``--output-dir`` and prints a table. Metric definitions and the
empty-mask policy are in :mod:`SegDeepLib.metrics`.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk

from SegDeepLib.errors import SegDeepError
from SegDeepLib.io import LabelTable, load_label_table, read_image
from SegDeepLib.io import read_label_map as io_read_label_map
from SegDeepLib.metrics.cases import CasePairs, match_cases
from SegDeepLib.metrics.em import EM_METRICS, stack_scores
from SegDeepLib.metrics.labelmap import METRICS, check_label_maps, evaluate_label_maps
from SegDeepLib.metrics.summary import rows_to_csv, summarize, to_json, write_text

CSV_NAME, JSON_NAME = "per_case.csv", "summary.json"
TABLE_METRICS = ("dsc", "jaccard", "hd95", "asd", "nsd", "avd")


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "evaluate",
        help="compare predicted label maps with references (DSC, HD95, ASD, NSD, ...)",
        description="Per-class metrics between predicted and reference label maps. PRED and GT are "
        "two files (NIfTI, NRRD, .seg.nrrd, MetaImage) or two folders whose files are matched by "
        "case name (file name without the image suffix). Both must lie on the same voxel grid.",
    )
    parser.add_argument("pred", type=Path, help="predicted label map, or a folder of them")
    parser.add_argument("gt", type=Path, help="reference label map, or a folder of them")
    parser.add_argument("--labels", help="comma-separated label values or names to evaluate "
                        "(default: the label table's labels, else every label present in a case)")
    parser.add_argument("--label-table", help="label table: a shipped name (e.g. abdomen) or a JSON file")
    parser.add_argument("--tolerance-mm", type=float, default=2.0,
                        help="tolerance of the normalised surface Dice (NSD), mm (default 2)")
    parser.add_argument("--output-dir", type=Path, default=Path("evaluation"),
                        help=f"folder for {CSV_NAME} and {JSON_NAME} (default: ./evaluation)")
    parser.add_argument("--overwrite", action="store_true", help="replace existing output files")
    parser.add_argument("--em", action="store_true", help="2D EM mode: score binary maps (non-zero = "
                        "cell interior) with the ISBI 2012 V_rand and V_info instead")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if not args.tolerance_mm > 0:
        raise SegDeepError(f"--tolerance-mm: must be positive, got {args.tolerance_mm}")
    csv_path, json_path = args.output_dir / CSV_NAME, args.output_dir / JSON_NAME
    _check_output_dir(args)
    for path in (csv_path, json_path):
        if path.exists() and not args.overwrite:
            raise SegDeepError(f"{path}: already exists; pass --overwrite or another --output-dir")
    cases = match_cases(args.pred, args.gt)
    _report_unmatched(cases)
    if args.em:
        metrics, rows = EM_METRICS, _evaluate_em(cases)
    else:
        table = load_label_table(args.label_table) if args.label_table else None
        metrics, rows = METRICS, _evaluate_cases(cases, table, args.labels, args.tolerance_mm)
    summary = _summary(args, cases, metrics, rows)
    columns = ["case", "label", "name", "pred_voxels", "ref_voxels", *metrics]
    write_text(csv_path, rows_to_csv(rows, columns), overwrite=args.overwrite)
    write_text(json_path, to_json(summary), overwrite=args.overwrite)
    print(format_table(summary, metrics if args.em else TABLE_METRICS))
    print(f"wrote {csv_path} and {json_path}")
    return 0


def _check_output_dir(args: argparse.Namespace) -> None:
    """The output folder must be a folder we can write in, and not one of the inputs."""
    from SegDeepLib.io.atomic import check_output_path

    out = args.output_dir
    for source in (args.pred, args.gt):
        if out.exists() and source.exists() and out.resolve() == source.resolve():
            raise SegDeepError(f"{out}: is also an input; choose another --output-dir")
    if out.exists() and not out.is_dir():
        raise SegDeepError(f"{out}: is a file; --output-dir needs a folder")
    if out.is_dir():
        for name in (CSV_NAME, JSON_NAME):
            check_output_path(out / name, args.overwrite, (args.pred, args.gt))
    else:  # created with its parents when written: the nearest existing ancestor must be writable
        ancestor = out
        while not ancestor.exists() and ancestor != ancestor.parent:
            ancestor = ancestor.parent
        check_output_path(ancestor / ".segdeep-probe", True)


def _report_unmatched(cases: CasePairs) -> None:
    for names, what in ((cases.unmatched_predictions, "predictions without a reference"),
                        (cases.unmatched_references, "references without a prediction")):
        if names:
            print(f"segdeep: warning: {len(names)} {what} (not evaluated): {', '.join(names)}",
                  file=sys.stderr)


def _evaluate_cases(cases: CasePairs, table: LabelTable | None, labels_arg: str | None,
                    tolerance_mm: float) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for index, (case, pred_path, ref_path) in enumerate(cases.pairs, start=1):
        if len(cases.pairs) > 1:
            print(f"[{index}/{len(cases.pairs)}] {case}", file=sys.stderr)
        ref, ref_table = read_label_map(ref_path, table)
        case_table = table or ref_table
        pred, pred_table = read_label_map(pred_path, case_table)
        case_table = case_table or pred_table
        labels = parse_labels(labels_arg, case_table)
        if labels is None and case_table is not None:
            labels = case_table.values
            _check_known_values(case_table, (pred, pred_path), (ref, ref_path))
        check_label_maps(pred, ref, str(pred_path), str(ref_path))
        names = {lab.value: lab.name for lab in case_table.labels} if case_table else None
        case_rows = evaluate_label_maps(pred, ref, labels, tolerance_mm, names)
        if not case_rows:
            print(f"segdeep: warning: {case}: no foreground label in either map; nothing to score "
                  "(name the labels with --labels or --label-table to score empty maps)", file=sys.stderr)
        rows.extend({"case": case, **row} for row in case_rows)
    return rows


def read_label_map(path: Path, table: LabelTable | None) -> tuple[sitk.Image, LabelTable | None]:
    """A label map (4D singleton squeezed); a ``.seg.nrrd`` renumbered to ``table`` by name."""
    image, own = io_read_label_map(path, table)
    return (image if own is not None else _squeeze(image, path)), own


def _squeeze(image: sitk.Image, path: Path) -> sitk.Image:
    if image.GetDimension() == 4 and image.GetSize()[3] == 1:
        image = image[:, :, :, 0]
    if image.GetDimension() not in (2, 3):
        raise SegDeepError(f"{path}: a 2D or 3D label map is needed, this image is "
                           f"{image.GetDimension()}D with size {image.GetSize()}")
    return image


def parse_labels(text: str | None, table: LabelTable | None) -> list[int] | None:
    """``"1,liver"`` -> label values; names need a label table."""
    if text is None:
        return None
    values = []
    for token in (t.strip() for t in text.split(",")):
        if not token:
            continue
        if token.lstrip("-").isdigit():
            value = int(token)
            if value <= 0:
                raise SegDeepError(f"--labels: {value} is not a foreground label (values start at 1)")
            values.append(value)
        elif table is None:
            raise SegDeepError(f"--labels: {token!r} is a name; give --label-table to look names up "
                               "(or use label values)")
        else:
            values.append(table.by_name(token).value)
    if not values:
        raise SegDeepError("--labels: no labels given")
    return list(dict.fromkeys(values))


def _check_known_values(table: LabelTable, *images: tuple[sitk.Image, Path]) -> None:
    known = set(table.values)
    for image, path in images:
        present = {int(v) for v in np.unique(sitk.GetArrayViewFromImage(image)) if v != 0}
        unknown = sorted(present - known)
        if unknown:
            raise SegDeepError(f"{path}: label values {unknown} are not in the label table "
                               f"{table.name!r}; use another table or pick labels with --labels")


def _evaluate_em(cases: CasePairs) -> list[dict[str, Any]]:
    """ISBI scores per 2D map, or per slice of a 3D stack (rows ``case[k]``)."""
    rows = []
    for case, pred_path, ref_path in cases.pairs:
        pred, ref = read_image(pred_path), read_image(ref_path)
        for image, path in ((pred, pred_path), (ref, ref_path)):
            if image.GetDimension() not in (2, 3) or image.GetNumberOfComponentsPerPixel() != 1:
                raise SegDeepError(f"{path}: --em needs a 2D single-channel image or a stack of them, got "
                                   f"{image.GetDimension()}D with {image.GetNumberOfComponentsPerPixel()} "
                                   "channel(s)")
        check_label_maps(pred, ref, str(pred_path), str(ref_path))
        pred_fg = sitk.GetArrayFromImage(pred) != 0
        ref_fg = sitk.GetArrayFromImage(ref) != 0
        scores = stack_scores(pred_fg, ref_fg)
        pred_slices = pred_fg[None] if pred_fg.ndim == 2 else pred_fg
        ref_slices = ref_fg[None] if ref_fg.ndim == 2 else ref_fg
        for k, (score, p, r) in enumerate(zip(scores, pred_slices, ref_slices)):
            name = case if len(scores) == 1 else f"{case}[{k}]"
            rows.append({"case": name, "label": 1, "name": "cell interior",
                         "pred_voxels": int(p.sum()), "ref_voxels": int(r.sum()), **score})
    return rows


def _summary(args: argparse.Namespace, cases: CasePairs, metrics: Sequence[str],
             rows: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "prediction": str(args.pred),
        "reference": str(args.gt),
        "mode": "em" if args.em else "label_maps",
        "tolerance_mm": None if args.em else args.tolerance_mm,
        "metrics": list(metrics),
        "cases": [case for case, _, _ in cases.pairs],
        "unmatched_predictions": cases.unmatched_predictions,
        "unmatched_references": cases.unmatched_references,
        "policy": "both masks empty: perfect scores; one empty: DSC/NSD 0, distances inf; "
        "non-finite values are left out of the statistics and counted in n_excluded",
        **summarize(rows, metrics),
    }


def format_table(summary: dict[str, Any], metrics: Sequence[str]) -> str:
    """A readable table: one line per class, ``mean ± std`` of each metric over the cases."""
    header = ["class", "cases", *[m.upper() for m in metrics]]
    lines = []
    for name, stats in summary["per_class"].items():
        lines.append([name, str(stats["cases"]), *[_cell(stats[m]) for m in metrics]])
    lines.append(["ALL", str(sum(s["cases"] for s in summary["per_class"].values())),
                  *[_cell(summary["overall"][m]) for m in metrics]])
    widths = [max(len(row[i]) for row in [header, *lines]) for i in range(len(header))]
    text = ["  ".join(cell.ljust(w) if i == 0 else cell.rjust(w)
                      for i, (cell, w) in enumerate(zip(row, widths))) for row in [header, *lines]]
    excluded = sum(summary["overall"][m]["n_excluded"] for m in metrics)
    if excluded:
        text.append(f"({excluded} non-finite values, from empty masks, left out of the statistics)")
    return "\n".join(text)


def _cell(stats: dict[str, Any]) -> str:
    if stats["mean"] is None:
        return "n/a"
    cell = f"{stats['mean']:.3f}±{stats['std']:.3f}"
    return cell + (f" ({stats['n_excluded']}x)" if stats["n_excluded"] else "")
