"""Starting, joining and using Ray: the embedded loopback-only instance and the Ray executor.

With no address, an embedded Ray starts for the job and stops with it. It binds to 127.0.0.1 only: Ray has
no authentication, and by default it listens on the machine's network address. Setting
``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` before Ray starts makes it keep its services on loopback, and
``address="local"`` makes sure a stale ``/tmp/ray/ray_current_cluster`` is never joined by accident.
With an address (``auto`` or ``host:port``), the job joins that cluster and leaves it running.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from functools import cache
from typing import Any

LOOPBACK = "127.0.0.1"


def _quiet_env() -> None:
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@contextmanager
def ray_session(address: str | None = None, workers: int | None = None) -> Iterator[RayExecutor]:
    """A Ray connection for one job: embedded on loopback when ``address`` is None, else joined."""
    _quiet_env()
    if address is None:  # for Ray's own subprocesses; a joined cluster's driver must stay reachable
        os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
        if "ray" not in sys.modules:  # Ray's default for a new local cluster, said explicitly: no notice printed
            os.environ.setdefault("RAY_AUTH_MODE", "token")
    import ray

    started = False
    if not ray.is_initialized():
        if address is None:
            ray._private.ray_constants.ENABLE_RAY_CLUSTER = False  # the env var is read once, when ray is imported
            ray.init(
                address="local",
                num_cpus=workers or os.cpu_count() or 1,
                num_gpus=0,
                include_dashboard=False,
                _node_ip_address=LOOPBACK,
                log_to_driver=False,
                logging_level="ERROR",
                configure_logging=False,
                runtime_env={"env_vars": {"TOKENIZERS_PARALLELISM": "false"}},
            )
        else:
            ray.init(address=address, log_to_driver=False, logging_level="ERROR")
        started = True
    try:
        cpus = int(ray.cluster_resources().get("CPU", 1))
        yield RayExecutor(workers or cpus)
    finally:
        if started:
            ray.shutdown()


def executor_for(address: str | None, workers: int | None):
    """The executor of a job: ``workers == 0`` runs in this process without Ray, else a Ray session."""
    if workers == 0:
        from contextlib import nullcontext

        from prealign.lexicon.executor import LocalExecutor

        return nullcontext(LocalExecutor())
    return ray_session(address, workers)


@cache
def _remote(func: Callable[..., Any]) -> Any:
    import ray

    return ray.remote(num_cpus=1, max_retries=3)(func)


class RayExecutor:
    """Runs each task as a Ray task (one CPU each, retried on worker loss); results come back in order."""

    def __init__(self, workers: int) -> None:
        self.workers = max(1, workers)

    def put(self, obj: Any) -> Any:
        import ray

        return ray.put(obj)

    def get(self, handles: Sequence[Any]) -> list[Any]:
        import ray

        return ray.get(list(handles))

    def map_handles(self, func: Callable[..., Any], args: Iterable[tuple]) -> list[Any]:
        """Submit with at most ``workers`` tasks in flight; handles stay in the object store."""
        import ray

        remote = _remote(func)
        handles: list[Any] = []
        pending: list[Any] = []
        for a in args:
            if len(pending) >= self.workers:
                _, pending = ray.wait(pending, num_returns=1)
            ref = remote.remote(*a)
            handles.append(ref)
            pending.append(ref)
        return handles

    def map(self, func: Callable[..., Any], args: Iterable[tuple]) -> list[Any]:
        return self.get(self.map_handles(func, args))
