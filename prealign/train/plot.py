"""Loss curves of runs as a PNG: train and eval loss against step, one panel per stage, one colour per run.

Rows of ``run_dir/metrics.jsonl`` are grouped by their ``stage`` field (rows without one count as
``pretrain``); a row with ``loss`` is a train point, one with ``eval_loss`` an eval point. Stages such as
``align-init`` get their own panel, so their steps are not mixed with pretraining's.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from prealign.errors import InputError

METRICS = "metrics.jsonl"


def _rows(run_dir: Path) -> list[dict[str, Any]]:
    path = run_dir / METRICS
    if not path.is_file():
        raise InputError("no metrics.jsonl to plot", run_dir)
    rows = []
    for n, line in enumerate(path.read_text("utf-8").splitlines(), 1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except ValueError as exc:
                raise InputError(f"bad JSON: {exc}", path, n) from exc
    return rows


def plot_run(run_dir: Path | str | Sequence[Path | str], output: Path | str | None = None) -> Path:
    """Plot one run or several (one line per run) into ``output`` (default: first run's ``loss.png``)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = [Path(run_dir)] if isinstance(run_dir, str | Path) else [Path(r) for r in run_dir]
    if not runs:
        raise InputError("no run directory given")
    data = {run: _rows(run) for run in runs}
    stages: list[str] = []
    for rows in data.values():
        for row in rows:
            stage = str(row.get("stage", "pretrain"))
            if stage not in stages and ("loss" in row or "eval_loss" in row):
                stages.append(stage)
    if not stages:
        raise InputError("metrics.jsonl holds no loss rows", runs[0])
    fig, axes = plt.subplots(1, len(stages), figsize=(6.5 * len(stages), 4.5), squeeze=False)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    names = [r.name or str(r) for r in runs]
    if len(set(names)) < len(names):
        names = [str(r) for r in runs]
    for ax, stage in zip(axes[0], stages, strict=True):
        for i, run in enumerate(runs):
            rows = [r for r in data[run] if str(r.get("stage", "pretrain")) == stage]
            colour = colours[i % len(colours)]
            label = names[i] if len(runs) > 1 else ""
            train = [(r["step"], r["loss"]) for r in rows if r.get("loss") is not None]
            evals = [(r["step"], r["eval_loss"]) for r in rows if r.get("eval_loss") is not None]
            if train:
                ax.plot(*zip(*train, strict=True), color=colour, lw=1.2, label=f"{label} train".strip())
            if evals:
                ax.plot(
                    *zip(*evals, strict=True),
                    color=colour,
                    lw=1.2,
                    ls="--",
                    marker="o",
                    ms=3,
                    label=f"{label} eval".strip(),
                )
        ax.set_title(stage)
        ax.set_xlabel("step")
        ax.set_ylabel("loss")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    out = Path(output) if output is not None else runs[0] / "loss.png"
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out
