"""Name -> builder registries: the public vocabulary of the benchmark.

Each registry maps a short name (the value users type in `key=value`) to a builder
and a one-line description, which `bench list` prints and tests iterate over.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Registry:
    """A named set of builders: `reg.register(name, help)(fn)`, then `reg.get(name)`."""

    kind: str  # what the entries are, e.g. "activation"; used in error messages
    entries: dict[str, tuple[Callable[..., Any], str]] = field(default_factory=dict)

    def register(self, name: str, help: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        def deco(fn: Callable[..., Any]) -> Callable[..., Any]:
            if name in self.entries:
                raise ValueError(f"{self.kind} {name!r} registered twice")
            self.entries[name] = (fn, help)
            return fn

        return deco

    def get(self, name: str) -> Callable[..., Any]:
        if name not in self.entries:
            raise KeyError(f"unknown {self.kind} {name!r}; valid: {', '.join(self.entries)}")
        return self.entries[name][0]

    def help(self, name: str) -> str:
        return self.entries[name][1]

    def names(self) -> list[str]:
        return list(self.entries)

    def __contains__(self, name: object) -> bool:
        return name in self.entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.entries)
