"""The switch table: for each source word of a lexicon, its translations and how to choose among them."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import numpy as np

from prealign.errors import InputError

if TYPE_CHECKING:
    from pathlib import Path

    import polars as pl

Choice = Literal["weighted", "uniform", "top"]
CHOICES = ("weighted", "uniform", "top")
LabelPolicy = Literal["input-only", "switched"]
LABEL_POLICIES = ("input-only", "switched")
LINE_BREAKS = "\t\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"  # a tab, and what str.splitlines() splits on


@dataclass(frozen=True)
class SwitchConfig:
    """How words are switched.

    ``ratio``: probability that a word with a lexicon entry is switched. ``choice``: ``weighted`` draws a
    translation with probability proportional to p(tgt|src), ``uniform`` draws uniformly, ``top`` always
    takes the best-scored one. ``min_prob`` / ``min_count`` filter lexicon rows first. ``labels``: see
    ``prealign.codeswitch.switch``.
    """

    ratio: float
    seed: int = 0
    choice: Choice = "weighted"
    min_prob: float = 0.0
    min_count: int = 1
    labels: LabelPolicy = "input-only"

    def __post_init__(self) -> None:
        if not 0.0 <= self.ratio <= 1.0:
            raise ValueError(f"ratio must be in [0, 1], not {self.ratio}")
        if self.choice not in CHOICES:
            raise ValueError(f"choice must be one of {CHOICES}, not {self.choice!r}")
        if self.labels not in LABEL_POLICIES:
            raise ValueError(f"labels must be one of {LABEL_POLICIES}, not {self.labels!r}")
        if self.min_count < 0 or not 0.0 <= self.min_prob <= 1.0:
            raise ValueError("min_count must be >= 0 and min_prob in [0, 1]")


@dataclass
class SwitchTable:
    """Source words (lowercase) -> entry index; each entry's translations with cumulative choice weights.

    ``cum`` holds, for entry e, ``e + cumulative weight`` of its translations (so one ``searchsorted`` over
    all entries picks a translation from ``e + u``); ``start[e]`` is the entry's first translation.
    """

    index: dict[str, int]
    translations: list[str]
    cum: np.ndarray
    start: np.ndarray
    fingerprint: str = ""  # identifies the table's content (word caches keyed by it stay valid)

    def __len__(self) -> int:
        return len(self.index)

    def pick(self, entries: np.ndarray, u: np.ndarray) -> np.ndarray:
        """Translation index for each entry given uniform draws ``u`` in [0, 1)."""
        pos = np.searchsorted(self.cum, entries + u, side="right")
        return np.minimum(np.maximum(pos, self.start[entries]), self.start[entries + 1] - 1)


def build_table(lexicon: pl.DataFrame, config: SwitchConfig) -> SwitchTable:
    """A switch table from a lexicon (columns of ``prealign.lexicon.score.LEXICON_SCHEMA``)."""
    import polars as pl  # here, so that workers that only switch do not import polars

    lex = lexicon.filter((pl.col("count") >= config.min_count) & (pl.col("p_tgt_given_src") >= config.min_prob))
    lex = lex.with_columns(pl.col("src").str.to_lowercase().alias("key"))
    lex = lex.filter(pl.col("key").str.len_chars() > 0, pl.col("tgt").str.len_chars() > 0)
    lex = lex.sort(["key", "score", "count", "tgt"], descending=[False, True, True, False])
    if config.choice == "top":
        lex = lex.unique("key", keep="first", maintain_order=True)
    keys = lex["key"].to_list()
    weights = lex["p_tgt_given_src"].to_numpy().astype(np.float64)
    if config.choice != "weighted":
        weights = np.ones(len(keys))
    index: dict[str, int] = {}
    starts: list[int] = []
    for i, k in enumerate(keys):
        if k not in index:
            index[k] = len(index)
            starts.append(i)
    start = np.array([*starts, len(keys)], dtype=np.int64)
    entry_of_row = np.repeat(np.arange(len(index)), np.diff(start))
    totals = np.add.reduceat(weights, start[:-1]) if len(keys) else np.zeros(0)
    share = np.where(totals[entry_of_row] > 0, weights / np.maximum(totals[entry_of_row], 1e-300), 0.0)
    running = np.cumsum(share) - np.repeat(np.cumsum(share)[start[:-1]] - share[start[:-1]], np.diff(start))
    cum = entry_of_row + np.minimum(running, 1.0)
    cum[start[1:] - 1] = entry_of_row[start[1:] - 1] + 1.0  # each entry's last translation closes at e + 1
    translations = lex["tgt"].to_list()
    digest = hashlib.sha256("\x00".join(keys + translations).encode("utf-8"))
    digest.update(cum.tobytes())
    return SwitchTable(index, translations, cum, start, digest.hexdigest())


def check_words(lexicon: pl.DataFrame, path: Path) -> None:
    """InputError naming the first row whose ``src`` or ``tgt`` holds a tab or a line break: switching it in would
    put a tab or a line break into the text (possible in Parquet and JSON-lines lexicons, never in TSV)."""
    import polars as pl

    pattern = "[" + "".join(f"\\x{{{ord(c):x}}}" for c in LINE_BREAKS) + "]"
    found = []
    for column in ("src", "tgt"):
        hits = lexicon.select(pl.col(column).str.contains(pattern).fill_null(False).arg_true()).to_series()
        if len(hits):
            found.append((int(hits[0]), column))
    if found:
        row, column = min(found)
        word = lexicon[column][row]
        raise InputError(
            f"row {row + 1}: {column} word {word!r} holds a tab or a line break; a lexicon word cannot", path
        )
