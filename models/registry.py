"""A name -> builder table, so a new encoder, connector or LM family is one added file."""
from __future__ import annotations

from typing import Callable, Generic, TypeVar

from models.user_errors import UnknownNameError, did_you_mean

T = TypeVar("T")


class Registry(Generic[T]):
    def __init__(self, kind: str):
        self.kind = kind
        self._builders: dict[str, Callable[..., T]] = {}

    def register(self, name: str) -> Callable[[Callable[..., T]], Callable[..., T]]:
        def wrap(builder: Callable[..., T]) -> Callable[..., T]:
            if name in self._builders:
                raise KeyError(f"{self.kind} '{name}' is registered twice")
            self._builders[name] = builder
            return builder

        return wrap

    def get(self, name: str) -> Callable[..., T]:
        if name not in self._builders:
            known = ", ".join(sorted(self._builders)) or "none"
            raise UnknownNameError(f"unknown {self.kind} '{name}'{did_you_mean(name, self._builders)}; registered: {known}")
        return self._builders[name]

    def build(self, name: str, *args, **kwargs) -> T:
        return self.get(name)(*args, **kwargs)

    def names(self) -> list[str]:
        return sorted(self._builders)

    def __contains__(self, name: str) -> bool:
        return name in self._builders
