"""Multi-word lexicon entries (``--max-span``): span detection on hand-checkable links, phrase counting, and
extract-lexicon end to end on a corpus where 'everybody' is always 'tout le monde'."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from conftest import cli

from prealign.lexicon.em import BuiltinConfig
from prealign.lexicon.lexicon_io import read_lexicon
from prealign.lexicon.spans import find_spans
from prealign.lexicon.symmetrize import link_keys, symmetrize
from prealign.pipelines.corpus_stages import build_corpus
from prealign.pipelines.count_stage import count_file, count_task, merge_counts, summed_pairs
from prealign.pipelines.encode_stage import chunk_file, read_sentences
from prealign.pipelines.executor import LocalExecutor
from prealign.pipelines.extract import ExtractJob, ParallelInput, extract_lexicon, stats_path
from prealign.pipelines.progress import Progress
from prealign.pipelines.stages import StageRunner
from prealign.text import SegmenterConfig


def keys(*links: tuple[int, int, int]) -> np.ndarray:
    """Sorted link keys of (sentence, i, j) triples."""
    if not links:
        return np.zeros(0, np.int64)
    s, i, j = (np.array(c, dtype=np.int64) for c in zip(*links, strict=True))
    return np.sort(link_keys(s, i, j))


def spans(precise: np.ndarray, dense: np.ndarray, max_span: int) -> list[tuple[int, ...]]:
    found = find_spans(precise, dense, max_span)
    cols = (found.sentence, found.src_start, found.src_end, found.tgt_start, found.tgt_end)
    return [tuple(int(v) for v in row) for row in zip(*cols, strict=True)]


# --- span detection -------------------------------------------------------------------------------------------


def test_one_source_word_to_three_contiguous_targets() -> None:
    # sentence 0: source 0 -> targets 0,1,2 (anchored by 0-1), source 1 -> target 3 alone
    dense = keys((0, 0, 0), (0, 0, 1), (0, 0, 2), (0, 1, 3))
    precise = keys((0, 0, 1), (0, 1, 3))
    found = find_spans(precise, dense, 3)
    assert spans(precise, dense, 3) == [(0, 0, 1, 0, 3)]
    assert found.replaced.tolist() == [True, False]  # 0-1 becomes the phrase, 1-3 stays a word pair


def test_non_contiguous_run_is_rejected() -> None:
    dense = keys((0, 0, 0), (0, 0, 2))
    assert spans(keys((0, 0, 0)), dense, 3) == []
    assert not find_spans(keys((0, 0, 0)), dense, 3).replaced.any()


def test_target_linked_to_two_sources_is_rejected() -> None:
    # source 0 -> targets 0,1, but target 1 is also linked to source 1 (and source 1's run would be 1 word)
    dense = keys((0, 0, 0), (0, 0, 1), (0, 1, 1))
    precise = keys((0, 0, 0), (0, 1, 1))
    assert spans(precise, dense, 3) == []
    assert not find_spans(precise, dense, 3).replaced.any()


def test_run_without_an_anchor_in_the_precise_links_is_rejected() -> None:
    dense = keys((0, 0, 0), (0, 0, 1), (0, 1, 2))
    assert spans(keys((0, 1, 2)), dense, 3) == []
    assert spans(keys((0, 0, 1), (0, 1, 2)), dense, 3) == [(0, 0, 1, 0, 2)]  # the same run, anchored


def test_reverse_direction_a_run_of_source_words_to_one_target_word() -> None:
    # "no one" -> "personne": sources 1,2 -> target 0, anchored by 2-0; source 0 -> target 1 stays
    dense = keys((0, 0, 1), (0, 1, 0), (0, 2, 0))
    precise = keys((0, 0, 1), (0, 2, 0))
    found = find_spans(precise, dense, 2)
    assert spans(precise, dense, 2) == [(0, 1, 3, 0, 1)]
    assert found.replaced.tolist() == [False, True]


def test_run_longer_than_max_span_is_rejected() -> None:
    dense = keys((0, 0, 0), (0, 0, 1), (0, 0, 2))
    precise = keys((0, 0, 0))
    assert spans(precise, dense, 2) == []
    assert spans(precise, dense, 1) == []
    assert spans(precise, dense, 3) == [(0, 0, 1, 0, 3)]


def test_runs_are_per_sentence() -> None:
    # the same (i, j) positions in two sentences: one link each, so no run in either
    dense = keys((0, 0, 0), (1, 0, 1), (2, 0, 0), (2, 0, 1))
    assert spans(keys((0, 0, 0), (1, 0, 1), (2, 0, 1)), dense, 2) == [(2, 0, 1, 0, 2)]


# --- counting -------------------------------------------------------------------------------------------------


WORDS = SegmenterConfig(method="whitespace")  # the sentences below are given as words


def counted(
    work: Path,
    pairs: list[tuple[list[str], list[str]]],
    precise: np.ndarray,
    dense: np.ndarray,
    max_span: int,
    joiners: tuple[str, str] = (" ", " "),
) -> pl.DataFrame:
    """What the count stage counts of ``pairs`` aligned by ``precise`` links, with phrases found in ``dense``
    ones: the corpus built into ``work`` by the corpus stages (one chunk), the links counted by ``count_task``
    and summed by ``merge_counts``; word and phrase pairs together (columns src, tgt, count)."""
    path = work.parent / f"{work.name}.tsv"
    path.write_text("".join(f"{' '.join(s)}\t{' '.join(t)}\n" for s, t in pairs), encoding="utf-8")
    (work / "count").mkdir(parents=True)
    runner = StageRunner(LocalExecutor(), work, Progress(False))
    files = build_corpus(runner, {"pairs": path}, (WORDS, WORDS), None, None, Progress(False), 1 << 14, False)
    assert files.n_chunks == 1 and files.n_sentences == len(pairs)
    # forward links the precise ones, backward the dense ones: their intersection is the precise links, and
    # grow-diag-final-and (which the stage finds phrases in) gives back the dense ones
    np.testing.assert_array_equal(symmetrize(precise, dense, "grow-diag-final-and"), dense)
    sentences = read_sentences(chunk_file(work, 0))
    stats = count_task(work, 0, sentences, (precise, dense), "intersect", max_span, joiners)
    np.testing.assert_array_equal(np.load(count_file(work, 0, ".links.npy")), precise)
    words, phrases = merge_counts(work, 1, files.vocab())
    assert stats["links"] == len(precise)
    assert stats["phrase_links"] == (0 if phrases is None else phrases["count"].sum())
    return words if phrases is None else summed_pairs([words, phrases])


def test_counting_joins_phrase_words_with_the_sides_joiner(tmp_path: Path) -> None:
    fr = [(["everybody", "eats"], ["tout", "le", "monde", "mange"])]
    precise = keys((0, 0, 2), (0, 1, 3))
    dense = keys((0, 0, 0), (0, 0, 1), (0, 0, 2), (0, 1, 3))
    got = counted(tmp_path / "fr3", fr, precise, dense, max_span=3, joiners=(" ", " ")).sort("src")
    assert got.rows() == [("eats", "mange", 1), ("everybody", "tout le monde", 1)]
    assert counted(tmp_path / "fr1", fr, precise, dense, max_span=1).sort("src").rows() == [
        ("eats", "mange", 1),
        ("everybody", "monde", 1),
    ]
    assert not count_file(tmp_path / "fr1", 0, ".phrases.parquet").exists()
    # a script written without spaces: the words of a phrase are joined without one; both directions
    zh = [(["the", "bank", "opens"], ["银", "行", "开"]), (["no", "one", "came"], ["没人", "来"])]
    precise = keys((0, 1, 0), (0, 2, 2), (1, 1, 0), (1, 2, 1))
    dense = keys((0, 1, 0), (0, 1, 1), (0, 2, 2), (1, 0, 0), (1, 1, 0), (1, 2, 1))
    got = counted(tmp_path / "zh", zh, precise, dense, max_span=2, joiners=(" ", "")).sort("src")
    assert got.rows() == [("bank", "银行", 1), ("came", "来", 1), ("no one", "没人", 1), ("opens", "开", 1)]


# --- extract-lexicon end to end -------------------------------------------------------------------------------

SUBJECTS = [("everybody", "tout le monde"), ("tom", "tom"), ("mary", "marie"), ("paul", "paul")]
VERBS = [
    ("sleeps", "dort"),
    ("eats", "mange"),
    ("sings", "chante"),
    ("runs", "court"),
    ("laughs", "rit"),
    ("reads", "lit"),
    ("works", "travaille"),
    ("dances", "danse"),
]
PLACES = [("here", "ici"), ("today", "aujourd'hui"), ("now", "maintenant"), ("again", "encore"), ("there", "là")]


@pytest.fixture(scope="module")
def everybody_corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    lines = [
        f"{s_en} {v_en} {p_en}\t{s_fr} {v_fr} {p_fr}"
        for s_en, s_fr in SUBJECTS
        for v_en, v_fr in VERBS
        for p_en, p_fr in PLACES
    ]
    path = tmp_path_factory.mktemp("spans") / "pairs.tsv"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def run(corpus: Path, out: Path, **kw) -> dict:
    job = ExtractJob(
        data=ParallelInput(pairs=corpus),
        src_segmenter=SegmenterConfig(apostrophe="next"),
        tgt_segmenter=SegmenterConfig(apostrophe="previous"),
        aligner=BuiltinConfig(ibm1_iterations=5, hmm_iterations=0),  # the HMM (p0 0.2) sends le, monde to NULL
        output=out,
        links_output=out.with_suffix(".links"),
        workers=0,
        progress=False,
        **kw,
    )
    return extract_lexicon(job)


def entries(path: Path) -> set[tuple[str, str]]:
    lexicon, _ = read_lexicon(path)
    return set(lexicon.select("src", "tgt").iter_rows())


def test_everybody_becomes_tout_le_monde_with_max_span_3(everybody_corpus: Path, tmp_path: Path) -> None:
    stats = run(everybody_corpus, tmp_path / "span3.parquet", max_span=3)
    got = entries(tmp_path / "span3.parquet")
    assert ("everybody", "tout le monde") in got
    assert ("everybody", "monde") not in got and ("everybody", "tout") not in got  # replaced by the phrase
    assert ("sleeps", "dort") in got  # single words still count as before
    assert stats["max_span"] == 3 and stats["phrase_entries"] >= 1
    _, meta = read_lexicon(tmp_path / "span3.parquet")
    assert meta["max_span"] == 3

    run(everybody_corpus, tmp_path / "span2.parquet", max_span=2)  # a 3-word run is longer than 2
    assert not any(tgt == "tout le monde" for _, tgt in entries(tmp_path / "span2.parquet"))
    run(everybody_corpus, tmp_path / "span1.parquet", max_span=1)
    single = entries(tmp_path / "span1.parquet")
    assert not any(" " in src or " " in tgt for src, tgt in single)
    assert ("everybody", "tout le monde") not in single
    # the links file keeps the precise (intersected) links only, whatever the span
    links3 = (tmp_path / "span3.links").read_bytes()
    assert links3 == (tmp_path / "span1.links").read_bytes() == (tmp_path / "span2.links").read_bytes()


def test_max_span_1_records_nothing_new_and_the_default_is_2(everybody_corpus: Path, tmp_path: Path) -> None:
    # max_span 1 writes what extract-lexicon wrote before spans existed: no key, no phrase, the same fingerprint
    # formula (checked byte for byte against the previous version on Tatoeba, docs/languages.md)
    one = run(everybody_corpus, tmp_path / "one.parquet", max_span=1)
    again = run(everybody_corpus, tmp_path / "again.parquet", max_span=1)
    assert (tmp_path / "one.parquet").read_bytes() == (tmp_path / "again.parquet").read_bytes()
    _, meta = read_lexicon(tmp_path / "one.parquet")
    assert "max_span" not in meta and "max_span" not in one and "phrase_entries" not in one
    assert one["job"]["fingerprint"] == again["job"]["fingerprint"]
    default = run(everybody_corpus, tmp_path / "default.parquet")
    assert default["max_span"] == 2 and read_lexicon(tmp_path / "default.parquet")[1]["max_span"] == 2
    assert default["job"]["fingerprint"] != one["job"]["fingerprint"]
    assert (tmp_path / "default.links").read_bytes() == (tmp_path / "one.links").read_bytes()


def test_max_span_changes_the_run_fingerprint(everybody_corpus: Path, tmp_path: Path) -> None:
    out = tmp_path / "lex.parquet"
    first = run(everybody_corpus, out, max_span=1)
    again = run(everybody_corpus, out, max_span=3, overwrite=True)
    assert not again.get("already_done")  # not mistaken for the single-word run
    assert again["job"]["fingerprint"] != first["job"]["fingerprint"]
    assert json.loads(stats_path(out).read_text())["max_span"] == 3


def test_cli_max_span_range(everybody_corpus: Path, tmp_path: Path) -> None:
    out = tmp_path / "lex.tsv"
    bad = cli("extract-lexicon", everybody_corpus, "-o", out, "--max-span", 9, "--workers", 0, code=2)
    assert "--max-span" in bad.stderr and not out.exists()
    cli(
        "extract-lexicon",
        everybody_corpus,
        "-o",
        out,
        "--max-span",
        3,
        "--hmm-iterations",
        0,
        "--workers",
        0,
        "--quiet",
    )
    lexicon = pl.read_csv(out, separator="\t", quote_char=None)
    assert "tout le monde" in lexicon.filter(pl.col("src") == "everybody")["tgt"].to_list()
