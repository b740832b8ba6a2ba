"""A name -> builder table, so a new encoder, connector, modality or LM family is one added file."""
from __future__ import annotations

import importlib
import pkgutil
from typing import Callable, Generic, TypeVar

from epalm.common.errors import UnknownNameError, did_you_mean

T = TypeVar("T")


class Registry(Generic[T]):
    """discover: packages whose every module, in every subpackage, is imported (and so registers itself) at the
    first lookup; lazily, so that a plugin module may import the code that imports the registry."""

    def __init__(self, kind: str, discover: tuple[str, ...] = ()):
        self.kind = kind
        self._builders: dict[str, Callable[..., T]] = {}
        self._discover = tuple(discover)

    def _discover_plugins(self) -> None:
        packages, self._discover = self._discover, ()
        for name in packages:
            package = importlib.import_module(name)
            for info in pkgutil.walk_packages(package.__path__, prefix=f"{package.__name__}."):
                importlib.import_module(info.name)

    def register(self, name: str) -> Callable[[Callable[..., T]], Callable[..., T]]:
        def wrap(builder: Callable[..., T]) -> Callable[..., T]:
            if name in self._builders:
                raise KeyError(f"{self.kind} '{name}' is registered twice")
            self._builders[name] = builder
            return builder

        return wrap

    def add(self, name: str, entry: T) -> None:
        """Register a plain entry (not a builder): `get(name)` returns it as it is."""
        self.register(name)(entry)

    def get(self, name: str) -> Callable[..., T]:
        self._discover_plugins()
        if name not in self._builders:
            known = ", ".join(sorted(self._builders)) or "none"
            raise UnknownNameError(f"unknown {self.kind} '{name}'{did_you_mean(name, self._builders)}; registered: {known}")
        return self._builders[name]

    def build(self, name: str, *args, **kwargs) -> T:
        return self.get(name)(*args, **kwargs)

    def names(self) -> list[str]:
        self._discover_plugins()
        return sorted(self._builders)

    def __contains__(self, name: str) -> bool:
        self._discover_plugins()
        return name in self._builders
