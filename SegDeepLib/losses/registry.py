"""Loss registry: ``build_loss({"name": "dice", **kwargs})``.

Names: ``ce``, ``weighted_ce``, ``cbce``, ``dice``, ``batch_dice``, ``jaccard``, ``dice_ce``,
``deep_supervision`` (see :func:`available_losses`).
"""

from __future__ import annotations

from typing import Any, Callable

from SegDeepLib.errors import SegDeepError

_REGISTRY: dict[str, Callable[..., Any]] = {}


def register_loss(name: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Class decorator adding a loss constructor under ``name``."""

    def decorator(factory: Callable[..., Any]) -> Callable[..., Any]:
        if name in _REGISTRY and _REGISTRY[name] is not factory:
            raise ValueError(f"loss name {name!r} registered twice")
        _REGISTRY[name] = factory
        return factory

    return decorator


def available_losses() -> list[str]:
    """Names accepted by :func:`build_loss`."""
    _import_builtin_losses()
    return sorted(_REGISTRY)


def build_loss(config: Any):
    """Build a loss from ``{"name": ..., **kwargs}`` (a plain name string is accepted too)."""
    _import_builtin_losses()
    if isinstance(config, str):
        config = {"name": config}
    if not isinstance(config, dict):
        raise SegDeepError(f"loss config must be a mapping with a 'name'; got {config!r}")
    config = dict(config)
    name = config.pop("name", None)
    if name not in _REGISTRY:
        raise SegDeepError(f"unknown loss {name!r}; available: {', '.join(sorted(_REGISTRY))}")
    try:
        return _REGISTRY[name](**config)
    except TypeError as exc:
        raise SegDeepError(f"loss {name!r}: bad parameters ({exc})") from None


def _import_builtin_losses() -> None:
    from SegDeepLib.losses import compound, cross_entropy, overlap  # noqa: F401
