"""``train eval``: the next-token loss of a run's model over every row of a shard directory, and optionally its
translation retrieval per layer on a lexicon's pairs.

The shards are checked against their manifest first, and the run's tokenizer sha256 must equal the shards'. The
loss is the token-weighted mean over every label token of every row (labels as stored, -100 no loss); the model
is widened to the longest row (rotary tables are computed, not stored), so no row is cut.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from prealign.errors import InputError
from prealign.shards import MANIFEST, iter_rows, read_manifest, read_rows, require_sound_shards
from prealign.train.checkpoint import check_model_fits, load_model, run_tokenizer
from prealign.train.runtime import resolve_device

MAX_PAIRS = 5000


def longest_row(directory: Path, manifest: dict[str, Any]) -> int:
    """The most tokens in one row of the shard directory (0 when it holds none)."""
    longest = 0
    for entry in manifest["shards"]:
        rows = read_rows(Path(directory) / entry["file"], entry["rows"])
        if len(rows):
            longest = max(longest, int(np.diff(rows.offsets).max()))
    return longest


def lexicon_pairs(path: Path, max_pairs: int | None = MAX_PAIRS) -> list[tuple[str, str]]:
    """Distinct (src, tgt) pairs of a lexicon: the ``max_pairs`` of highest count (ties: file order), all with
    None or 0. Fewer than two pairs is an InputError (retrieval needs a choice)."""
    from prealign.lexicon.lexicon_io import read_lexicon

    df, _ = read_lexicon(path)
    df = df.unique(subset=["src", "tgt"], keep="first", maintain_order=True)
    if max_pairs and len(df) > max_pairs:
        df = df.sort("count", descending=True, maintain_order=True).head(max_pairs)
    pairs = list(zip(df["src"].to_list(), df["tgt"].to_list(), strict=True))
    if len(pairs) < 2:
        raise InputError(f"the lexicon has {len(pairs)} pair(s); translation retrieval needs at least 2", path)
    return pairs


def _rows(directory: Path) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    for row in iter_rows(directory):
        yield row["input_ids"], row["labels"]


def evaluate_run(
    run_dir: Path | str,
    shards_dir: Path | str,
    lexicon: Path | str | None = None,
    batch_size: int = 8,
    device: str = "auto",
    max_pairs: int | None = MAX_PAIRS,
    progress: bool = False,
) -> dict[str, Any]:
    """Loss (and, with ``lexicon``, per-layer retrieval) of the run in ``run_dir`` on ``shards_dir``; see the
    module doc. ``progress`` shows a bar over the rows (on stderr). Returns a JSON-ready dict."""
    from prealign.train.model_metrics import rows_loss, translation_retrieval

    run_dir, shards_dir = Path(run_dir), Path(shards_dir)
    if batch_size < 1:
        raise InputError(f"batch size must be at least 1, got {batch_size}")
    torch_device = resolve_device(device)
    manifest = read_manifest(shards_dir)
    tok = manifest["tokenizer"]
    shards_sha = tok.get("sha256")
    if not shards_sha:
        raise InputError("the manifest records no tokenizer sha256", shards_dir / MANIFEST)
    require_sound_shards(shards_dir)
    pairs = lexicon_pairs(Path(lexicon), max_pairs) if lexicon is not None else None
    longest = longest_row(shards_dir, manifest)
    model, info = load_model(run_dir, torch_device, max(longest, 1))
    check_model_fits(model, info, tok, run_dir)
    tokenizer = run_tokenizer(run_dir, info)[0] if pairs is not None else None

    cuda = torch_device.type == "cuda"

    def autocast() -> Any:
        return torch.autocast(device_type="cuda", dtype=torch.bfloat16) if cuda else nullcontext()

    pad_id = int(tok.get("pad_id") or tok.get("eot_id") or 0)
    n_rows = sum(int(s["rows"]) for s in manifest["shards"])
    rows = tqdm(_rows(shards_dir), total=n_rows, desc="eval", unit="row", disable=not progress, dynamic_ncols=True)
    loss, tokens = rows_loss(model, rows, batch_size, model.config.max_seq_len, torch_device, autocast, pad_id)
    rows.close()
    result: dict[str, Any] = {
        "run": str(run_dir),
        "shards": str(shards_dir),
        "loss": loss,
        "tokens": tokens,
        "rows": n_rows,
        "device": str(torch_device),
        "dtype": "bfloat16" if cuda else "float32",
    }
    if pairs is not None:
        layers = translation_retrieval(model, tokenizer, pairs)
        result["retrieval"] = {
            "pairs": len(pairs),
            "chance": layers[0]["chance"],
            "layers": [{k: r[k] for k in ("name", "accuracy", "pair_cosine", "random_cosine")} for r in layers],
        }
    return result


def format_result(result: dict[str, Any]) -> str:
    """The text report: ``loss``, ``tokens``, then the retrieval table (one line per layer) when there is one."""
    loss = result["loss"]
    lines = [f"loss {loss:.4f}" if loss is not None else "loss none (no label tokens)", f"tokens {result['tokens']}"]
    retrieval = result.get("retrieval")
    if retrieval:
        lines.append(f"retrieval: {retrieval['pairs']} pairs, chance {retrieval['chance']:.4f}")
        lines.append(f"{'layer':<10} {'accuracy':>8} {'pair_cos':>8} {'rand_cos':>8}")
        for r in retrieval["layers"]:
            lines.append(f"{r['name']:<10} {r['accuracy']:>8.4f} {r['pair_cosine']:>8.4f} {r['random_cosine']:>8.4f}")
    return "\n".join(lines)
