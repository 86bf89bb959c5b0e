"""How pure lexicon code runs work in parallel without knowing about Ray.

An executor puts large objects where workers can read them (``put``) and runs a function over a list of
argument tuples (``map``), returning results in input order; ``map_handles`` returns handles that stay where
they were computed, to be passed to a later ``map`` or fetched with ``get``. :class:`LocalExecutor` runs
everything in this process; ``prealign.pipelines.ray_runtime.RayExecutor`` runs tasks on Ray.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any, Protocol


class Executor(Protocol):
    """The four operations pure code needs for parallel work."""

    workers: int

    def put(self, obj: Any) -> Any: ...

    def get(self, handles: Sequence[Any]) -> list[Any]: ...

    def map(self, func: Callable[..., Any], args: Iterable[tuple]) -> list[Any]: ...

    def map_handles(self, func: Callable[..., Any], args: Iterable[tuple]) -> list[Any]: ...


class LocalExecutor:
    """Runs every task in this process, in order."""

    workers = 1

    def put(self, obj: Any) -> Any:
        return obj

    def get(self, handles: Sequence[Any]) -> list[Any]:
        return list(handles)

    def map(self, func: Callable[..., Any], args: Iterable[tuple]) -> list[Any]:
        return [func(*a) for a in args]

    def map_handles(self, func: Callable[..., Any], args: Iterable[tuple]) -> list[Any]:
        return self.map(func, args)
