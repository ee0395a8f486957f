"""One prediction of a model, step by step: preprocessing, network passes (sliding window or
slices, fold ensembling and flip TTA), CRF post-processing and labels, with timings, progress,
cancellation and the device fallback. :class:`~SegDeepLib.inference.predictor.Predictor` chains the
steps; :mod:`SegDeepLib.inference.cascade` chains them for two-stage models.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import numpy as np
import SimpleITK as sitk
import torch

from SegDeepLib.errors import SegDeepError
from SegDeepLib.inference.device import run_or_cpu, run_with_fallback
from SegDeepLib.inference.postprocess import postprocess
from SegDeepLib.inference.settings import fast_preprocessing
from SegDeepLib.inference.slices import predict_slices
from SegDeepLib.inference.sliding_window import TileSettings, sliding_window
from SegDeepLib.io.labels import LabelTable
from SegDeepLib.io.layout import to_canonical
from SegDeepLib.preprocessing.pipeline import Preprocessed, preprocess
from SegDeepLib.preprocessing.regions import crop
from SegDeepLib.preprocessing.resample import resample_to_reference
from SegDeepLib.progress import CancelToken, ProgressCallback, ProgressEvent, log


class RunModel(Protocol):
    """What a run needs of a model (:class:`~SegDeepLib.inference.predictor.Predictor` has it)."""

    spec: dict[str, Any]
    networks: dict[str, torch.nn.Module]
    table: LabelTable
    name: str


def _stage(
    progress: ProgressCallback | None, stage: str, fraction: float, message: str = ""
) -> None:
    if progress is not None:
        progress(ProgressEvent(stage=stage, fraction=fraction, message=message))


def intensities_on_network_grid(image: sitk.Image, pre: Preprocessed) -> np.ndarray:
    """The image's own voxel values (e.g. HU) on ``pre``'s network grid (crop + linear resampling)."""
    array, _ = to_canonical(image)
    cropped = sitk.GetImageFromArray(np.ascontiguousarray(crop(array, pre.box)))
    cropped.CopyInformation(pre.crop_grid)
    moved = resample_to_reference(cropped, pre.network_grid, "linear")
    return sitk.GetArrayFromImage(moved).astype(np.float32)


class PredictionRun:
    """One prediction of a model: settings, device (may fall back to the CPU), timings; the steps
    (preprocessing, network passes, CRF, labels) that :class:`Predictor` and the cascade chain."""

    def __init__(
        self,
        predictor: RunModel,
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
        """One-stage models: preprocess, then the networks (the cascade: ``inference.cascade``)."""
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
