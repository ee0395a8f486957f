"""``segdeep crf``: dense-CRF post-processing of a model's probabilities.

    segdeep crf PROBS IMAGE -o OUT [--theta-alpha MM] [--theta-beta HU] [--theta-gamma MM]
                                   [--w1 W] [--w2 W] [--iterations T] [--backend auto|...]
                                   [--device auto|cpu|cuda]
                                   [--probabilities-out FILE.npy] [--overwrite]
    segdeep crf --build-extension

PROBS: (L, Z, Y, X) probabilities on IMAGE's grid, as .npy or a 4D / vector NIfTI (L >= 2 classes,
class 0 = background). IMAGE: the CT/MR volume. OUT: the refined label map (argmax), written with
IMAGE's exact geometry (any image suffix), or the refined probabilities when OUT ends in .npy.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from SegDeepLib.core.crf_params import BY_NAME as CRF_BY_NAME
from SegDeepLib.errors import SegDeepError

# table name -> option; the options keep their historical spelling (--iterations, not --num-iterations)
CRF_FLAGS = {
    "theta_alpha": "--theta-alpha",
    "theta_beta": "--theta-beta",
    "theta_gamma": "--theta-gamma",
    "w1": "--w1",
    "w2": "--w2",
    "num_iterations": "--iterations",
}


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "crf", help="refine probabilities with a 3D fully connected CRF (post-processing)"
    )
    parser.add_argument("probabilities", nargs="?", help="(L, Z, Y, X) .npy or 4D/vector image")
    parser.add_argument("image", nargs="?", help="intensity volume on the same grid (e.g. CT)")
    parser.add_argument("-o", "--output", help="label map (image suffix) or probabilities (.npy)")
    parser.add_argument("--probabilities-out", help="also save refined probabilities (.npy)")
    for name, flag in CRF_FLAGS.items():  # defaults and help from the one CRF parameter table
        p = CRF_BY_NAME[name]
        unit = f", {p.unit}" if p.unit else ""
        parser.add_argument(flag, type=p.kind, default=p.default, help=f"{p.help}{unit} (default {p.default:g})")
    parser.add_argument("--backend", default="auto", help="auto | exact | torch | cpp | cuda")
    parser.add_argument(
        "--device", default="auto", help="auto (GPU when usable), cpu or cuda: where the CRF runs"
    )
    parser.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    parser.add_argument(
        "--build-extension", action="store_true", help="build the C++/CUDA extensions and exit"
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.build_extension:
        from SegDeepLib.crf import available_backends
        from SegDeepLib.crf.extension import KINDS, load_extension
        from SegDeepLib.progress import TextReporter

        for kind in KINDS:  # progress of a first build (or of a wait for another's) on stderr
            load_extension(kind, progress=TextReporter())
        print("CRF backends:", ", ".join(available_backends()))
        return 0
    if not (args.probabilities and args.image and args.output):
        raise SegDeepError("segdeep crf: needs PROBS IMAGE -o OUT (see segdeep crf --help)")
    from SegDeepLib.inference.device import run_or_cpu, select_device
    from SegDeepLib.io import read_image, read_probabilities, require_3d
    from SegDeepLib.progress import TextReporter

    _check_outputs(args)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    image = require_3d(read_image(args.image), args.image)
    probs = read_probabilities(args.probabilities, image)
    progress = TextReporter()  # after the inputs were checked: an error stays one line
    device = select_device(_device_for(args), progress)
    volume = sitk.GetArrayFromImage(image).astype(np.float32)
    refined = run_or_cpu(
        lambda dev: _refine(args, probs, volume, image, dev), device, progress, "CRF"
    )
    _write_outputs(args, refined, image)
    return 0


def _device_for(args: argparse.Namespace) -> str:
    """The requested device; ``auto`` with a backend that takes CPU tensors only is the CPU."""
    if args.device == "auto" and args.backend != "auto":
        from SegDeepLib.crf.backends import get_backend

        return get_backend(args.backend).device_type or "auto"
    return args.device


def _refine(
    args: argparse.Namespace, probs: np.ndarray, volume: np.ndarray, image, device
) -> np.ndarray:
    """The CRF on ``device`` (the probabilities and the image moved there), back as NumPy."""
    import torch

    from SegDeepLib.crf import crf_refine

    refined = crf_refine(
        torch.from_numpy(probs).to(device),
        torch.from_numpy(volume[None]).to(device),
        tuple(reversed(image.GetSpacing())),
        theta_alpha=args.theta_alpha,
        theta_beta=args.theta_beta,
        theta_gamma=args.theta_gamma,
        w1=args.w1,
        w2=args.w2,
        num_iterations=args.iterations,
        backend=args.backend,
    )
    return refined.cpu().numpy()


def _check_outputs(args: argparse.Namespace) -> None:
    """Every output location checked before any work (none may be an input)."""
    from SegDeepLib.io.atomic import check_output_path
    from SegDeepLib.io.suffixes import PROBABILITY_SUFFIXES, require_suffix

    inputs = (args.probabilities, args.image)
    out = require_suffix(args.output, PROBABILITY_SUFFIXES)
    check_output_path(out, args.overwrite, inputs)
    if args.probabilities_out:
        extra = require_suffix(args.probabilities_out, (".npy",), "--probabilities-out")
        check_output_path(extra, args.overwrite, (*inputs, args.output))


def _save_npy(path: Path, array: np.ndarray, overwrite: bool, reference: sitk.Image) -> None:
    from SegDeepLib.io import write_probabilities

    write_probabilities(array, reference, path, overwrite)


def _write_outputs(args: argparse.Namespace, refined: np.ndarray, image: sitk.Image) -> None:
    from SegDeepLib.io import write_image

    out = Path(args.output)
    if out.suffix.lower() == ".npy":
        _save_npy(out, refined, args.overwrite, image)
    else:
        labels = sitk.GetImageFromArray(refined.argmax(0).astype(np.uint8))
        labels.CopyInformation(image)
        write_image(labels, out, overwrite=args.overwrite)
    if args.probabilities_out:
        _save_npy(Path(args.probabilities_out), refined, args.overwrite, image)
    print(f"segdeep crf: wrote {out}")
