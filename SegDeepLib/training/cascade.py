"""Cascade stage 2 data: C2 = the stage-1 model's prediction on each training case, dilated.

``StageRegions(model_folder, dilation_mm)(case, image) -> region mask on the image's grid``. Stage 1
is loaded as the inference package loads any model folder (:meth:`Predictor.from_folder`) and runs
through the inference sliding window (tiles and overlap from its ``inference`` settings, by default
non-overlapping as in the cascade paper; constant weights, zero padding).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch

from SegDeepLib.data.datasets import Case
from SegDeepLib.errors import SegDeepError
from SegDeepLib.io.model_folder import read_spec


class StageRegions:
    """Callable region provider for :class:`SegDeepLib.data.cache.CaseCache`."""

    def __init__(self, model_folder: str | Path, dilation_mm: float) -> None:
        self.folder = Path(model_folder)
        self.spec = read_spec(self.folder)
        self.dilation_mm = float(dilation_mm)
        self.tag = f"{self.spec['weights']['sha256'][:12]}-{self.dilation_mm}"
        self._model = None

    def model(self) -> torch.nn.Module:
        """The stage-1 network, built and loaded (sha256-checked) by the inference package."""
        if self._model is None:
            from SegDeepLib.inference.predictor import Predictor

            self._model = Predictor.from_folder(self.folder).networks["main"]
        return self._model

    def predict(self, image: sitk.Image) -> sitk.Image:
        """Stage-1 label map on the image's grid."""
        from SegDeepLib.inference.sliding_window import TileSettings, sliding_window
        from SegDeepLib.preprocessing import preprocess

        pre = preprocess(image, self.spec["preprocessing"])
        settings = self.spec.get("inference", {})
        tiles = TileSettings(tuple(int(t) for t in settings.get("tile_size", [64, 64, 64])),
                             overlap=float(settings.get("overlap", 0.0)), weighting="constant")
        probs = sliding_window(pre.array, self.model(), tiles, torch.device("cpu"))
        return pre.to_input_grid(probs.argmax(0).numpy().astype(np.uint8), is_label=True)

    def __call__(self, case: Case, image: sitk.Image) -> sitk.Image:
        from SegDeepLib.preprocessing import dilate_foreground

        region = self.predict(image)
        if not sitk.GetArrayFromImage(region).any():
            region = self._reference_region(case, image)
        return dilate_foreground(region, self.dilation_mm, in_mm=True)

    @staticmethod
    def _reference_region(case: Case, image: sitk.Image) -> sitk.Image:
        """Fallback C2 when stage 1 finds nothing on a training case: its reference foreground."""
        from SegDeepLib.io import read_image

        if case.label is None:
            raise SegDeepError(f"case {case.id}: the stage-1 model finds nothing and there is no label "
                               "to fall back to; train stage 1 longer")
        warnings.warn(f"case {case.id}: the stage-1 model finds nothing; C2 falls back to the "
                      "reference foreground (train stage 1 longer)", stacklevel=2)
        mask = sitk.Cast(read_image(case.label) > 0, sitk.sitkUInt8)
        mask.CopyInformation(image)
        return mask
