"""The switch table: for each source word of a lexicon, its translations and how to choose among them.

A multi-way lexicon (a ``tgt_lang`` column) gives a word translations in several languages: a switched word's
language is drawn among the languages that have it, in proportion to the language weights, then the
translation within that language by ``SwitchConfig.choice``. Both steps are folded into one cumulative weight
per translation (language share x within-language share), so one draw picks the translation.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
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
LANG_COLUMN = "tgt_lang"  # prealign.lexicon.lexicon_io.LANG_COLUMN (not imported: workers need no polars)
DEFAULT_LANGUAGE = "unknown"  # the language of a lexicon without a tgt_lang column, unless one is named


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
    ``languages`` names the target languages; ``lang[t]`` is translation t's language (an index into it) and
    ``entry_langs[e, l]`` says whether entry e has a translation in language l.
    """

    index: dict[str, int]
    translations: list[str]
    cum: np.ndarray
    start: np.ndarray
    fingerprint: str = ""  # identifies the table's content (word caches keyed by it stay valid)
    languages: list[str] = field(default_factory=lambda: [DEFAULT_LANGUAGE])
    lang: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    entry_langs: np.ndarray = field(default_factory=lambda: np.zeros((0, 1), bool))

    def __len__(self) -> int:
        return len(self.index)

    def pick(self, entries: np.ndarray, u: np.ndarray) -> np.ndarray:
        """Translation index for each entry given uniform draws ``u`` in [0, 1)."""
        pos = np.searchsorted(self.cum, entries + u, side="right")
        return np.minimum(np.maximum(pos, self.start[entries]), self.start[entries + 1] - 1)


def table_languages(lexicon: pl.DataFrame, lang_weights: Mapping[str, float] | None = None) -> dict[str, float]:
    """The languages of a lexicon with their weights: those of ``lang_weights`` in its order (one the lexicon has
    no row in is kept, with no translation), then the lexicon's other ones alphabetically with weight 1."""
    found = sorted(set(lexicon[LANG_COLUMN].to_list())) if LANG_COLUMN in lexicon.columns else [DEFAULT_LANGUAGE]
    weights = {lang: float(w) for lang, w in (lang_weights or {}).items()}
    return {**weights, **{lang: 1.0 for lang in found if lang not in weights}}


def build_table(
    lexicon: pl.DataFrame, config: SwitchConfig, lang_weights: Mapping[str, float] | None = None
) -> SwitchTable:
    """A switch table from a lexicon (columns of ``prealign.lexicon.score.LEXICON_SCHEMA``, and ``tgt_lang`` when
    multi-way); ``lang_weights`` as :func:`table_languages` (a language of weight 0 is never switched into)."""
    import polars as pl  # here, so that workers that only switch do not import polars

    weight_of = table_languages(lexicon, lang_weights)
    languages = list(weight_of)
    lex = lexicon.filter((pl.col("count") >= config.min_count) & (pl.col("p_tgt_given_src") >= config.min_prob))
    if LANG_COLUMN in lex.columns:
        rank = pl.col(LANG_COLUMN).replace_strict(languages, list(range(len(languages))), return_dtype=pl.Int64)
    else:
        rank = pl.lit(0, dtype=pl.Int64)
    lex = lex.with_columns(pl.col("src").str.to_lowercase().alias("key"), rank.alias("lang"))
    lex = lex.filter(pl.col("key").str.len_chars() > 0, pl.col("tgt").str.len_chars() > 0)
    lang_weight = np.array([weight_of[lang] for lang in languages], dtype=np.float64)
    lex = lex.filter(pl.col("lang").is_in(np.flatnonzero(lang_weight > 0).tolist()))
    lex = lex.sort(["key", "lang", "score", "count", "tgt"], descending=[False, False, True, True, False])
    if config.choice == "top":
        lex = lex.unique(["key", "lang"], keep="first", maintain_order=True)
    keys = lex["key"].to_list()
    lang = lex["lang"].to_numpy().astype(np.int64)
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
    # groups: the rows of one (entry, language); within a group, shares as with one language
    new_group = np.ones(len(keys), dtype=bool)
    new_group[1:] = (entry_of_row[1:] != entry_of_row[:-1]) | (lang[1:] != lang[:-1])
    group_start = np.flatnonzero(new_group)
    group_of_row = np.cumsum(new_group) - 1
    totals = np.add.reduceat(weights, group_start) if len(keys) else np.zeros(0)
    share = np.where(totals[group_of_row] > 0, weights / np.maximum(totals[group_of_row], 1e-300), 0.0)
    # each language's share of its entry: its weight over the weights of the entry's languages (one language: 1)
    group_weight = lang_weight[lang[group_start]]
    entry_total = np.add.reduceat(group_weight, np.searchsorted(group_start, start[:-1])) if len(keys) else share
    share = share * lang_weight[lang] / entry_total[entry_of_row]
    entry_langs = np.zeros((len(index), len(languages)), dtype=bool)
    entry_langs[entry_of_row, lang] = True
    running = np.cumsum(share) - np.repeat(np.cumsum(share)[start[:-1]] - share[start[:-1]], np.diff(start))
    cum = entry_of_row + np.minimum(running, 1.0)
    cum[start[1:] - 1] = entry_of_row[start[1:] - 1] + 1.0  # each entry's last translation closes at e + 1
    translations = lex["tgt"].to_list()
    digest = hashlib.sha256("\x00".join(keys + translations + languages).encode("utf-8"))
    digest.update(cum.tobytes())
    digest.update(lang.tobytes())
    return SwitchTable(index, translations, cum, start, digest.hexdigest(), languages, lang, entry_langs)


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
