"""What the commands print: job summaries, lexicon evaluation from files, and the built-in demo."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import polars as pl


def extract_summary(stats: dict[str, Any], output: Path) -> str:
    """A few lines: pairs kept and dropped by reason, links, lexicon size, time."""
    from prealign.lexicon.clean import DROP_REASONS

    p = stats["pairs"]
    drops = ", ".join(f"{r.replace('_', ' ')} {p[r]:,}" for r in DROP_REASONS if p.get(r))
    lines = [
        f"pairs: {p['input']:,} read, {p['kept']:,} kept" + (f" (dropped: {drops})" if drops else ""),
        f"aligned: {stats['links']:,} links; vocabulary {stats['src_vocab']:,} src / {stats['tgt_vocab']:,} tgt",
        f"lexicon: {stats['lexicon_entries']:,} entries for {stats['lexicon_src_words']:,} source words -> {output}",
        f"time: {stats['seconds']['total']} s (stats in {output.name}.stats.json)",
    ]
    return "\n".join(lines)


def switch_summary(manifest: dict[str, Any], output: Path) -> str:
    """What a switch run did: documents, words, switches and realised rates, tokens, shards."""
    t, r = manifest["totals"], manifest["rates"]
    return "\n".join(
        [
            f"documents: {t['documents']:,}; words: {t['words']:,}, with a lexicon entry {t['words_with_entry']:,}, "
            f"switched {t['words_switched']:,}",
            f"realised rate: {r['switched_per_word_with_entry']:.4f} of words with an entry (ratio "
            f"{manifest['ratio']}), {r['switched_per_word']:.4f} of all words",
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
    gold = read_gold_lexicon(gold_path)
    totals = source_link_totals(lexicon) if min_count > 0 else None
    return lexicon_precision(lexicon, gold, ks=(1, 5), min_count=min_count, src_counts=totals)


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
