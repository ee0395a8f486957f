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
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk
import torch

from SegDeepLib.core.crf_params import BY_NAME as CRF_TABLE
from SegDeepLib.core.crf_params import CrfParam
from SegDeepLib.errors import SegDeepError
from SegDeepLib.inference.device import run_or_cpu, run_with_fallback, select_device
from SegDeepLib.inference.postprocess import postprocess
from SegDeepLib.inference.settings import fast_preprocessing, inference_settings
from SegDeepLib.inference.slices import predict_slices
from SegDeepLib.inference.sliding_window import TileSettings, sliding_window
from SegDeepLib.io.labels import LabelTable
from SegDeepLib.io.layout import to_canonical
from SegDeepLib.io.model_folder import load_weights, read_spec
from SegDeepLib.preprocessing.pipeline import Preprocessed, preprocess
from SegDeepLib.preprocessing.regions import crop
from SegDeepLib.preprocessing.resample import resample_to_reference
from SegDeepLib.progress import CancelToken, ProgressCallback, ProgressEvent, log


@dataclass
class Prediction:
    """A label map on the input grid, its label table, optional probabilities and run details."""

    labelmap: sitk.Image
    table: LabelTable
    probabilities: np.ndarray | None = None  # (K, k, j, i): 0 = background, i = table.labels[i-1]
    timings: dict[str, float] = field(default_factory=dict)
    device: str = "cpu"


def _stage(
    progress: ProgressCallback | None, stage: str, fraction: float, message: str = ""
) -> None:
    if progress is not None:
        progress(ProgressEvent(stage=stage, fraction=fraction, message=message))


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
        run = _Run(self, settings, dev, fast, progress, cancel)
        pre, probs = run.probabilities(image, tta if tta is not None else bool(settings["tta"]))
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


def intensities_on_network_grid(image: sitk.Image, pre: Preprocessed) -> np.ndarray:
    """The image's own voxel values (e.g. HU) on ``pre``'s network grid (crop + linear resampling)."""
    array, _ = to_canonical(image)
    cropped = sitk.GetImageFromArray(np.ascontiguousarray(crop(array, pre.box)))
    cropped.CopyInformation(pre.crop_grid)
    moved = resample_to_reference(cropped, pre.network_grid, "linear")
    return sitk.GetArrayFromImage(moved).astype(np.float32)


def _select(labels: np.ndarray, table: LabelTable, wanted: list[str]) -> np.ndarray:
    """Class indices -> label values, keeping only the wanted organs."""
    lookup = np.zeros(len(table.labels) + 1, dtype=np.int32)
    for index, lab in enumerate(table.labels, start=1):
        lookup[index] = lab.value if lab.name in wanted else 0
    return lookup[labels]


