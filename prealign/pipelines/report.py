"""What the commands print: job summaries, lexicon evaluation from files, and the built-in demo."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from prealign.errors import InputError


def extract_summary(stats: dict[str, Any], output: Path) -> str:
    """A few lines: pairs kept and dropped by reason, links, lexicon size, time."""
    from prealign.lexicon.clean import DROP_REASONS

    p = stats["pairs"]
    drops = ", ".join(f"{r.replace('_', ' ')} {p[r]:,}" for r in DROP_REASONS if p.get(r))
    lines = [
        f"pairs: {p['input']:,} read, {p['kept']:,} kept" + (f" (dropped: {drops})" if drops else ""),
        f"aligned: {stats['links']:,} links; vocabulary {stats['src_vocab']:,} src / {stats['tgt_vocab']:,} tgt",
        f"lexicon: {stats['lexicon_entries']:,} entries for {stats['lexicon_src_words']:,} source words -> {output}",
        f"time: {stats['seconds']['total']} s"
        + (f" in {stats['ran_on']}" if "ran_on" in stats else "")
        + f" (stats in {output.name}.stats.json)",
    ]
    return "\n".join(lines)


def align_summary(summary: dict[str, Any], output: Path) -> str:
    """What an align run did: pairs, links, how; and the pairs left unaligned for their length."""
    aligner = summary["aligner"]
    how = aligner["config"].get("method", summary["symmetrize"])
    if aligner["name"] != "builtin":
        how = f"{aligner['name']}, {how}"
    pairs, seconds = summary["pairs"], summary["seconds"]
    lines = [f"aligned {pairs:,} pairs: {summary['links']:,} links ({how}) in {seconds} s -> {output}"]
    if "ran_on" in summary:
        lines.append(f"ran in {summary['ran_on']}")
    n = summary.get("over_max_words", 0)
    if n:
        lines.append(
            f"not aligned: {n:,} pair{'s' if n > 1 else ''} with a side over --max-words "
            f"({summary['max_words']} words): empty lines"
        )
    return "\n".join(lines)


def switch_summary(manifest: dict[str, Any], output: Path) -> str:
    """What a switch run did: documents, words, switches and realised rates (also per target language), tokens,
    shards."""
    t, r = manifest["totals"], manifest["rates"]
    languages = [
        f"  into {lang} (weight {v['weight']:g}): {v['words_switched']:,} of {v['words_with_entry']:,} words with a "
        f"{lang} translation; {v['rate_over_words_with_entry']:.4f} of words with an entry"
        for lang, v in (manifest.get("languages") or {}).items()
    ]
    return "\n".join(
        [
            f"documents: {t['documents']:,}; words: {t['words']:,}, with a lexicon entry {t['words_with_entry']:,}, "
            f"switched {t['words_switched']:,}; unswitchable {t.get('words_unswitchable', 0):,} (tokens straddle "
            "their boundaries)",
            f"realised rate: {r['switched_per_word_with_entry']:.4f} of words with an entry (ratio "
            f"{manifest['ratio']}), {r['switched_per_word']:.4f} of all words",
            *languages,
            f"tokens: {t['tokens']:,} in {t['rows']:,} rows ({t['padding_tokens']:,} padding); "
            f"{len(manifest['shards'])} shard(s) -> {output}",
            f"time: {manifest.get('seconds', '?')} s",
        ]
    )


def source_link_totals(lexicon: pl.DataFrame) -> pl.DataFrame:
    """How often each source word was aligned in the corpus, recovered as count / p(tgt|src)."""
    return (
        lexicon.filter(pl.col("p_tgt_given_src") > 0)
        .group_by("src")
        .agg((pl.col("count") / pl.col("p_tgt_given_src")).max().round(0).cast(pl.Int64).alias("count"))
    )


def evaluate_lexicon_file(lexicon_path: Path, gold_path: Path, min_count: int = 0) -> dict[str, Any]:
    """P@1, P@5 and coverage of a lexicon file against a gold TSV dictionary."""
    from prealign.lexicon.evaluate import lexicon_precision, read_gold_lexicon
    from prealign.lexicon.lexicon_io import read_lexicon

    lexicon, _ = read_lexicon(lexicon_path)
    if lexicon.height == 0:
        raise InputError("the lexicon has no entries: nothing to evaluate", lexicon_path)
    gold = read_gold_lexicon(gold_path)
    if gold.height == 0:
        raise InputError("no dictionary entry (expected 'src<TAB>tgt' lines)", gold_path)
    totals = source_link_totals(lexicon) if min_count > 0 else None
    scores = lexicon_precision(lexicon, gold, ks=(1, 5), min_count=min_count, src_counts=totals)
    if scores["gold_words"] == 0:
        raise InputError(f"no gold source word was aligned {min_count} times or more (--min-count)", gold_path)
    if scores["evaluated"] == 0:
        raise InputError(
            f"none of its {scores['gold_words']} source words has a lexicon entry: is it a word dictionary "
            "(src<TAB>tgt) of the lexicon's languages?",
            gold_path,
        )
    return scores


GUESS_SHARE = 0.1  # warn when this share of the sentences (and at least GUESS_MIN) has links past the gold's
GUESS_MIN = 5  # last index: a sign of links made on another tokenisation (see evaluate_alignment_files)


def evaluate_alignment_files(
    links: Path, gold: Path, gold_index: str, one_indexed: bool, pairs: Path | None = None
) -> tuple[dict[str, Any], str | None]:
    """AER, precision and recall of a links file against gold links, and a warning (or None) when the links'
    indices do not fit the sentences: past the whitespace tokens of ``pairs`` (the aligned text, when given),
    or, without it, past the gold's last index in many sentences (GUESS_SHARE, GUESS_MIN); both mean the links
    were made on another tokenisation than the gold's (``align --pretokenized``). Empty gold or links are an
    :class:`InputError`."""
    from prealign.lexicon.evaluate import alignment_scores, link_extent, sentences_beyond
    from prealign.lexicon.links import read_gold, read_pharaoh

    sure, possible = read_gold(gold, "auto" if gold_index == "auto" else int(gold_index))
    if not any(len(p) for p in possible):
        raise InputError("no gold links: the gold file is empty (expected 'i-j' sure and 'ipj' possible links)", gold)
    pred = read_pharaoh(links, one_indexed=one_indexed)
    if len(pred) < len(sure):
        raise InputError(f"{len(pred)} link lines but the gold has {len(sure)}", links)
    if not any(len(p) for p in pred[: len(sure)]):
        raise InputError(f"no links in the {len(sure)} lines scored: nothing to evaluate", links)
    scores = alignment_scores(pred, sure, possible)
    n = len(sure)
    if pairs is not None:
        src_len, tgt_len = _token_counts(pairs, n)
        bad = sentences_beyond(pred, src_len, tgt_len)
        where = f"past the whitespace tokens of {pairs}"
    else:
        bad = sentences_beyond(pred, *link_extent(possible))
        bad = bad if bad >= max(GUESS_SHARE * n, GUESS_MIN) else 0
        where = "past the gold's last index"
    if not bad:
        return scores, None
    return scores, (
        f"warning: {links}: {bad} of {n} sentences have links {where}: they were aligned on another "
        "tokenisation than the gold's (align --pretokenized; see docs/aligner.md)"
    )


def _token_counts(pairs: Path, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Whitespace tokens of each side of the first ``n`` pairs of a parallel file (0 past its end)."""
    from prealign.lexicon.corpus import read_parallel

    src_len, tgt_len = np.zeros(n, dtype=np.int64), np.zeros(n, dtype=np.int64)
    done = 0
    for batch in read_parallel(pairs=pairs, batch_size=4096):
        for side, out in (("src", src_len), ("tgt", tgt_len)):
            counts = [len(t.split()) for t in batch.column(side).to_pylist()[: n - done]]
            out[done : done + len(counts)] = counts
        done += min(batch.num_rows, n - done)
        if done >= n:
            break
    return src_len, tgt_len


