"""Inference: the :class:`Predictor` (model folder + image -> label map on the input grid),
sliding-window and slice-wise network passes, the cascade, postprocessing and the model catalogue."""

from SegDeepLib.core.catalogue import load_catalogue, resolve_model, user_models_dir
from SegDeepLib.inference.device import run_with_fallback, select_device
from SegDeepLib.inference.postprocess import postprocess
from SegDeepLib.inference.predictor import Prediction, Predictor
from SegDeepLib.inference.slices import predict_slices
from SegDeepLib.inference.sliding_window import TileSettings, sliding_window

__all__ = [
    "Prediction",
    "Predictor",
    "TileSettings",
    "load_catalogue",
    "postprocess",
    "predict_slices",
    "resolve_model",
    "run_with_fallback",
    "select_device",
    "sliding_window",
    "user_models_dir",
]
