"""A pretraining run killed (SIGKILL-like: ``os._exit``, no cleanup runs) between any two file-system writes of a
checkpoint resumes to exactly the run that was never interrupted, and its model is readable at every point."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

import pytest
import torch
from test_pretrain import _corpus, _make_shards

from prealign.train import checkpoint
from prealign.train.pretrain import PretrainConfig, pretrain, read_metrics

CONFIG = PretrainConfig(steps=6, batch_size=4, warmup=1, eval_every=3, eval_batches=1, save_every=2, device="cpu")

# the child: run pretraining, counting every write of the second checkpoint, and die at write number KILL
CHILD = """
import json, os, shutil, sys
import torch
torch.set_num_threads(1)
from prealign.train import checkpoint
from prealign.train.pretrain import PretrainConfig, pretrain

shards, run, config, kill = sys.argv[1], sys.argv[2], json.loads(sys.argv[3]), int(sys.argv[4])
config["betas"] = tuple(config["betas"])
saves, ops = [0], [0]

def counted(fn):
    def wrapper(*args, **kwargs):
        if saves[0] == 2:
            if ops[0] == kill:
                os._exit(137)
            ops[0] += 1
        return fn(*args, **kwargs)
    return wrapper

for module, name in [(checkpoint, "write_bytes"), (os, "rename"), (os, "replace"), (os, "link"),
                     (shutil, "rmtree"), (shutil, "copyfile")]:
    setattr(module, name, counted(getattr(module, name)))
save = checkpoint.save_checkpoint

def save_counted(*args, **kwargs):
    saves[0] += 1
    try:
        return save(*args, **kwargs)
    finally:
        if saves[0] == 2:
            print(json.dumps({"writes": ops[0]}))

checkpoint.save_checkpoint = save_counted
pretrain(shards, run, PretrainConfig(**config), progress=False)
"""


def child(shards: Path, run: Path, kill: int) -> subprocess.CompletedProcess:
    args = [sys.executable, "-c", CHILD, str(shards), str(run), json.dumps(asdict(CONFIG)), str(kill)]
    return subprocess.run(args, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def shards(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("kills")
    _make_shards(root / "shards", root, _corpus(root / "corpus.txt", docs=120), n_shards=3)
    return root / "shards"


def weights(run: Path) -> dict[str, torch.Tensor]:
    return checkpoint.load_model(run)[0].state_dict()


def test_a_kill_between_any_two_writes_of_a_checkpoint_resumes_exactly(
    shards: Path, tmp_path: Path, one_torch_thread: None
) -> None:
    reference = tmp_path / "reference"
    pretrain(shards, reference, CONFIG, progress=False)
    counting = child(shards, tmp_path / "count", kill=-1)
    assert counting.returncode == 0, counting.stderr
    writes = json.loads(counting.stdout.strip().splitlines()[-1])["writes"]
    # 4 files, the rename into place, retiring the step-2 checkpoint (rename, remove), two top-level links
    assert writes >= 8, writes
    expected = [r for r in read_metrics(reference)]
    for kill in range(writes):
        run = tmp_path / f"kill-{kill}"
        died = child(shards, run, kill)
        assert died.returncode == 137, (kill, died.stderr)
        model, info = checkpoint.load_model(run)  # readable at every point: the step-2 or the step-4 model
        assert info["step"] in (2, 4), (kill, info["step"])
        pretrain(shards, run, CONFIG, progress=False, resume=True)
        assert read_metrics(run) == expected or _close(read_metrics(run), expected), kill
        for (name, a), b in zip(weights(reference).items(), weights(run).values(), strict=True):
            torch.testing.assert_close(a, b, rtol=0, atol=1e-6, msg=f"kill at write {kill}: {name}")
        names = sorted(p.name for p in run.iterdir())
        assert names == ["checkpoint-00000006", "metrics.jsonl", "model.safetensors", "run.json"], (kill, names)


def _close(got: list[dict], want: list[dict]) -> bool:
    """Metrics equal but for timing fields."""
    strip = lambda rows: [{k: v for k, v in r.items() if k != "tokens_per_s"} for r in rows]  # noqa: E731
    return strip(got) == strip(want)