def run_demo(output_dir: Path, n_pairs: int, workers: int | None, progress: bool) -> str:
    """Generate the built-in corpus, extract a lexicon from it, and score it against the grammar's lexicon."""
    from prealign.demo import true_lexicon, write_corpus
    from prealign.lexicon.evaluate import lexicon_precision
    from prealign.lexicon.lexicon_io import read_lexicon
    from prealign.pipelines.extract import ExtractJob, ParallelInput, extract_lexicon
    from prealign.text import SegmenterConfig, apostrophe_for

    output_dir.mkdir(parents=True, exist_ok=True)
    corpus = write_corpus(output_dir / "demo.en-fr.tsv", n_pairs)
    out = output_dir / "lexicon.parquet"
    job = ExtractJob(
        data=ParallelInput(pairs=corpus),
        src_segmenter=SegmenterConfig(apostrophe=apostrophe_for("en")),
        tgt_segmenter=SegmenterConfig(apostrophe=apostrophe_for("fr")),
        output=out,
        src_lang="en",
        tgt_lang="fr",
        workers=workers,
        progress=progress,
        overwrite=True,  # the demo's own directory: a rerun regenerates the corpus and replaces the lexicon
    )
    stats = extract_lexicon(job)
    lexicon, _ = read_lexicon(out)
    gold = pl.DataFrame(true_lexicon(), schema=["src", "tgt"], orient="row")
    scores = lexicon_precision(lexicon, gold, ks=(1, 5))
    best = lexicon.sort("score", descending=True).unique("src", keep="first", maintain_order=True)
    sample = best.filter(pl.col("src").is_in(["cat", "house", "sees", "red", "beautiful", "behind"]))
    rows = [
        f"  {r['src']:>10} -> {r['tgt']:<10} count {r['count']:>5}  score {r['score']:.3f}"
        for r in sample.iter_rows(named=True)
    ]
    return "\n".join(
        [
            f"demo corpus: {corpus} ({n_pairs:,} English-French pairs from a built-in grammar)",
            extract_summary(stats, out),
            "best translations of a few words:",
            *rows,
            f"against the grammar's true lexicon: P@1 {scores['p@1']:.3f}, P@5 {scores['p@5']:.3f}, "
            f"coverage {scores['coverage']:.3f} ({scores['evaluated']} words)",
        ]
    )
