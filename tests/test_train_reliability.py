"""Training commands on bad input and faults: conflicting options, run directories in use or already full, edited
checkpoints, damaged shards, nonsense numbers, divergence, a full disk, and the file modes of what they write.

Every failure is one line on stderr (``error: PATH: message``), exit code 2, and leaves nothing behind.
"""

from __future__ import annotations

import fcntl
import json
import math
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from conftest import cli, mount_tmpfs, unmount
from test_clone import english_lines
from test_pretrain import SUBJECTS, _corpus, _make_shards

from prealign.train import checkpoint
from prealign.train.pretrain import PretrainConfig, pretrain

LEXICON_HEADER = "src\ttgt\tcount\tp_tgt_given_src\tp_src_given_tgt\tscore\n"
# small, fast runs; the CLI's own defaults are for real models
PRE = ("--steps", 4, "--batch-size", 4, "--warmup", 1, "--eval-every", 0, "--device", "cpu", "-q")
INIT = ("--steps", 3, "--batch-size", 4, "--device", "cpu", "-q")


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Shards and their tokenizer, a lexicon of words of the corpus, an align-init run (mini) and a pretraining
    run stopped at step 2 of 4 (a checkpoint to resume)."""
    root = tmp_path_factory.mktemp("reliability")
    texts = _corpus(root / "corpus.txt", docs=120)
    _make_shards(root / "shards", root, texts, n_shards=3)
    words = sorted({w for s in SUBJECTS for w in s.split()} | {"sees", "likes", "eats", "apple", "ball", "house"})
    lexicon = root / "lexicon.tsv"
    lexicon.write_text(LEXICON_HEADER + "".join(f"{w}\t{w.upper()}\t5\t0.5\t0.5\t0.5\n" for w in words), "utf-8")
    init = root / "init-mini"
    cli("train", "align-init", "--lexicon", lexicon, "--tokenizer", root / "tokenizer.json", "-o", init, *INIT,
        "--config", "mini")  # fmt: skip
    half = root / "half"
    config = PretrainConfig(steps=4, batch_size=4, warmup=1, eval_every=0, save_every=0, device="cpu")
    pretrain(root / "shards", half, config, progress=False, stop_after=2)
    return {"root": root, "shards": root / "shards", "tokenizer": root / "tokenizer.json", "lexicon": lexicon,
            "init": init, "half": half}  # fmt: skip


def snapshot(directory: Path) -> dict[str, bytes]:
    """Every file under ``directory`` (hidden ones too), by relative path."""
    return {str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


def fails(*args: object, names: object) -> str:
    """Run the CLI expecting exit code 2 and one line on stderr that names ``names``; returns the line."""
    res = cli(*args, code=2)
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), res.stderr
    assert str(names) in lines[0], lines[0]
    return lines[0]


def pretrain_cli(data: dict[str, Path], out: Path, *extra: object) -> tuple[object, ...]:
    return ("train", "pretrain", "--shards", data["shards"], "-o", out, *PRE, *extra)


def align_cli(data: dict[str, Path], out: Path, *extra: object, lexicon: Path | None = None) -> tuple[object, ...]:
    lex = lexicon or data["lexicon"]
    return ("train", "align-init", "--lexicon", lex, "--tokenizer", data["tokenizer"], "-o", out, *INIT, *extra)


# --- 1. --config against --init -------------------------------------------------------------------------------


def test_pretrain_config_that_contradicts_the_init_is_refused(data: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "run"
    line = fails(*pretrain_cli(data, out, "--init", data["init"], "--config", "tiny"), names=data["init"])
    assert "--config tiny does not match the init run's model (mini" in line
    assert not out.exists()


def test_pretrain_without_config_takes_the_init_model_and_records_it(data: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "run"
    cli(*pretrain_cli(data, out, "--init", data["init"], "--steps", 1))
    info = checkpoint.read_run(out)
    assert info["config"]["model"] == "mini" and info["model"]["dim"] == 256
    cli(*pretrain_cli(data, tmp_path / "same", "--init", data["init"], "--steps", 1, "--config", "mini"))


# --- 2. run directories: existing runs, concurrent runs, resume against the record ----------------------------


@pytest.mark.parametrize("command", ["pretrain", "align-init"])
def test_fresh_run_into_an_existing_run_needs_overwrite(data: dict[str, Path], tmp_path: Path, command: str) -> None:
    out = tmp_path / "run"
    args = pretrain_cli(data, out) if command == "pretrain" else align_cli(data, out)
    cli(*args)
    before = snapshot(out)
    line = fails(*args, "--seed", 1, names=out)
    assert "holds a run already" in line and "--overwrite" in line
    assert snapshot(out) == before
    cli(*args, "--seed", 1, "--overwrite")
    assert snapshot(out)["model.safetensors"] != before["model.safetensors"]


@pytest.mark.parametrize("command", ["pretrain", "align-init"])
def test_second_run_into_a_busy_run_directory_fails_at_once(
    data: dict[str, Path], tmp_path: Path, command: str
) -> None:
    out = tmp_path / "run"
    out.mkdir()
    fd = os.open(out, os.O_RDONLY | os.O_DIRECTORY)  # what a running training command holds
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        args = pretrain_cli(data, out) if command == "pretrain" else align_cli(data, out)
        line = fails(*args, names=out)
        assert "another training command is writing this run directory" in line
        assert list(out.iterdir()) == []
    finally:
        os.close(fd)
    cli(*args)  # the lock is gone with the process that held it


def ck(run: Path) -> Path:
    """The run's checkpoint directory (the newest)."""
    found = checkpoint.latest_checkpoint(run)
    assert found is not None, run
    return found


