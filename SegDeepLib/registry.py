"""Named constructors, the one plug-in mechanism of the library (networks, losses).

::

    NETWORKS = Registry("network", package="SegDeepLib.models")

    @NETWORKS.register("vnet")
    class VNet(nn.Module): ...

    NETWORKS.build({"name": "vnet", "in_channels": 2})

The registry imports nothing itself: on first use it imports every module of ``package`` (the
built-in plug-ins, which register themselves), so heavy modules (torch) load only when needed and
no module imports the registry back in a circle. Any other module may register more names.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Iterator
from typing import Any, Callable

from SegDeepLib.errors import SegDeepError

Factory = Callable[..., Any]


class Registry:
    """Name -> constructor; ``build({"name": ..., **kwargs})`` with clear errors."""

    def __init__(self, kind: str, package: str | None = None) -> None:
        self.kind = kind
        self.package = package
        self.factories: dict[str, Factory] = {}

    def register(self, name: str) -> Callable[[Factory], Factory]:
        """Class/function decorator adding a constructor under ``name``."""

        def decorator(factory: Factory) -> Factory:
            if self.factories.get(name, factory) is not factory:
                raise ValueError(f"{self.kind} name {name!r} registered twice")
            self.factories[name] = factory
            return factory

        return decorator

    def add(self, name: str, item: Any) -> Any:
        """Register ``item`` itself (an object, not a constructor) under ``name``."""
        return self.register(name)(item)

    def get(self, name: str) -> Any:
        """What is registered as ``name``; the error names the known ones."""
        self._import_builtins()
        if name not in self.factories:
            raise SegDeepError(f"{self.kind} '{name}': unknown; use one of {', '.join(self)}")
        return self.factories[name]

    def items(self) -> list[tuple[str, Any]]:
        """(name, item) in registration order."""
        self._import_builtins()
        return list(self.factories.items())

    def __iter__(self) -> Iterator[str]:
        return iter(name for name, _ in self.items())

    def __contains__(self, name: object) -> bool:
        self._import_builtins()
        return name in self.factories

    def names(self) -> list[str]:
        self._import_builtins()
        return sorted(self.factories)

    def build(self, config: dict[str, Any]) -> Any:
        """Build from ``{"name": ..., **constructor kwargs}``."""
        self._import_builtins()
        config = dict(config)
        name = config.pop("name", None)
        if name not in self.factories:
            raise SegDeepError(
                f"unknown {self.kind} {name!r}; available: {', '.join(sorted(self.factories))}"
            )
        try:
            return self.factories[name](**config)
        except TypeError as exc:
            raise SegDeepError(f"{self.kind} {name!r}: bad parameters ({exc})") from None

    def _import_builtins(self) -> None:
        """Import every module of ``package`` (cheap once imported: ``sys.modules`` hits)."""
        if self.package is None:
            return
        package = importlib.import_module(self.package)
        for info in pkgutil.iter_modules(package.__path__):
            importlib.import_module(f"{self.package}.{info.name}")