class _Run:
    """One prediction: settings, device (may fall back to the CPU), timings."""

    def __init__(
        self,
        predictor: Predictor,
        settings: dict[str, Any],
        device: torch.device,
        fast: bool,
        progress: ProgressCallback | None,
        cancel: CancelToken | None,
    ) -> None:
        self.p, self.settings, self.device, self.fast = predictor, settings, device, fast
        self.progress, self.cancel = progress, cancel
        self.timings: dict[str, float] = {}

    def _timed(self, stage: str, work: Callable[[], Any]) -> Any:
        if self.cancel is not None:
            self.cancel.check()
        _stage(self.progress, stage, 0.0, f"{stage}...")
        start = time.perf_counter()
        out = work()
        self.timings[stage] = self.timings.get(stage, 0.0) + time.perf_counter() - start
        _stage(self.progress, stage, 1.0, f"{stage} done in {self.timings[stage]:.1f} s")
        return out

    def preprocess(
        self, image: sitk.Image, spec: dict[str, Any], region: sitk.Image | None = None
    ) -> Preprocessed:
        return self._timed("preprocess", lambda: preprocess(image, spec, region=region))

    def probabilities(self, image: sitk.Image, tta: bool) -> tuple[Preprocessed, torch.Tensor]:
        if self.settings["mode"] == "cascade":
            from SegDeepLib.inference.cascade import run_cascade

            return run_cascade(self, image, tta)
        spec = (
            fast_preprocessing(self.p.spec, self.p.spec.get("inference") or {})
            if self.fast
            else dict(self.p.spec.get("preprocessing") or {})
        )
        pre = self.preprocess(image, spec)
        keys = self.settings["ensemble"]
        probs = self.networks_probabilities(pre.array, keys, self.settings, tta)
        return pre, probs

    def networks_probabilities(
        self,
        array: np.ndarray,
        keys: Sequence[str],
        stage_settings: dict[str, Any],
        tta: bool,
        region: np.ndarray | None = None,
    ) -> torch.Tensor:
        """Average softmax probabilities over networks (folds) and flips."""
        flips = [()] + ([tuple(a) for a in self.settings["tta_axes"]] if tta else [])
        total = None
        for key in keys:
            for axes in flips:
                probs = self._one(self.p.networks[key], array, axes, stage_settings, region)
                total = probs if total is None else total.add_(probs)
        return total / (len(keys) * len(flips))

    def _one(
        self,
        network: torch.nn.Module,
        array: np.ndarray,
        axes: tuple[int, ...],
        stage_settings: dict[str, Any],
        region: np.ndarray | None,
    ) -> torch.Tensor:
        volume = torch.from_numpy(np.ascontiguousarray(array))
        if axes:
            volume = torch.flip(volume, [a + 1 for a in axes])
            region = None if region is None else np.flip(region, axes)

        def work(tile: tuple[int, ...], device: torch.device) -> torch.Tensor:
            self.device = device
            return self._network_pass(network.to(device), volume, tile, stage_settings, region)

        stage = "slices" if self.settings["mode"] == "2d" else "tiles"
        probs = self._timed(
            stage,
            lambda: run_with_fallback(
                work, stage_settings["tile_size"], self.device, self.progress
            ),
        )
        return torch.flip(probs, [a + 1 for a in axes]) if axes else probs

    def _network_pass(
        self,
        network: torch.nn.Module,
        volume: torch.Tensor,
        tile: tuple[int, ...],
        s: dict[str, Any],
        region: np.ndarray | None,
    ) -> torch.Tensor:
        if self.settings["mode"] == "2d":
            slices = self.settings["slices"]
            seq_key = slices.get("sequence_network")
            seq = self.p.networks[seq_key].to(self.device) if seq_key else None
            return predict_slices(
                volume,
                network,
                self.device,
                s["batch_size"],
                int(slices.get("context", 1)),
                bool(slices.get("sequence")),
                seq,
                self.progress,
                self.cancel,
                slices.get("window"),
            )
        tiles = TileSettings(
            tuple(tile),
            float(s["overlap"]),
            s.get("weighting", self.settings["weighting"]),
            int(s.get("batch_size", self.settings["batch_size"])),
            float(self.settings["sigma_scale"]),
            self.settings["pad_mode"],
            float(self.settings["pad_value"]),
        )
        return sliding_window(
            volume,
            network,
            tiles,
            self.device,
            region=region,
            progress=self.progress,
            cancel=self.cancel,
            autocast=bool(self.settings["autocast"]),
        )

    def crf(self, pre: Preprocessed, probs: torch.Tensor, image: sitk.Image) -> torch.Tensor:
        """Dense-CRF post-processing on the network grid (``inference.crf``: ``params`` for
        :func:`SegDeepLib.crf.crf_refine`, ``features`` ``"intensity"`` (the image's own values,
        e.g. HU, resampled; default) or ``"network"`` (the normalised network input))."""
        try:
            from SegDeepLib.crf import crf_refine, prepare_backend
        except ImportError:
            raise SegDeepError(
                "CRF refinement is not available in this build; run with --no-crf"
            ) from None
        config = self.settings["crf"] or {}
        params = dict(config.get("params") or {})
        if not config:
            log(self.progress, "the model has no tuned CRF settings: CRF with default parameters")
        log(self.progress, f"CRF refinement ({params or 'default parameters'})")
        # a first build of the CRF extension is a stage of its own ("crf-build"), not a silent minute
        prepare_backend(probs.device, str(params.get("backend", "auto")), self.progress, self.cancel)

        def work() -> torch.Tensor:
            if config.get("features", "intensity") == "network":
                features = torch.from_numpy(pre.array)
            else:
                features = torch.from_numpy(intensities_on_network_grid(image, pre))[None]

            def refine(device: torch.device) -> torch.Tensor:  # on the run's device (GPU)
                moved = probs.to(device), features.to(device)
                return crf_refine(*moved, pre.spacing_zyx, **params).float().cpu()

            return run_or_cpu(refine, self.device, self.progress, "CRF")

        return self._timed("crf", work)

    def labels(self, pre: Preprocessed, probs: torch.Tensor) -> np.ndarray:
        expected = len(self.p.table.labels) + 1
        if probs.shape[0] != expected:
            raise SegDeepError(
                f"{self.p.name}: the network gives {probs.shape[0]} classes but the label table "
                f"has {expected - 1} organs + background; fix 'labels' in model.json"
            )

        def work() -> np.ndarray:
            labels = (
                torch.argmax(probs, dim=0).numpy().astype(np.uint8 if expected < 256 else np.int32)
            )
            return postprocess(labels, self.p.table, self.settings["postprocess"])

        return self._timed("postprocess", work)
