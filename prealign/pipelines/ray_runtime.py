"""Starting, joining and using Ray: the embedded loopback-only instance and the Ray executor.

With no address, an embedded Ray starts for the job and stops with it. It binds to 127.0.0.1 only: Ray has
no authentication, and by default it listens on the machine's network address. Setting
``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` before Ray starts makes it keep its services on loopback, and
``address="local"`` makes sure a stale ``/tmp/ray/ray_current_cluster`` is never joined by accident.
With an address (``auto`` or ``host:port``), the job joins that cluster and leaves it running. A ``host:port``
is first tried with a plain TCP connection, bounded by ``PREALIGN_RAY_CONNECT_TIMEOUT`` seconds (default 30):
an address where nothing answers is one line and exit code 2, not a Ray client waiting for minutes. A
loopback address is joined as given: Ray would otherwise replace 127.0.0.1 by the machine's network address.

Fault tolerance: tasks are retried (``max_retries``) when their worker or node dies, and Ray rebuilds lost task
outputs from their lineage. Every task of a job reads and writes the job's work directory, so on a cluster
that directory must be on storage every node sees (docs/cluster.md).
"""

from __future__ import annotations

import ipaddress
import os
import socket
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from functools import cache, wraps
from typing import Any

from prealign.errors import InputError
from prealign.pipelines import faults

LOOPBACK = "127.0.0.1"
TASK_RETRIES = 3  # per task, for worker or node loss (application errors are not retried)
CONNECT_TIMEOUT_ENV = "PREALIGN_RAY_CONNECT_TIMEOUT"
CONNECT_TIMEOUT_S = 30.0


def connect_timeout() -> float:
    """Seconds to wait for a cluster's address to answer (``PREALIGN_RAY_CONNECT_TIMEOUT``, default 30)."""
    value = os.environ.get(CONNECT_TIMEOUT_ENV, "")
    try:
        return float(value) if value.strip() else CONNECT_TIMEOUT_S
    except ValueError:
        raise InputError(f"{CONNECT_TIMEOUT_ENV}={value!r} is not a number of seconds") from None


def _host_port(address: str) -> tuple[str, int] | None:
    """``(host, port)`` of a ``host:port`` address (``[v6]:port`` too); None for ``auto`` and the like."""
    address = address.removeprefix("ray://")
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit():
        return None
    return host.strip("[]"), int(port)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_reachable(address: str) -> None:
    """Refuse, within :func:`connect_timeout` seconds, a ``host:port`` where nothing accepts a connection."""
    hp = _host_port(address)
    if hp is None:
        return
    timeout = connect_timeout()
    try:
        socket.create_connection(hp, timeout=timeout).close()
    except TimeoutError:
        raise InputError(f"cannot reach the Ray cluster at {address}: no answer within {timeout:g} s") from None
    except OSError as exc:
        raise InputError(f"cannot reach the Ray cluster at {address}: {exc.strerror or exc}") from None


def _quiet_env() -> None:
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@contextmanager
def ray_session(address: str | None = None, workers: int | None = None) -> Iterator[RayExecutor]:
    """A Ray connection for one job: embedded on loopback when ``address`` is None, else joined."""
    _quiet_env()
    if address is not None:
        check_reachable(address)
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
            hp = _host_port(address)
            if hp is not None and is_loopback(hp[0]):  # Ray would rewrite it to the machine's network address
                ray._private.ray_constants.ENABLE_RAY_CLUSTER = False
            ray.init(address=address, log_to_driver=False, logging_level="ERROR")
        started = True
    try:
        cpus = max(1, int(ray.cluster_resources().get("CPU", 1)))
        yield RayExecutor(min(workers or cpus, cpus))
    finally:
        if started:
            ray.shutdown()


def executor_for(address: str | None, workers: int | None):
    """The executor of a job: ``workers == 0`` runs in this process without Ray, else a Ray session."""
    if workers == 0:
        from contextlib import nullcontext

        from prealign.pipelines.executor import LocalExecutor

        return nullcontext(LocalExecutor())
    return ray_session(address, workers)


def _hooked(func: Callable[..., Any]) -> Callable[..., Any]:
    @wraps(func)
    def task(*args: Any) -> Any:
        # a stage task arrives wrapped (stages.run_task(work, func, ...)): the hook names the task's function
        faults.worker_call(args[1].__name__ if getattr(func, "runs_stage_task", False) else func.__name__)
        return func(*args)

    return task


@cache
def _remote(func: Callable[..., Any]) -> Any:
    import ray

    return ray.remote(num_cpus=1, max_retries=TASK_RETRIES)(_hooked(func))


class RayExecutor:
    """Runs each task as a Ray task (one CPU each, retried on worker loss); results come back in order."""

    def __init__(self, workers: int) -> None:
        self.workers = max(1, workers)
        self._in_flight: list[Any] = []  # tasks submitted and maybe not finished, across every call

    def put(self, obj: Any) -> Any:
        import ray

        return ray.put(obj)

    def get(self, handles: Sequence[Any]) -> list[Any]:
        import ray

        return ray.get(list(handles))

    def map_handles(self, func: Callable[..., Any], args: Iterable[tuple]) -> list[Any]:
        """Submit with at most ``workers`` tasks of this executor in flight (counting those of earlier calls);
        handles stay in the object store."""
        remote = _remote(func)
        handles: list[Any] = []
        for a in args:
            self._wait_for_a_slot()
            ref = remote.remote(*a)
            handles.append(ref)
            self._in_flight.append(ref)
        return handles

    def _wait_for_a_slot(self) -> None:
        import ray

        if len(self._in_flight) >= self.workers:
            _, self._in_flight = ray.wait(self._in_flight, num_returns=len(self._in_flight), timeout=0)
        while len(self._in_flight) >= self.workers:
            _, self._in_flight = ray.wait(self._in_flight, num_returns=1)

    def map(self, func: Callable[..., Any], args: Iterable[tuple]) -> list[Any]:
        return self.get(self.map_handles(func, args))
