"""Test hooks for fault-tolerance tests: stop a job at a named point, or slow a worker down.

They do nothing unless their environment variables are set, which only the tests do:

- ``PREALIGN_TEST_PAUSE=POINT[:N]``: the N-th time (default 1) the driver reaches ``POINT`` it creates the file
  named by ``PREALIGN_TEST_PAUSE_FILE`` and sleeps, so that the test can ``kill -9`` it right there. The
  points are named where :func:`reached` is called (``switch-shard``, ``switch-commit``; for the stage jobs
  ``stage-NAME`` after each task of stage NAME the driver awaited (``stage-prepare``, ``stage-em_estep``, ...,
  :mod:`prealign.pipelines.stages`), ``extract-corpus`` and ``em-iteration``).
- ``PREALIGN_TEST_WORKER_DELAY=SECONDS``: every Ray task and actor call in a process that sees the variable
  (a test sets it for one node's processes only) first creates a file in ``PREALIGN_TEST_WORKER_MARKS`` and
  then sleeps, so that the test can kill that node while work is in flight there (a stage task's mark is named
  by its function, e.g. ``estep_task``).
"""

from __future__ import annotations

import os
import time
from collections import Counter
from pathlib import Path

PAUSE = "PREALIGN_TEST_PAUSE"
PAUSE_FILE = "PREALIGN_TEST_PAUSE_FILE"
WORKER_DELAY = "PREALIGN_TEST_WORKER_DELAY"
WORKER_MARKS = "PREALIGN_TEST_WORKER_MARKS"

_seen: Counter[str] = Counter()


def reached(point: str) -> None:
    """Driver side: pause here (forever) when ``PREALIGN_TEST_PAUSE`` names this point and occurrence."""
    wanted = os.environ.get(PAUSE)
    if not wanted:
        return
    name, _, nth = wanted.partition(":")
    if name != point:
        return
    _seen[point] += 1
    if _seen[point] == int(nth or 1):
        Path(os.environ[PAUSE_FILE]).write_text(f"{os.getpid()}\n", encoding="utf-8")
        while True:
            time.sleep(60)


def worker_call(what: str) -> None:
    """Worker side: leave a mark and sleep when ``PREALIGN_TEST_WORKER_DELAY`` is set in this process."""
    delay = os.environ.get(WORKER_DELAY)
    if not delay:
        return
    marks = os.environ.get(WORKER_MARKS)
    if marks:
        Path(marks, f"{what}-{os.getpid()}-{time.monotonic_ns()}").touch()
    time.sleep(float(delay))
