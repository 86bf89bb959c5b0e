"""Progress bars for job stages (tqdm on stderr; silent when disabled)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import TypeVar

from tqdm import tqdm

T = TypeVar("T")


class Progress:
    """One bar per stage; ``enabled=False`` makes every method a no-op."""

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled

    def iterate(self, items: Iterable[T], desc: str, unit: str = "batch") -> Iterator[T]:
        """Yield ``items`` while counting them on a bar."""
        if not self.enabled:
            yield from items
            return
        with tqdm(desc=desc, unit=unit, leave=True, dynamic_ncols=True) as bar:
            for item in items:
                yield item
                bar.update(1)

    @contextmanager
    def stage(self, desc: str, total: int | None = None) -> Iterator[Callable[[], None]]:
        """A stage with ``total`` steps; the context gives a function that advances it by one."""
        if not self.enabled:
            yield lambda: None
            return
        with tqdm(desc=desc, total=total if total is not None else 1, leave=True, dynamic_ncols=True) as bar:
            yield lambda: bar.update(1)
            if total is None:
                bar.update(1)
