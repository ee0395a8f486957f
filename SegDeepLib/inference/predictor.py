"""The one inference API: a model folder + an image -> a label map on the image's exact grid.

::

    predictor = Predictor.load("demo-phantom-unet")          # catalogue id or model folder
    result = predictor.predict(image, organs=["liver"], device="auto")
    result.labelmap     # sitk.Image, same size/origin/spacing/direction as ``image``
    result.table        # LabelTable of the organs in the label map
    result.probabilities  # (K, k, j, i) float32 on the input grid when asked for

Steps: preprocess (the model's spec) -> networks (3D sliding window, 2D slices, or the two-stage
cascade; fold ensembling and flip TTA average probabilities) -> optional CRF post-processing ->
argmax -> postprocessing (largest component / hole filling per organ) -> back onto the input grid.
Network class ``i >= 1`` is the ``i``-th label of the model's label table.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk
import torch

from SegDeepLib.core.crf_params import BY_NAME as CRF_TABLE
from SegDeepLib.core.crf_params import CrfParam
from SegDeepLib.errors import SegDeepError
from SegDeepLib.inference.cascade import run_cascade
from SegDeepLib.inference.device import select_device
from SegDeepLib.inference.run import PredictionRun
from SegDeepLib.inference.settings import inference_settings
from SegDeepLib.io.labels import LabelTable
from SegDeepLib.io.model_folder import load_weights, read_spec
from SegDeepLib.progress import CancelToken, ProgressCallback, log


@dataclass
class Prediction:
    """A label map on the input grid, its label table, optional probabilities and run details."""

    labelmap: sitk.Image
    table: LabelTable
    probabilities: np.ndarray | None = None  # (K, k, j, i): 0 = background, i = table.labels[i-1]
    timings: dict[str, float] = field(default_factory=dict)
    device: str = "cpu"


class Predictor:
    """Runs one model (its networks, preprocessing and inference settings) on images."""

    def __init__(
        self, spec: dict[str, Any], networks: dict[str, torch.nn.Module], folder: Path | None = None
    ) -> None:
        self.spec, self.networks, self.folder = spec, networks, folder
        self.name = str(folder or spec.get("id", "model"))
        self.table = LabelTable.from_dict(spec["labels"])
        inference_settings(spec, where=self.name)  # fail early on bad settings
        for network in networks.values():
            network.eval()

    @classmethod
    def from_folder(cls, folder: str | os.PathLike) -> Predictor:
        """Build the networks of a model folder and load its sha256-checked weights."""
        from SegDeepLib.models import build_model

        folder = Path(folder)
        spec = read_spec(folder)
        weights = load_weights(folder, spec)
        networks = {}
        for key, config in spec["networks"].items():
            network = build_model(config)
            if key not in weights:
                raise SegDeepError(
                    f"{folder}: weights for network {key!r} missing; re-export the model"
                )
            try:
                network.load_state_dict(weights[key])
            except RuntimeError as exc:
                raise SegDeepError(
                    f"{folder}: weights do not fit network {key!r} ({str(exc).splitlines()[0]})"
                ) from None
            networks[key] = network
        return cls(spec, networks, folder)

    @classmethod
    def load(cls, model: str | None = None) -> Predictor:
        """A catalogue id (shipped or user model), a model folder path, or ``None`` for the default."""
        from SegDeepLib.core.catalogue import resolve_model

        return cls.from_folder(resolve_model(model))

    @property
    def organs(self) -> list[str]:
        return self.table.names

    def predict(
        self,
        image: sitk.Image,
        organs: Sequence[str] | None = None,
        device: str | torch.device = "auto",
        crf: bool | None = None,
        tta: bool | None = None,
        fast: bool = False,
        probabilities: bool = False,
        progress: ProgressCallback | None = None,
        cancel: CancelToken | None = None,
        crf_params: Mapping[str, Any] | None = None,
    ) -> Prediction:
        """Segment ``image``; ``crf``/``tta`` ``None`` = the model's recommended default.
        ``crf_params`` replace single parameters of the model's ``inference.crf.params`` (names of
        :mod:`SegDeepLib.core.crf_params`) when the CRF runs; they do not switch it on."""
        wanted = self._check_organs(organs)
        settings = inference_settings(self.spec, fast=fast, where=self.name)
        if crf_params:
            settings = with_crf_params(settings, crf_params)
        dev = device if isinstance(device, torch.device) else select_device(str(device), progress)
        if (self.spec.get("training") or {}).get("synthetic_only"):
            log(
                progress,
                f"model {self.spec.get('id', self.name)!r} was trained on synthetic phantoms only: "
                "its output on patient scans is not meaningful",
                "warning",
            )
        run = PredictionRun(self, settings, dev, fast, progress, cancel)
        use_tta = tta if tta is not None else bool(settings["tta"])
        if settings["mode"] == "cascade":
            pre, probs = run_cascade(run, image, use_tta)
        else:
            pre, probs = run.probabilities(image, use_tta)
        if self._use_crf(crf, settings):
            probs = run.crf(pre, probs, image)
        labels = run.labels(pre, probs)
        out = _select(labels, self.table, wanted)
        result = Prediction(
            pre.to_input_grid(out, is_label=True),
            self.table.subset(wanted),
            timings=run.timings,
            device=str(run.device),
        )
        if probabilities:
            result.probabilities = pre.to_input_grid(probs.numpy(), is_label=False)
        if cancel is not None:
            cancel.check()
        return result

    def _check_organs(self, organs: Sequence[str] | None) -> list[str]:
        if not organs:
            return self.table.names
        unknown = [o for o in organs if o not in self.table.names]
        if unknown:
            raise SegDeepError(
                f"organ(s) {', '.join(unknown)}: not segmented by model {self.spec.get('id', self.name)!r}; "
                f"it knows: {', '.join(self.table.names)}"
            )
        return list(organs)

    def _use_crf(self, crf: bool | None, settings: dict[str, Any]) -> bool:
        """``None``: the model's default (``inference.crf.default``); an end-to-end CRF-RNN runs
        inside the network whatever this says."""
        if crf is None:
            config = settings["crf"]
            return bool(config and config.get("default", False))
        return bool(crf)


def with_crf_params(settings: dict[str, Any], params: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of inference ``settings`` whose ``crf.params`` carry ``params`` over the model's
    (each checked against the CRF parameter table)."""
    crf = dict(settings.get("crf") or {})
    checked = {name: _crf_param(name).check(value, "crf_params") for name, value in params.items()}
    crf["params"] = {**(crf.get("params") or {}), **checked}
    return {**settings, "crf": crf}


def _crf_param(name: str) -> CrfParam:
    if name not in CRF_TABLE:
        raise SegDeepError(f"crf_params: unknown CRF parameter {name!r}; use one of {', '.join(CRF_TABLE)}")
    return CRF_TABLE[name]


def _select(labels: np.ndarray, table: LabelTable, wanted: list[str]) -> np.ndarray:
    """Class indices -> label values, keeping only the wanted organs."""
    lookup = np.zeros(len(table.labels) + 1, dtype=np.int32)
    for index, lab in enumerate(table.labels, start=1):
        lookup[index] = lab.value if lab.name in wanted else 0
    return lookup[labels]
