"""A small name -> object registry (the CRF backends register themselves in one)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Generic, TypeVar

from SegDeepLib.errors import SegDeepError

T = TypeVar("T")


class Registry(Generic[T]):
    """Named objects in registration order; ``get`` names the known ones when one is missing."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str, item: T) -> T:
        if name in self._items and self._items[name] is not item:
            raise SegDeepError(f"{self.kind} '{name}': registered twice")
        self._items[name] = item
        return item

    def get(self, name: str) -> T:
        if name not in self._items:
            raise SegDeepError(f"{self.kind} '{name}': unknown; use one of {', '.join(self)}")
        return self._items[name]

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def items(self) -> list[tuple[str, T]]:
        return list(self._items.items())
