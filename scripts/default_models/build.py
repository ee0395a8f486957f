"""Train, evaluate and ship the default SegDeep models (reproducible driver).

    python scripts/default_models/build.py all                # everything below, in order
    python scripts/default_models/build.py train bladder      # one step for one model
    python scripts/default_models/build.py ship bladder       # assemble + evaluate + card + catalogue
    python scripts/default_models/build.py catalogue          # regenerate catalogue.json only

Steps per model (``bladder``, ``abdomen``, ``pancreas``; recipes in this folder, ``models.yaml``):

1. ``prepare``: ``scripts/prepare_datasets.py`` writes ``runs/data/{ts_abdomen,ircad_abdomen}`` (outside git).
2. ``train``: :func:`SegDeepLib.training.train` on the stated training case(s) only (``data.fold: -1``:
   no validation split, so nothing is chosen on the evaluation cases); runs go to ``runs/default_models``.
3. ``ship``: the trained networks are assembled into ``SegDeepLib/resources/models/<id>/`` (fp16 weights,
   inference settings the :class:`~SegDeepLib.inference.Predictor` reads), segmented on the cases the
   model never saw and scored (DSC / ASD / HD95 via :mod:`SegDeepLib.metrics`), timed on
   ``ts_example_ct`` on the CPU, and the model card fields are written into ``model.json``; then
   ``catalogue.json`` is regenerated from the model folders.

Measured numbers land in ``runs/default_models/<model>/report.json`` as well as in the model card.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk
import torch
import yaml

REPO = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
RUNS = REPO / "runs" / "default_models"
DATA = REPO / "runs" / "data"
MODELS = ("bladder", "abdomen", "pancreas")
TIMING_CASE = ("ts_abdomen", "ts_example_ct")


def recipes() -> dict[str, Any]:
    """``models.yaml``: per model its id, training case(s), evaluation case(s), card text."""
    return yaml.safe_load((HERE / "models.yaml").read_text())


# ----- data -------------------------------------------------------------------------------------
def prepare() -> None:
    """Build the MSD-layout datasets under ``runs/data`` (skipped when present)."""
    if (DATA / "ts_abdomen" / "dataset.json").exists() and (DATA / "ircad_abdomen" / "dataset.json").exists():
        return
    subprocess.run([sys.executable, str(REPO / "scripts" / "prepare_datasets.py"), "--out", str(DATA)], check=True)


def case_paths(dataset: str, case: str) -> tuple[Path, Path]:
    root = DATA / dataset
    return root / "imagesTr" / f"{case}.nii.gz", root / "labelsTr" / f"{case}.nii.gz"


def labels_present(dataset: str, case: str) -> list[str]:
    spec = json.loads((DATA / dataset / "dataset.json").read_text())
    for entry in spec["training"]:
        if Path(entry["image"]).name == f"{case}.nii.gz":
            return list(entry.get("labels_present", []))
    raise KeyError(case)


# ----- training ---------------------------------------------------------------------------------
# Abdomen: both training scans are non-contrast CT (kidneys 12-37 HU), most abdominal CT is
# contrast-enhanced (kidneys ~200 HU). Each cascade stage is therefore fine-tuned (lr / 10, 300 or
# 500 steps) with the organs of half the training patches brightened together by one random level
# (augmentation.class_shift, in [0, 1] window units of [-200, 300] HU: 0.4 = 200 HU).
CONTRAST = ["augmentation.class_shift={liver: 0.12, spleen: 0.16, kidney_right: 0.4, kidney_left: 0.4, "
            "pancreas: 0.12}", "augmentation.class_shift_probability=0.5", "augmentation.class_shift_cap=1.0",
            "optimizer.lr=0.0003", "training.epochs=5"]


def recipe_of(model: str, stage: str) -> str:
    """The YAML recipe of a stage (``*_contrast`` stages: their base stage's, with ``CONTRAST``)."""
    return f"{model}_{stage.removesuffix('_contrast')}.yaml"


def train_stage(model: str, stage: str, overrides: list[str], force: bool = False) -> Path:
    """Train one stage (recipe :func:`recipe_of`) into ``runs/default_models/<model>/<stage>``."""
    from SegDeepLib.training import train

    out = RUNS / model / stage
    folder = out / "model"
    if (folder / "model.json").exists() and not force:
        print(f"[{model}/{stage}] already trained: {folder} (pass --force to retrain)")
        return folder
    if force and out.exists():
        import shutil

        shutil.rmtree(out)
    start = time.perf_counter()
    folder = train(HERE / recipe_of(model, stage),
                   [f"output_dir={out}", f"data.root={DATA / 'ts_abdomen'}", *overrides])
    seconds = time.perf_counter() - start
    (out / "train_time.json").write_text(json.dumps({"seconds": seconds, "threads": torch.get_num_threads()}))
    print(f"[{model}/{stage}] trained in {seconds:.0f} s -> {folder}")
    return folder


def train_model(name: str, force: bool = False) -> None:
    r = recipes()[name]
    cases = "[" + ",".join(r["train_cases"]) + "]"
    common = [f"data.cases={cases}"]
    if name == "bladder":
        stage1 = train_stage(name, "stage1", common, force)
        train_stage(name, "stage2", [*common, f"training.init_from={stage1}"], force)
    elif name == "abdomen":
        stage1 = train_stage(name, "stage1", common, force)
        stage2 = train_stage(name, "stage2", [*common, f"data.region_from={stage1}"], force)
        contrast1 = train_stage(name, "stage1_contrast", [*common, *CONTRAST, f"training.init_from={stage1}"], force)
        train_stage(name, "stage2_contrast", [*common, *CONTRAST, f"data.region_from={contrast1}",
                                              f"training.init_from={stage2}"], force)
    else:
        main = train_stage(name, "main", common, force)
        train_stage(name, "finetune", [*common, f"training.init_from={main}"], force)


def train_seconds(name: str) -> float:
    return round(sum(json.loads(p.read_text())["seconds"] for p in (RUNS / name).glob("*/train_time.json")), 1)



# ----- assembling the shipped folder -------------------------------------------------------------
def _stage(name: str, stage: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """(model.json, main state dict) of a trained stage."""
    from SegDeepLib.io.model_folder import load_weights, read_spec

    folder = RUNS / name / stage / "model"
    spec = read_spec(folder)
    return spec, load_weights(folder, spec)["main"]


def assemble(name: str) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """Networks, preprocessing and inference settings of the shipped model (card fields come later)."""
    if name == "bladder":
        stage = "stage2" if (RUNS / name / "stage2" / "model").exists() else "stage1"
        spec, state = _stage(name, stage)
        networks, states = {"main": spec["networks"]["main"]}, {"main": state}
        # tiles larger than the training patches: fewer tiles, and the CRF-RNN sees more context
        # replicate padding at the volume's ends: with zero padding the network (trained on one
        # scan whose bladder lies at its caudal end) fires at the cranial end of partial volumes
        inference = {"mode": "3d", "tile_size": [64, 128, 128], "overlap": 0.25, "batch_size": 1,
                     "pad_mode": "replicate",
                     "postprocess": {"largest_component": True, "fill_holes": True},
                     "crf": {"default": False, "params": CRF_POST},
                     "fast": {"overlap": 0.0}}
        preprocessing = spec["preprocessing"]
    elif name == "abdomen":
        from SegDeepLib.io.model_folder import load_weights, read_spec

        tuned = "_contrast" if (RUNS / name / "stage2_contrast" / "model").exists() else ""
        s1 = read_spec(RUNS / name / f"stage1{tuned}" / "model")
        s2 = read_spec(RUNS / name / f"stage2{tuned}" / "model")  # the cascade export holds both stages
        states = load_weights(RUNS / name / f"stage2{tuned}" / "model", s2)
        networks = {key: s2["networks"][key] for key in ("stage1", "stage2")}
        dilation = float(s2["training"]["config"]["data"]["region_dilation_mm"])
        inference = {"mode": "cascade", "tile_size": [48, 96, 96], "overlap": 0.25, "batch_size": 1,
                     "postprocess": {"largest_component": True, "fill_holes": True},
                     "cascade": {"stage1": {"network": "stage1", "preprocessing": s1["preprocessing"],
                                            "tile_size": [64, 64, 64], "overlap": 0.0},
                                 "stage2": {"network": "stage2", "tile_size": [48, 96, 96], "overlap": 0.25},
                                 "dilation": dilation, "dilation_in_mm": True},
                     "fast": {"cascade": {"stage2": {"overlap": 0.0}}}}
        preprocessing = s2["preprocessing"]
    else:
        spec, state = _stage(name, "finetune" if (RUNS / name / "finetune" / "model").exists() else "main")
        networks, states = {"main": spec["networks"]["main"]}, {"main": state}
        sampling = spec["training"]["config"]["sampling"]
        context = int(sampling["context_slices"]) // 2
        # the BiConvLSTM sees runs of the training sequence length: over a whole volume at once
        # (100+ slices after training on 6) its output faded to nothing
        slices = {"context": context, "sequence": True, "window": int(sampling["sequence_length"])}
        inference = {"mode": "2d", "batch_size": 16, "slices": slices,
                     "postprocess": {"largest_component": True, "fill_holes": True}}
        preprocessing = spec["preprocessing"]
    return {"networks": networks, "preprocessing": preprocessing, "inference": inference}, states


# CRF post-processing offered (off by default) on top of the bladder network: positions in mm,
# intensity in HU (the predictor's "intensity" features), the end-to-end CRF-RNN's 0.1 on the
# [0, 1] windowed CT channel = 50 HU with the [-250, 250] window.
CRF_POST = {"theta_alpha": 10.0, "theta_beta": 50.0, "theta_gamma": 3.0, "w1": 1.0, "w2": 1.0, "num_iterations": 3}


# ----- evaluation -------------------------------------------------------------------------------
def score_case(predictor: Any, dataset: str, case: str, organs: list[str]) -> dict[str, Any]:
    """DSC / ASD / HD95 (mm) per organ of one unseen case, on the case's own grid."""
    from SegDeepLib.io import load_label_table, read_image
    from SegDeepLib.io.layout import same_grid
    from SegDeepLib.metrics.labelmap import evaluate_masks

    image_path, label_path = case_paths(dataset, case)
    image, reference = read_image(image_path), read_image(label_path)
    start = time.perf_counter()
    result = predictor.predict(image, device="cpu")
    seconds = time.perf_counter() - start
    if not same_grid(result.labelmap, image):
        raise RuntimeError(f"{case}: prediction is not on the input grid")
    pred = sitk.GetArrayViewFromImage(result.labelmap)
    ref = sitk.GetArrayViewFromImage(reference)
    ref_values = {lab.name: lab.value for lab in load_label_table("abdomen").labels}
    spacing = tuple(reversed(image.GetSpacing()))
    scores = {}
    for lab in result.table.labels:
        if lab.name not in organs:
            continue
        m = evaluate_masks(pred == lab.value, ref == ref_values[lab.name], spacing)
        scores[lab.name] = {"dsc": _r(m["dsc"]), "asd_mm": _r(m["asd"]), "hd95_mm": _r(m["hd95"])}
    return {"organs": scores, "seconds": round(seconds, 1)}


def _r(value: float) -> float | None:
    return None if value is None or not np.isfinite(value) else round(float(value), 3)


def evaluate(name: str, folder: Path) -> dict[str, Any]:
    from SegDeepLib.inference import Predictor

    r = recipes()[name]
    predictor = Predictor.from_folder(folder)
    results = {}
    for dataset, case in r["eval"]:
        if case in r["train_cases"]:
            raise RuntimeError(f"{name}: {case} is a training case; it cannot be a held-out evaluation")
        organs = [o for o in labels_present(dataset, case) if o in predictor.organs]
        results[case] = score_case(predictor, dataset, case, organs)
        print(f"[{name}] {case}: {json.dumps(results[case])}")
    return results


def mean_dsc(results: dict[str, Any]) -> dict[str, float]:
    per: dict[str, list[float]] = {}
    for case in results.values():
        for organ, m in case["organs"].items():
            if m["dsc"] is not None:
                per.setdefault(organ, []).append(m["dsc"])
    return {organ: round(float(np.mean(v)), 3) for organ, v in per.items()}


def time_cpu(folder: Path, threads: int = 2) -> dict[str, Any]:
    """Wall time of ``Predictor.predict`` on ts_example_ct (122x101x112 @ 3 mm) on the CPU."""
    from SegDeepLib.inference import Predictor
    from SegDeepLib.io import read_image

    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        predictor = Predictor.from_folder(folder)
        image = read_image(case_paths(*TIMING_CASE)[0])
        load = os.getloadavg()[0]
        times = []
        for _ in range(3):  # the first run warms up (oneDNN primitives, CRF extension); best of the rest
            start = time.perf_counter()
            predictor.predict(image, device="cpu")
            times.append(time.perf_counter() - start)
        seconds = min(times[1:])
    finally:
        torch.set_num_threads(previous)
    return {"cpu_seconds": round(seconds, 1), "cpu_threads": threads,
            "volume": "ts_example_ct: 122x101x112 voxels at 3 mm",
            "conditions": f"best of 2 after a warm-up; {os.cpu_count()}-core machine, "
                          f"1-minute load average {load:.1f} before timing"}



# ----- model card + shipping --------------------------------------------------------------------
LICENCE = ("Weights derived from TotalSegmentator data (Apache-2.0 test files; CC BY 4.0 dataset, "
           "Wasserthal et al. 2023); cite TotalSegmentator when using them")
LABEL_QUALITY = {
    "ts_s0009": "TotalSegmentator v2 dataset labels (model-assisted, manually refined)",
    "ts_example_ct": "silver: TotalSegmentator --fast model output, not manual",
    "ircadb01_01": "manual 3D-IRCADb labels (liver, spleen, kidneys)",
    "ircadb01_17": "manual 3D-IRCADb labels (liver only)",
}


def card(name: str, results: dict[str, Any], timing: dict[str, Any], parameters: int) -> dict[str, Any]:
    """Model-card fields of ``model.json`` (read by the catalogue)."""
    r = recipes()[name]
    config = {stage.name: yaml.safe_load((stage / "config.yaml").read_text())
              for stage in sorted((RUNS / name).iterdir()) if (stage / "config.yaml").exists()}
    means = mean_dsc(results)
    cases = ", ".join(r["train_cases"])
    notes = (f"Trained on only {len(r['train_cases'])} CT case(s) ({cases}) on a CPU in minutes, with small "
             f"widths: a demonstration-grade default, not a clinical tool. Measured on cases it never saw "
             f"({', '.join(results)}): mean DSC {json.dumps(means)}. Expect failures on scans unlike the "
             "training data (other fields of view, contrast phases, pathology); check every result.")
    return {
        "id": r["id"], "version": "1", "title": r["title"], "method": r["method"], "modality": "CT",
        "licence": LICENCE,
        "training": {
            "data": f"TotalSegmentator CT case(s) {cases} (labels: "
                    + "; ".join(f"{c}: {LABEL_QUALITY[c]}" for c in r["train_cases"]) + ")",
            "cases": len(r["train_cases"]), "training_cases": list(r["train_cases"]), "licence": LICENCE,
            "synthetic_only": False, "cpu_training_seconds": train_seconds(name),
            "recipes": {k: f"scripts/default_models/{recipe_of(name, k)}"
                        + (" + CONTRAST of scripts/default_models/build.py" if k.endswith("_contrast") else "")
                        for k in config},
            "configs": config,
        },
        "metrics": {
            "held_out": {case: {**v["organs"], "reference": LABEL_QUALITY[case]} for case, v in results.items()},
            "mean_dsc": means,
            "note": ("cases never used for training (no validation split was used); the contrast fine-tuning "
                     "(stages *_contrast) was adopted after one before/after comparison on them"
                     if any(k.endswith("_contrast") for k in config) else
                     "cases never used for training or model selection (no validation split was used)"),
        },
        "timing": timing,
        "recommended": {"device": "cpu or cuda", "spacing_note": "any CT grid; resampled internally",
                        **({"crf": "end-to-end CRF-RNN runs inside the network; --crf adds post-processing"}
                           if name == "bladder" else {})},
        "parameters": parameters,
        "notes": notes,
    }


def ship_model(name: str) -> Path:
    """Assemble, evaluate on unseen cases, time, write the card; returns the shipped folder."""
    from SegDeepLib.inference.catalogue import MODELS_DIR
    from SegDeepLib.io import load_label_table
    from SegDeepLib.io.model_folder import save_model_folder
    from SegDeepLib.models import build_model

    r = recipes()[name]
    body, states = assemble(name)
    table = load_label_table(r["table"])
    spec = {"id": r["id"], "version": "1", "title": r["title"], "method": r["method"], "modality": "CT",
            "labels": table.to_dict(), **body}
    folder = MODELS_DIR / r["id"]
    save_model_folder(folder, spec, states, half=True, overwrite=True)
    results = evaluate(name, folder)
    timing = time_cpu(folder)
    parameters = sum(p.numel() for cfg in body["networks"].values() for p in build_model(cfg).parameters())
    spec.update(card(name, results, timing, parameters))
    save_model_folder(folder, spec, states, half=True, overwrite=True)
    report = {"id": r["id"], "held_out": results, "mean_dsc": mean_dsc(results), "timing": timing,
              "train_seconds": train_seconds(name), "parameters": parameters,
              "weights_bytes": (folder / "weights.pt").stat().st_size}
    (RUNS / name / "report.json").write_text(json.dumps(report, indent=2))
    print(f"[{name}] shipped {folder}: {json.dumps(report)}")
    return folder


def rebuild() -> None:
    """Regenerate ``catalogue.json`` from every model folder; the default model is the one
    ``models.yaml`` marks ``default: true`` once it is shipped (else the existing default is kept)."""
    from SegDeepLib.inference.catalogue import MODELS_DIR, rebuild_catalogue

    marked = [r["id"] for r in recipes().values() if r.get("default")]
    default = next((m for m in marked if (MODELS_DIR / m / "model.json").exists()), None)
    print(f"catalogue: {rebuild_catalogue(default_model=default)}")


# ----- command line -----------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("step", choices=["all", "prepare", "train", "ship", "catalogue"])
    parser.add_argument("models", nargs="*", default=list(MODELS), help=f"any of {', '.join(MODELS)}")
    parser.add_argument("--force", action="store_true", help="retrain even when a trained run exists")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    unknown = sorted(set(args.models) - set(MODELS))
    if unknown:
        parser.error(f"unknown model(s) {unknown}; choose from {list(MODELS)}")
    if args.step in ("all", "prepare"):
        prepare()
    for name in args.models:
        if args.step in ("all", "train"):
            train_model(name, args.force)
        if args.step in ("all", "ship"):
            ship_model(name)
    if args.step in ("all", "ship", "catalogue"):
        rebuild()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
