"""Checks of ``segment``'s input against the model, before any allocation or inference.

The volume (3D, finite, not constant; the file named), the model's preprocessing spec (the model
named), the memory the resampled grids, tiles and buffers will need
(:mod:`SegDeepLib.preprocessing.guard`), and a warning when the intensities do not fit the model
card's modality.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from SegDeepLib.errors import SegDeepError
from SegDeepLib.progress import JsonLinesReporter, ProgressCallback, log


def warn(progress: ProgressCallback | None, message: str) -> None:
    """A warning, once: a ``log`` event (level warning) with --progress json, which the Slicer
    module shows in its panel and log; else a ``segdeep: warning:`` line on stderr."""
    if isinstance(progress, JsonLinesReporter):
        log(progress, message, "warning")
    else:
        print(f"segdeep: warning: {message}", file=sys.stderr)


def check_input(
    image: Any, predictor: Any, args: argparse.Namespace, progress: ProgressCallback | None
) -> Any:
    """File-named checks of the volume against the model, before any allocation or inference."""
    from SegDeepLib.core.preprocessing_spec import validate_spec
    from SegDeepLib.inference.settings import fast_preprocessing, inference_settings
    from SegDeepLib.io import check_volume, intensity_warning
    from SegDeepLib.preprocessing.guard import check_memory

    image = check_volume(image, args.input)
    spec = predictor.spec
    try:
        validate_spec(spec.get("preprocessing"))
    except SegDeepError as exc:
        raise SegDeepError(f"{predictor.name}: {exc}") from None
    settings = inference_settings(spec, fast=args.fast, where=predictor.name)
    given = spec.get("inference") or {}
    main_spec = fast_preprocessing(spec, given) if args.fast else spec.get("preprocessing")
    specs = [main_spec]
    if settings["mode"] == "cascade":
        specs.append(((given.get("cascade") or {}).get("stage1") or {}).get("preprocessing"))
    check_memory(
        image,
        specs,
        len(predictor.table.labels) + 1,
        str(args.input),
        args.memory_limit,
        settings.get("tile_size"),
        float(settings.get("overlap") or 0.0),
        probabilities=args.probabilities is not None,
    )
    modality, model = str(spec.get("modality", "CT")), str(spec.get("id"))
    warning = intensity_warning(image, modality, model, str(args.input))
    if warning:
        warn(progress, warning)
    return image
