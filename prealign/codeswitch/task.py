"""The unit of parallel work of the switch job, kept light to import (no polars, no Ray)."""

from __future__ import annotations

from functools import cache

from tokenizers import Tokenizer

from prealign.codeswitch.switch import Switched, WordCache, switch_batch
from prealign.codeswitch.table import SwitchConfig, SwitchTable


@cache
def _worker_state(tokenizer_path: str, sha256: str) -> tuple[Tokenizer, WordCache]:
    """One tokenizer and word cache per process, keyed by the tokenizer's path and content hash."""
    return Tokenizer.from_file(tokenizer_path), WordCache()


def switch_task(
    texts: list[str], first_doc: int, tokenizer: tuple[str, str], table: SwitchTable, config: SwitchConfig
) -> Switched:
    """Tokenise and switch one batch of documents; ``tokenizer`` is (path of tokenizer.json, sha256)."""
    tok, word_cache = _worker_state(*tokenizer)
    return switch_batch(texts, first_doc, tok, table, config, word_cache)
