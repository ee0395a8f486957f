"""``segdeep crf``: dense-CRF post-processing of a model's probabilities.

    segdeep crf PROBS IMAGE -o OUT [--theta-alpha MM] [--theta-beta HU] [--theta-gamma MM]
                                   [--w1 W] [--w2 W] [--iterations T] [--backend auto|...]
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

from SegDeepLib.errors import SegDeepError


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "crf", help="refine probabilities with a 3D fully connected CRF (post-processing)"
    )
    parser.add_argument("probabilities", nargs="?", help="(L, Z, Y, X) .npy or 4D/vector image")
    parser.add_argument("image", nargs="?", help="intensity volume on the same grid (e.g. CT)")
    parser.add_argument("-o", "--output", help="label map (image suffix) or probabilities (.npy)")
    parser.add_argument("--probabilities-out", help="also save refined probabilities (.npy)")
    parser.add_argument("--theta-alpha", type=float, default=12.0, help="appearance kernel, mm")
    parser.add_argument("--theta-beta", type=float, default=15.0, help="intensity units (HU)")
    parser.add_argument("--theta-gamma", type=float, default=6.0, help="smoothness kernel, mm")
    parser.add_argument("--w1", type=float, default=5.0, help="appearance kernel weight")
    parser.add_argument("--w2", type=float, default=3.0, help="smoothness kernel weight")
    parser.add_argument("--iterations", type=int, default=5, help="mean-field iterations")
    parser.add_argument("--backend", default="auto", help="auto | exact | torch | cpp | cuda")
    parser.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    parser.add_argument(
        "--build-extension", action="store_true", help="build the C++/CUDA extensions and exit"
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.build_extension:
        from SegDeepLib.crf import available_backends

        print("CRF backends:", ", ".join(available_backends()))
        return 0
    if not (args.probabilities and args.image and args.output):
        raise SegDeepError("segdeep crf: needs PROBS IMAGE -o OUT (see segdeep crf --help)")
    from SegDeepLib.crf import crf_refine
    from SegDeepLib.io import read_image, read_probabilities, require_3d

    _check_outputs(args)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    image = require_3d(read_image(args.image), args.image)
    probs = read_probabilities(args.probabilities, image)
    volume = sitk.GetArrayFromImage(image).astype(np.float32)
    spacing_zyx = tuple(reversed(image.GetSpacing()))
    refined = crf_refine(
        probs,
        volume[None],
        spacing_zyx,
        theta_alpha=args.theta_alpha,
        theta_beta=args.theta_beta,
        theta_gamma=args.theta_gamma,
        w1=args.w1,
        w2=args.w2,
        num_iterations=args.iterations,
        backend=args.backend,
    ).numpy()
    _write_outputs(args, refined, image)
    return 0


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