def copy_half(data: dict[str, Path], tmp_path: Path) -> Path:
    run = tmp_path / "half"
    shutil.copytree(data["half"], run)
    return run


@pytest.mark.parametrize("option", [("--steps", 5), ("--lr", 0.01), ("--config", "mini"), ("--seed", 3)])
def test_resume_refuses_options_that_differ_from_the_record(
    data: dict[str, Path], tmp_path: Path, option: tuple[str, object]
) -> None:
    run = copy_half(data, tmp_path)
    before = snapshot(run)
    line = fails("train", "pretrain", "--shards", data["shards"], "-o", run, "--resume", "-q", *option,
                 names=ck(run) / "run.json")  # fmt: skip
    assert f"{option[0]} " in line and "differs from the run's" in line
    assert snapshot(run) == before


def test_resume_takes_the_recorded_options(data: dict[str, Path], tmp_path: Path) -> None:
    run = copy_half(data, tmp_path)
    res = cli("train", "pretrain", "--shards", data["shards"], "-o", run, "--resume", "-q")
    assert json.loads(res.stdout)["step"] == 4 and json.loads((ck(run) / "state.json").read_text())["step"] == 4
    other = tmp_path / "other-shards"
    shutil.copytree(data["shards"], other)
    shutil.copytree(data["half"], tmp_path / "half2")
    fails("train", "pretrain", "--shards", other, "-o", tmp_path / "half2", "--resume", "-q", names="--shards")


def _edit_json(path: Path, edit) -> None:  # noqa: ANN001 - a small helper
    obj = json.loads(path.read_text("utf-8"))
    edit(obj)
    path.write_text(json.dumps(obj), "utf-8")


STATE_EDITS = {
    "negative step": lambda s: s.update(step=-3),
    "step beyond --steps": lambda s: s.update(step=1000),
    "step as a string": lambda s: s.update(step="2"),
    "missing data": lambda s: s.pop("data"),
    "rows as a float": lambda s: s["data"].update(rows_consumed=1.5),
    "rng not bytes": lambda s: s["rng"].update(torch=[999]),
    "a short rng": lambda s: s["rng"].update(torch=[1, 2, 3]),
    "not an object": lambda s: s.clear(),
}


@pytest.mark.parametrize("edit", list(STATE_EDITS))
def test_resume_refuses_an_edited_state(data: dict[str, Path], tmp_path: Path, edit: str) -> None:
    run = copy_half(data, tmp_path)
    _edit_json(ck(run) / "state.json", STATE_EDITS[edit])
    before = snapshot(run)
    fails("train", "pretrain", "--shards", data["shards"], "-o", run, "--resume", "-q", names=ck(run) / "state.json")
    assert snapshot(run) == before


