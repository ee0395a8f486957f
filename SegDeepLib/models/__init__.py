"""Trainable networks of the five methods, built by name via :func:`build_model`."""

from SegDeepLib.models.registry import available_models, build_model, register_model

__all__ = ["available_models", "build_model", "register_model"]
