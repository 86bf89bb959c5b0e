"""Ray actors for the aligners that hold a model: one model load per actor, chunks spread over the actors.

Where the model runs (``--device`` and the executor):

- no Ray (``--workers 0``): one worker in this process, on CUDA when asked (or ``auto`` and a GPU is seen);
- Ray with GPUs in the cluster (a joined cluster) and ``--device cuda`` or ``auto``: one actor per GPU,
  each with ``num_gpus=1``;
- Ray without GPUs (the embedded local Ray starts with ``num_gpus=0``) and a GPU on this machine: one worker
  in this process, on that GPU;
- otherwise CPU actors: the executor's workers split into actors of up to 4 threads each (the model is loaded
  once per actor, so a few multi-threaded actors beat many single-threaded ones in memory).

Actors are restarted and their chunk retried when they die (chunks are independent), and are killed when the
stage ends so that their resources go back to the job.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from prealign.errors import InputError
from prealign.lexicon.aligners.base import NEURAL, LocalWorkers, WordAligner, WorkerPool
from prealign.pipelines.executor import Executor, LocalExecutor

THREADS_PER_CPU_ACTOR = 4


class _Host:
    """The actor: builds its worker once and calls its methods; a failed build is re-raised on each call."""

    def __init__(self, factory: Callable[[str], Any], device: str, threads: int) -> None:
        self.error: BaseException | None = None
        try:
            self.worker = factory(device)
        except Exception as exc:  # raised again by call(), where the driver sees it as the task's error
            self.error = exc
        if "torch" in sys.modules:  # the worker's model runs on torch: as many threads as the actor has CPUs
            sys.modules["torch"].set_num_threads(threads)

    def call(self, method: str, *args: Any) -> Any:
        if self.error is not None:
            raise self.error
        return getattr(self.worker, method)(*args)


class RayActors:
    """A :class:`~prealign.lexicon.aligners.base.WorkerPool` of Ray actors; results come back in input order."""

    def __init__(self, actors: int, device: str, num_cpus: float, num_gpus: float, threads: int) -> None:
        self.workers = max(1, actors)
        self.device = device
        self.num_cpus = num_cpus
        self.num_gpus = num_gpus
        self.threads = threads

    def run(self, factory: Callable[[str], Any], method: str, args: Sequence[tuple]) -> Iterator[Any]:
        import ray
        from ray.util import ActorPool

        host = ray.remote(_Host).options(
            num_cpus=self.num_cpus, num_gpus=self.num_gpus, max_restarts=2, max_task_retries=2
        )
        actors = [host.remote(factory, self.device, self.threads) for _ in range(min(self.workers, len(args)))]
        pool = ActorPool(actors)
        try:
            yield from pool.map(lambda actor, a: actor.call.remote(method, *a), list(args))
        except ray.exceptions.RayTaskError as exc:
            if isinstance(exc.cause, InputError):
                raise exc.cause from None
            raise
        finally:
            _drain(pool)
            for actor in actors:
                ray.kill(actor)


def _drain(pool: Any) -> None:
    """Fetch what is still in flight after a failure, so that Ray never logs those errors as unhandled later."""
    while pool.has_next():
        try:
            pool.get_next_unordered()
        except Exception:  # the first error was raised to the caller already
            pass


def pool_for(aligner: WordAligner, executor: Executor) -> WorkerPool | None:
    """Where ``aligner``'s model runs (see the module docstring); None for aligners without a model."""
    if aligner.name not in NEURAL:
        return None
    from prealign.lexicon.aligners.neural import neural_device

    requested = aligner.config.device  # type: ignore[attr-defined]
    if isinstance(executor, LocalExecutor):
        return LocalWorkers(neural_device(requested))
    import ray

    resources = ray.cluster_resources()
    gpus = int(resources.get("GPU", 0))
    if requested != "cpu" and gpus > 0:
        return RayActors(gpus, "cuda", num_cpus=1, num_gpus=1, threads=1)
    if requested != "cpu" and neural_device(requested) == "cuda":
        return LocalWorkers("cuda")
    cpus = max(1, min(executor.workers, int(resources.get("CPU", 1))))
    threads = min(THREADS_PER_CPU_ACTOR, cpus)
    return RayActors(max(1, cpus // threads), "cpu", num_cpus=threads, num_gpus=0, threads=threads)
