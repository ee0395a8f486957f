"""Loss registry: ``build_loss({"name": "dice", **kwargs})``.

Names: ``ce``, ``weighted_ce``, ``cbce``, ``dice``, ``batch_dice``, ``jaccard``, ``dice_ce``,
``deep_supervision`` (see :func:`available_losses`). The built-in losses are the modules of this
package (imported on first use, see :class:`SegDeepLib.registry.Registry`).
"""

from __future__ import annotations

from typing import Any, Callable

from SegDeepLib.errors import SegDeepError
from SegDeepLib.registry import Registry

LOSSES = Registry("loss", package="SegDeepLib.losses")


def register_loss(name: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Class decorator adding a loss constructor under ``name``."""
    return LOSSES.register(name)


def available_losses() -> list[str]:
    """Names accepted by :func:`build_loss`."""
    return LOSSES.names()


def build_loss(config: Any):
    """Build a loss from ``{"name": ..., **kwargs}`` (a plain name string is accepted too)."""
    if isinstance(config, str):
        config = {"name": config}
    if not isinstance(config, dict):
        raise SegDeepError(f"loss config must be a mapping with a 'name'; got {config!r}")
    return LOSSES.build(config)
