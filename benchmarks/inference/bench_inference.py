"""End-to-end inference timing on a 512x512x300 CT, and our sliding window vs MONAI's.

    python benchmarks/inference/bench_inference.py [--model demo-phantom-unet] [--threads 2]
                                                    [--repeats 2] [--quick] [--json FILE]   (CPU only)

1. The real TotalSegmentator test CT (122x101x112 at 3 mm) is resampled up to 512x512x300 (linear).
2. End to end: ``Predictor.predict`` (preprocessing incl. body mask and resampling, tiles,
   postprocessing, back onto the 512x512x300 grid), per-stage times.
3. Network part side by side with ``monai.inferers.sliding_window_inference`` on the same network,
   the same tiles (roi, overlap 0.5, Gaussian weighting, sigma 0.125, same tile batch size) and the same
   input: (a) the model's network on its preprocessed grid, (b) a one-convolution 3D CNN over the full
   512x512x300 grid (96^3 tiles), where tiling/accumulation overhead dominates. Both sides average
   softmax probabilities; MONAI runs twice: with the plain network (what a MONAI user gets) and
   with tiles in the channels_last_3d memory format (our CPU default), so the comparison is
   like for like. A warm-up round is dropped, the order alternates, the best of ``--repeats`` is kept.
   The outputs are compared (max |difference|) so both do the same work.

MONAI is needed only here (``pip install --no-deps monai``); it is not a SegDeepLib dependency.
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import sys
import time
from pathlib import Path

import SimpleITK as sitk
import torch

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from SegDeepLib.inference import Predictor, TileSettings, sliding_window
from SegDeepLib.inference.settings import inference_settings
from SegDeepLib.io import read_image
from SegDeepLib.preprocessing import preprocess

REAL_CT = Path(
    "/work/shared/data/totalsegmentator-testfiles/ct_abdomen_pelvis_3mm/example_ct.nii.gz"
)


def upsampled_ct(size=(512, 512, 300)) -> sitk.Image:
    """The real CT resampled (linear) onto a ``size`` grid covering the same field of view."""
    ct = read_image(REAL_CT)
    spacing = [s * n / m for s, n, m in zip(ct.GetSpacing(), ct.GetSize(), size)]
    origin = ct.TransformContinuousIndexToPhysicalPoint(
        [-0.5 + 0.5 * sp / s for sp, s in zip(spacing, ct.GetSpacing())]
    )
    return sitk.Resample(
        ct,
        list(size),
        sitk.Transform(),
        sitk.sitkLinear,
        origin,
        spacing,
        ct.GetDirection(),
        -1024.0,
        sitk.sitkInt16,
    )


class Softmaxed(torch.nn.Module):
    """``softmax(network(x))`` so MONAI averages probabilities, as our sliding window does.

    ``channels_last`` also feeds MONAI's tiles in the ``channels_last_3d`` memory format (the
    CPU trick our sliding window applies by default), for a like-for-like comparison.
    """

    def __init__(self, network: torch.nn.Module, channels_last: bool = False) -> None:
        super().__init__()
        self.network, self.channels_last = network, channels_last
        if channels_last:
            network.to(memory_format=torch.channels_last_3d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last_3d)
        return torch.softmax(self.network(x), dim=1)


class LightCNN(torch.nn.Module):
    """A cheap same-size 3D CNN (one 3x3x3 convolution) so the tiling machinery dominates."""

    spatial_dims = 3

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = torch.nn.Conv3d(1, 3, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


def time_pair(
    volume: torch.Tensor, network: torch.nn.Module, tile, batch: int, repeats: int
) -> dict:
    """Best-of-``repeats`` seconds: ours, MONAI (plain network), MONAI (channels_last_3d tiles)."""
    from monai.inferers import sliding_window_inference

    settings = TileSettings(tuple(tile), 0.5, "gaussian", batch)
    ours_net = copy.deepcopy(network)
    monai_nets = {
        "monai": Softmaxed(copy.deepcopy(network)),
        "monai_channels_last": Softmaxed(copy.deepcopy(network), channels_last=True),
    }

    def ours() -> torch.Tensor:
        return sliding_window(volume, ours_net, settings, "cpu")

    def monai(key: str):
        def run() -> torch.Tensor:
            with torch.inference_mode():
                return sliding_window_inference(
                    volume[None],
                    tuple(tile),
                    batch,
                    monai_nets[key],
                    overlap=0.5,
                    mode="gaussian",
                    sigma_scale=0.125,
                )[0]

        return run

    runs = {
        "ours": ours,
        "monai": monai("monai"),
        "monai_channels_last": monai("monai_channels_last"),
    }
    times: dict[str, list[float]] = {k: [] for k in runs}
    outputs = {}
    for repeat in range(repeats + 1):  # the first round warms up (oneDNN primitives) and is dropped
        order = list(runs) if repeat % 2 == 0 else list(reversed(runs))
        for key in order:
            start = time.perf_counter()
            outputs[key] = runs[key]()
            if repeat:
                times[key].append(time.perf_counter() - start)
    best = {k: min(v) for k, v in times.items()}
    return {
        "shape": list(volume.shape[1:]),
        "tile": list(tile),
        "tile_batch": batch,
        **{f"{k}_s": round(v, 2) for k, v in best.items()},
        "ratio_monai_over_ours": round(best["monai"] / best["ours"], 3),
        "ratio_monai_channels_last_over_ours": round(best["monai_channels_last"] / best["ours"], 3),
        "max_abs_diff": float((outputs["ours"] - outputs["monai"]).abs().max()),
    }


def end_to_end(ct: sitk.Image, predictor: Predictor) -> dict:
    start = time.perf_counter()
    result = predictor.predict(ct, device="cpu")
    total = time.perf_counter() - start
    return {
        "total_s": round(total, 1),
        "stages_s": {k: round(v, 1) for k, v in result.timings.items()},
        "output_size": list(result.labelmap.GetSize()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="demo-phantom-unet")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="a 256x256x150 CT instead (smoke run)")
    parser.add_argument("--json", type=Path, default=None, help="also write the numbers here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    size = (256, 256, 150) if args.quick else (512, 512, 300)
    ct = upsampled_ct(size)
    print(
        f"CT {ct.GetSize()} spacing {tuple(round(s, 3) for s in ct.GetSpacing())}; torch {torch.__version__}, "
        f"{args.threads} threads, {platform.processor() or platform.machine()}",
        flush=True,
    )
    predictor = Predictor.load(args.model)
    report = {
        "ct_size": list(size),
        "threads": args.threads,
        "model": args.model,
        "end_to_end_cpu": end_to_end(ct, predictor),
    }
    print("end to end:", report["end_to_end_cpu"], flush=True)
    settings = inference_settings(predictor.spec)
    # a cascade's stage 2 runs inside C2 (crop "mask"); here it runs over the body box instead
    prep = dict(predictor.spec["preprocessing"])
    if prep.get("crop") == "mask":
        prep["crop"] = "body"
    pre = preprocess(ct, prep)
    volume = torch.from_numpy(pre.array)
    key = "main" if "main" in predictor.networks else "stage2"
    report["model_network"] = time_pair(
        volume,
        predictor.networks[key],
        settings["tile_size"],
        settings["batch_size"],
        args.repeats,
    )
    print("model network on its grid:", report["model_network"], flush=True)
    full = torch.from_numpy(sitk.GetArrayFromImage(ct).astype("float32")[None] / 1000.0)
    report["light_cnn_full_grid"] = time_pair(
        full, LightCNN().eval(), (96, 96, 96), 2, args.repeats
    )
    print("light CNN on the full grid:", report["light_cnn_full_grid"], flush=True)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
