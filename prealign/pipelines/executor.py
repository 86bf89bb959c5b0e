"""How the jobs run their stage tasks: in this process, or on Ray, behind one small interface.

An executor puts large objects where workers can read them (``put``) and runs a function over a list of
argument tuples (``map``), returning results in input order; ``map_handles`` returns handles, fetched with
``get``. :class:`LocalExecutor` runs everything in this process, at once; ``ray_runtime.RayExecutor`` runs
each call as a Ray task (one CPU, retried when its worker dies), at most ``workers`` in flight.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any, Protocol


class Executor(Protocol):
    """The operations the jobs need for parallel work."""

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
