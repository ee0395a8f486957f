"""One registry: every network is built by name from a config dict.

    @register_model("vnet")
    class VNet(nn.Module): ...

    model = build_model({"name": "vnet", "in_channels": 2, "num_classes": 2, "batch_norm": True})

The training runner, inference and the Slicer module only ever call :func:`build_model`. The
built-in networks are the modules of this package (imported on first use, see
:class:`SegDeepLib.registry.Registry`).
"""

from __future__ import annotations

from typing import Any, Callable

from SegDeepLib.registry import Registry

NETWORKS = Registry("network", package="SegDeepLib.models")


def register_model(name: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Class/function decorator adding a network constructor under ``name``."""
    return NETWORKS.register(name)


def available_models() -> list[str]:
    return NETWORKS.names()


def build_model(config: dict[str, Any]):
    """Build a network from ``{"name": ..., **constructor kwargs}``."""
    return NETWORKS.build(config)