@pytest.mark.parametrize(
    "name,text",
    [
        ("state.json", '{"step": 1000, "tokens": NaN}'),
        ("state.json", '{"step": 2, "data": '),
        ("state.json", "[1, 2]"),
        ("run.json", "[]"),
        ("run.json", '{"model": {"dim": NaN}}'),
    ],
)
def test_resume_refuses_invalid_json(data: dict[str, Path], tmp_path: Path, name: str, text: str | bytes) -> None:
    run = copy_half(data, tmp_path)
    (ck(run) / name).write_bytes(text if isinstance(text, bytes) else text.encode())
    before = snapshot(run)
    fails("train", "pretrain", "--shards", data["shards"], "-o", run, "--resume", "-q", names=ck(run) / name)
    assert snapshot(run) == before


# --- 3. corrupt files, edited vocabularies, nonsense numbers, divergence, devices, lexicons, corpora -----------


@pytest.mark.parametrize("name", ["model.safetensors", "optimizer.safetensors"])
@pytest.mark.parametrize("damage", ["truncated", "garbage"])
def test_resume_refuses_corrupt_safetensors(data: dict[str, Path], tmp_path: Path, name: str, damage: str) -> None:
    run = copy_half(data, tmp_path)
    raw = (ck(run) / name).read_bytes()
    (ck(run) / name).write_bytes(raw[: len(raw) // 2] if damage == "truncated" else b"\x07" * 64)
    before = snapshot(run)
    line = fails("train", "pretrain", "--shards", data["shards"], "-o", run, "--resume", "-q", names=ck(run) / name)
    assert "corrupt or truncated safetensors" in line
    assert snapshot(run) == before


def test_init_with_corrupt_weights_is_refused(data: dict[str, Path], tmp_path: Path) -> None:
    init = tmp_path / "init"
    shutil.copytree(data["init"], init)
    raw = (init / "model.safetensors").read_bytes()
    (init / "model.safetensors").write_bytes(raw[:1000])
    out = tmp_path / "run"
    fails(*pretrain_cli(data, out, "--init", init), names=init / "model.safetensors")
    assert not out.exists()


@pytest.mark.parametrize("vocab", [200, 400])
def test_edited_vocab_size_that_no_longer_fits_is_refused(data: dict[str, Path], tmp_path: Path, vocab: int) -> None:
    run = copy_half(data, tmp_path)
    _edit_json(ck(run) / "run.json", lambda r: r["model"].update(vocab_size=vocab))
    line = fails("train", "pretrain", "--shards", data["shards"], "-o", run, "--resume", "-q", names=run)
    assert "model.safetensors" in line and "shape" in line
    _edit_json(ck(run) / "run.json", lambda r: r["model"].update(vocab_size="300"))
    fails("train", "pretrain", "--shards", data["shards"], "-o", run, "--resume", "-q", names=ck(run) / "run.json")


def test_init_smaller_than_the_shards_tokenizer_is_refused(data: dict[str, Path], tmp_path: Path) -> None:
    """An init whose run.json and weights were both cut to a smaller vocabulary than the shards' tokenizer."""
    init = tmp_path / "init"
    shutil.copytree(data["init"], init)
    model, info = checkpoint.load_model(init)
    small = type(model)(type(model.config)(**{**model.config.to_dict(), "vocab_size": 100}))
    checkpoint.save_model(init, small, {k: v for k, v in info.items() if k != "model"})
    line = fails(*pretrain_cli(data, tmp_path / "run", "--init", init), names=init / "run.json")
    assert "model vocabulary 100 <" in line


BAD_NUMBERS = ["-1", "nan", "inf", "-inf"]


@pytest.mark.parametrize("value", BAD_NUMBERS)
@pytest.mark.parametrize(
    "command,option",
    [("pretrain", "--lr"), ("align-init", "--lr"), ("align-init", "--temperature"), ("align-init", "--align-weight")],
)
def test_nonsense_numbers_are_refused(
    data: dict[str, Path], tmp_path: Path, command: str, option: str, value: str
) -> None:
    out = tmp_path / "run"
    args = pretrain_cli(data, out) if command == "pretrain" else align_cli(data, out)
    line = fails(*args, option, value, names=option.removeprefix("--").replace("-", "_"))
    assert "must be a finite number >" in line and line.endswith(f"got {float(value)!r}")
    assert not out.exists()


def test_pretrain_that_diverges_stops_and_keeps_the_last_good_checkpoint(data: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "run"
    line = fails(*pretrain_cli(data, out, "--lr", "1e30", "--save-every", 1, "--warmup", 0), names=out)
    assert "training diverged" in line and "the last checkpoint is kept" in line
    state = json.loads((ck(out) / "state.json").read_text())
    model, _ = checkpoint.load_model(out)
    assert state["step"] >= 1 and all(torch.isfinite(p).all() for p in model.parameters())
    metrics = out / "metrics.jsonl"  # no NaN row is logged
    rows = [json.loads(x) for x in metrics.read_text().splitlines()] if metrics.exists() else []
    assert all(math.isfinite(r["loss"]) for r in rows)


def test_align_init_that_diverges_leaves_nothing(data: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "run"
    line = fails(*align_cli(data, out, "--lr", "1e30"), names=out)
    assert "training diverged" in line
    assert not out.exists()


@pytest.mark.parametrize("command", ["pretrain", "align-init"])
@pytest.mark.parametrize("device", ["gpu7", "cuda"])
def test_unusable_device_is_one_line(data: dict[str, Path], tmp_path: Path, command: str, device: str) -> None:
    if device == "cuda" and torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    out = tmp_path / "run"
    args = pretrain_cli(data, out) if command == "pretrain" else align_cli(data, out)
    line = fails(*args, "--device", device, names=repr(device))
    assert ("unknown device 'gpu7': use auto, cpu, cuda or cuda:N" if device == "gpu7" else "no CUDA GPU") in line
    assert not out.exists()


@pytest.mark.parametrize("case", ["empty", "no usable entry"])
def test_align_init_on_a_lexicon_with_no_usable_entry(data: dict[str, Path], tmp_path: Path, case: str) -> None:
    lexicon = tmp_path / "lexicon.tsv"
    out = tmp_path / "run"
    if case == "empty":
        lexicon.write_text(LEXICON_HEADER, "utf-8")
        extra: tuple[object, ...] = ()
    else:
        shutil.copy(data["lexicon"], lexicon)
        extra = ("--min-count", 100)
    line = fails(*align_cli(data, out, *extra, lexicon=lexicon), names=lexicon)
    assert "0 usable entries" in line
    assert not out.exists()
    out.mkdir()  # an empty run directory stays empty
    fails(*align_cli(data, out, *extra, lexicon=lexicon), names=lexicon)
    assert list(out.iterdir()) == []


def test_align_init_failing_mid_run_leaves_no_metrics_in_a_fresh_directory(
    data: dict[str, Path], tmp_path: Path
) -> None:
    out = tmp_path / "run"
    out.mkdir()
    fails(*align_cli(data, out, "--lr", "1e30"), names=out)
    assert list(out.iterdir()) == []


@pytest.mark.parametrize("case", ["missing", "binary", "nul bytes", "empty", "too few lines"])
def test_experiment_clone_on_an_unusable_corpus(tmp_path: Path, case: str) -> None:
    corpus = tmp_path / "corpus.txt"
    content = {
        "binary": b"\x89PNG\r\n\x1a\n\xff\xfe\x00\x01",
        "nul bytes": b"one\x00two three\n" * 300,
        "empty": b"",
        "too few lines": "\n".join(english_lines(20)).encode(),
    }
    if case != "missing":
        corpus.write_bytes(content[case])
    for out in (tmp_path / "exp", tmp_path / "empty-exp"):
        if out.name == "empty-exp":
            out.mkdir()
        fails("experiment", "clone", "--corpus", corpus, "-o", out, "--config", "test", "-q", names=corpus)
        assert list(out.iterdir()) == [] if out.name == "empty-exp" else not out.exists()


# --- 4. damaged shards ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("damage", ["flipped byte", "truncated", "missing"])
def test_damaged_shards_fail_before_the_first_step(data: dict[str, Path], tmp_path: Path, damage: str) -> None:
    shards = tmp_path / "shards"
    shutil.copytree(data["shards"], shards)
    shard = shards / "shard-00001.arrow"
    raw = bytearray(shard.read_bytes())
    if damage == "flipped byte":
        raw[len(raw) // 2] ^= 0x01
        shard.write_bytes(bytes(raw))
    elif damage == "truncated":
        shard.write_bytes(bytes(raw[: len(raw) // 2]))
    else:
        shard.unlink()
    out = tmp_path / "run"
    line = fails("train", "pretrain", "--shards", shards, "-o", out, *PRE, names=shards)
    assert "shard-00001.arrow" in line
    assert not out.exists()


# --- 5. a full disk ---------------------------------------------------------------------------------------------


def _checkpoint_bytes(run: Path) -> int:
    return sum(
        (ck(run) / n).stat().st_size for n in ("model.safetensors", "optimizer.safetensors", "run.json", "state.json")
    )


@pytest.fixture
def small_tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A mount point for a tmpfs the test sizes (:func:`conftest.mount_tmpfs`), unmounted afterwards."""
    mnt = tmp_path / "mnt"
    yield mnt
    unmount(mnt)


def test_full_disk_while_checkpointing_keeps_the_previous_checkpoint(
    data: dict[str, Path], tmp_path: Path, small_tmpfs: Path
) -> None:
    reference = tmp_path / "reference"
    cli(*pretrain_cli(data, reference, "--steps", 1))
    size = _checkpoint_bytes(reference) * 3 // 2 + 64 * 1024  # one checkpoint and its metrics fit, two do not
    mount_tmpfs(small_tmpfs, size)
    out = small_tmpfs / "run"
    res = cli(*pretrain_cli(data, out, "--steps", 2, "--save-every", 1), code=2)
    assert res.stderr == f"error: {out}: no space left on device\n"
    # the step-1 checkpoint is whole: the same bytes as a run that stopped there, and nothing half-written beside it
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in reference.iterdir())
    state = json.loads((ck(out) / "state.json").read_text())
    assert state["step"] == 1
    for name in ("model.safetensors", "optimizer.safetensors"):
        assert (ck(out) / name).read_bytes() == (ck(reference) / name).read_bytes()
    checkpoint.load_model(out)


# --- 6. file modes ----------------------------------------------------------------------------------------------


@pytest.fixture(params=[(0o022, 0o755, 0o644), (0o077, 0o700, 0o600)], ids=["umask022", "umask077"])
def umask(request: pytest.FixtureRequest) -> Iterator[tuple[int, int]]:
    mask, dir_mode, file_mode = request.param
    before = os.umask(mask)
    yield dir_mode, file_mode
    os.umask(before)


def _modes(directory: Path) -> set[int]:
    return {p.stat().st_mode & 0o777 for p in directory.iterdir()}


def test_clone_make_honours_the_umask(tmp_path: Path, umask: tuple[int, int]) -> None:
    corpus = tmp_path / "en.txt"
    corpus.write_text("\n".join(english_lines(30)) + "\n", "utf-8")
    out = tmp_path / "clone"
    cli("clone", "make", corpus, "-o", out)
    assert out.stat().st_mode & 0o777 == umask[0]
    assert _modes(out) == {umask[1]}


def test_train_run_directories_honour_the_umask(data: dict[str, Path], tmp_path: Path, umask: tuple[int, int]) -> None:
    for out, args in [(tmp_path / "init", align_cli(data, tmp_path / "init")),
                      (tmp_path / "pre", pretrain_cli(data, tmp_path / "pre", "--steps", 1))]:  # fmt: skip
        cli(*args)
        assert out.stat().st_mode & 0o777 == umask[0]
        files = [p for p in out.rglob("*") if p.is_file()]
        assert {p.stat().st_mode & 0o777 for p in files} == {umask[1]}, sorted(p.name for p in files)
        dirs = [p for p in out.rglob("*") if p.is_dir()]  # the checkpoint directory of a pretraining run
        assert {p.stat().st_mode & 0o777 for p in dirs} <= {umask[0]}


def test_resume_of_an_old_layout_run_is_refused(data: dict[str, Path], tmp_path: Path) -> None:
    """prealign-data 0.1 kept state.json and optimizer.safetensors beside the weights; its data order was another."""
    run = copy_half(data, tmp_path)
    for p in ck(run).iterdir():
        if p.name in ("state.json", "optimizer.safetensors"):
            shutil.copyfile(p, run / p.name)
    shutil.rmtree(ck(run))
    line = fails("train", "pretrain", "--shards", data["shards"], "-o", run, "--resume", "-q", names=run)
    assert "nothing to resume" in line and "--init RUN" in line
