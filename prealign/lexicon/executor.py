"""How pure lexicon code runs work in parallel without knowing about Ray.

An executor puts large objects where workers can read them (``put``) and runs a function over a list of
argument tuples (``map``), returning results in input order; ``map_handles`` returns handles that stay where
they were computed, to be passed to a later ``map`` or fetched with ``get``. ``actor`` starts a stateful
worker on the machine of the calling process, which keeps data in its own memory between calls (state that
should not live in the driver process, yet shares its fate and its disk). :class:`LocalExecutor` runs
everything in this process; ``prealign.pipelines.ray_runtime.RayExecutor`` runs tasks and actors on Ray, and
retries a task when its worker dies.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any, Protocol


class Actor(Protocol):
    """A stateful worker: calls run one at a time, in the order they were made."""

    def call(self, method: str, *args: Any) -> Any:
        """A handle to ``getattr(worker, method)(*args)`` (fetch it with the executor's ``get``)."""
        ...

    def stop(self) -> None:
        """End the worker and free what it holds."""
        ...


class Executor(Protocol):
    """The operations pure code needs for parallel work."""

    workers: int

    def put(self, obj: Any) -> Any: ...

    def get(self, handles: Sequence[Any]) -> list[Any]: ...

    def map(self, func: Callable[..., Any], args: Iterable[tuple]) -> list[Any]: ...

    def map_handles(self, func: Callable[..., Any], args: Iterable[tuple]) -> list[Any]: ...

    def actor(self, factory: Callable[..., Any], *args: Any) -> Actor:
        """A stateful worker built by ``factory(*args)`` on this machine (no CPU reserved for it)."""
        ...


class LocalActor:
    """A stateful worker in this process: each call runs at once; its handle is the result."""

    def __init__(self, worker: Any) -> None:
        self.worker = worker

    def call(self, method: str, *args: Any) -> Any:
        return getattr(self.worker, method)(*args)

    def stop(self) -> None:
        self.worker = None


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

    def actor(self, factory: Callable[..., Any], *args: Any) -> LocalActor:
        return LocalActor(factory(*args))
