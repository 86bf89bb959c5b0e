"""The unit of parallel work of the switch job, kept light to import (no polars, no Ray)."""

from __future__ import annotations

from functools import cache

from tokenizers import Tokenizer

from prealign.codeswitch.switch import Switched, WordCache, switch_batch
from prealign.codeswitch.table import SwitchConfig, SwitchTable
from prealign.text import Segmenter, SegmenterConfig


@cache
def _tokenizer(tokenizer_path: str, sha256: str) -> Tokenizer:
    """One tokenizer per process, keyed by its path and content hash."""
    return Tokenizer.from_file(tokenizer_path)


@cache
def _word_cache(tokenizer_sha256: str, table_fingerprint: str, segmenter: SegmenterConfig | None) -> WordCache:
    """One word cache per (tokenizer, switch table, segmenter): cached words point into that table."""
    return WordCache()


@cache
def _segmenter(config: SegmenterConfig) -> Segmenter:
    """One segmenter per process and configuration (a dictionary segmenter loads once)."""
    return Segmenter(config)


def switch_task(
    texts: list[str],
    first_doc: int,
    tokenizer: tuple[str, str],
    table: SwitchTable,
    config: SwitchConfig,
    segmenter: SegmenterConfig | None = None,
) -> Switched:
    """Tokenise and switch one batch of documents; ``tokenizer`` is (path of tokenizer.json, sha256)."""
    tok = _tokenizer(*tokenizer)
    cache = _word_cache(tokenizer[1], table.fingerprint, segmenter)
    return switch_batch(texts, first_doc, tok, table, config, cache, _segmenter(segmenter or SegmenterConfig()))
