"""One registry: every network is built by name from a config dict.

    @register_model("vnet")
    class VNet(nn.Module): ...

    model = build_model({"name": "vnet", "in_channels": 2, "num_classes": 2, "batch_norm": True})

The training runner, inference and the Slicer module only ever call :func:`build_model`.
"""

from __future__ import annotations

from typing import Any, Callable

from SegDeepLib.errors import SegDeepError

_REGISTRY: dict[str, Callable[..., Any]] = {}


def register_model(name: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Class/function decorator adding a network constructor under ``name``."""

    def decorator(factory: Callable[..., Any]) -> Callable[..., Any]:
        if name in _REGISTRY and _REGISTRY[name] is not factory:
            raise ValueError(f"model name {name!r} registered twice")
        _REGISTRY[name] = factory
        return factory

    return decorator


def available_models() -> list[str]:
    _import_builtin_models()
    return sorted(_REGISTRY)


def build_model(config: dict[str, Any]):
    """Build a network from ``{"name": ..., **constructor kwargs}``."""
    _import_builtin_models()
    config = dict(config)
    name = config.pop("name", None)
    if name not in _REGISTRY:
        raise SegDeepError(f"unknown network {name!r}; available: {', '.join(sorted(_REGISTRY))}")
    try:
        return _REGISTRY[name](**config)
    except TypeError as exc:
        raise SegDeepError(f"network {name!r}: bad parameters ({exc})") from None


def _import_builtin_models() -> None:
    """Import the modules that register the built-in networks (kept lazy: torch is heavy)."""
    import importlib
    import pkgutil

    import SegDeepLib.models as package

    for info in pkgutil.iter_modules(package.__path__):
        if info.name != "registry":
            importlib.import_module(f"SegDeepLib.models.{info.name}")
    importlib.import_module("SegDeepLib.training.cnn_crf")  # "cnn_crf" (CNN + CRF-RNN) for model folders
