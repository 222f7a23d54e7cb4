"""A name → object registry, one per extension point (environments, engines, advantages, losses).

Why: users swap these through config by name (as in verl's registries), and a typo must fail at
config time with the list of valid names rather than deep inside a run.
"""

from __future__ import annotations

from typing import Callable, Generic, TypeVar

from empo2.config_error import ConfigError

T = TypeVar("T")


class Registry(Generic[T]):
    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def add(obj: T) -> T:
            if name in self._items:
                raise KeyError(f"{self.kind} {name!r} is already registered")
            self._items[name] = obj
            return obj

        return add

    def get(self, name: str) -> T:
        if name not in self._items:
            raise KeyError(f"unknown {self.kind} {name!r}; registered: {', '.join(sorted(self._items))}")
        return self._items[name]

    def check(self, key: str, name: str) -> None:
        """Raise a ConfigError naming `key` when `name` is not registered."""
        if name not in self._items:
            raise ConfigError(f"{key}: unknown {self.kind} {name!r}; registered: {', '.join(sorted(self._items))}")

    def names(self) -> list[str]:
        return sorted(self._items)
