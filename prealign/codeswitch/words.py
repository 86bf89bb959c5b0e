"""Words of documents mapped onto a tokenizer's tokens by character offsets.

The words come from the project's own segmenter (:mod:`prealign.text`, the units the lexicon was built from);
the tokens from any tokenizer, through the character offsets every tokenizer family reports (``word_ids`` is
not defined by SentencePiece-style tokenizers and is not used). A word is *switchable* when the tokens that
cover it cover nothing of another word: its first token starts after the previous word's end, its last token
ends before the next word's start. A token that straddles a word boundary (a merge across a space, a
byte-level token spanning two characters of two words) leaves both words as they are; they are counted as
unswitchable. Words overlapping a special token (``<|endoftext|>`` written in the text) are not words.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from prealign.text import FlatSpans, flatten, layout


@dataclass
class Units:
    """A batch's tokens cut into units: every switchable word one unit, every other token a unit of its own.

    ``starts``: each unit's first token (flat index over the batch); ``word``: for each unit, the index of its
    word in the batch's flat word list, or -1; ``word_doc``, ``word_index``: each word's document (batch-local)
    and number within its document; ``clean``: whether each word is switchable; ``word_start``, ``word_end``:
    each word's characters in the batch's documents joined by one separator character; ``tok_start``: each token's
    first character in that layout, ``tok_end`` the character after its last; ``doc_start``: where each document
    starts in it.
    """

    starts: np.ndarray
    word: np.ndarray
    word_doc: np.ndarray
    word_index: np.ndarray
    clean: np.ndarray
    word_start: np.ndarray
    word_end: np.ndarray
    tok_start: np.ndarray
    tok_end: np.ndarray
    doc_start: np.ndarray


def word_units(texts: list[str], offsets: list[list[tuple[int, int]]], spans: FlatSpans, special: np.ndarray) -> Units:
    """Map the documents' words (``spans``, from :meth:`prealign.text.Segmenter.flat_spans`) onto their tokens'
    character ``offsets`` (``special``: a flat mask of the batch's special tokens)."""
    n_docs = len(texts)
    base = layout(texts)  # documents laid end to end, one character apart
    tokens = flatten(offsets, base)
    tok_start, tok_end = tokens.start, tokens.end
    n_tok = len(tok_start)
    word_start, word_end = spans.start, spans.end
    word_doc = np.repeat(np.arange(n_docs, dtype=np.int64), spans.counts)

    # tokens over each word: from the first token ending after its start to the last starting before its end,
    # counted per character position (one pass over the batch's characters instead of binary searches)
    n_chars = int(base[-1]) + len(texts[-1]) + 1 if n_docs else 1
    ends_by = np.cumsum(np.bincount(tok_end, minlength=n_chars + 1))  # tokens ending at or before each position
    starts_before = np.r_[0, np.cumsum(np.bincount(tok_start, minlength=n_chars + 1))]  # starting before it
    first = ends_by[word_start]
    last = starts_before[word_end] - 1
    covered = first <= last

    # switchable: covered by whole tokens that reach neither the previous word nor the next one (nor, for a
    # document's first and last words, outside the document)
    doc_start = base[word_doc]
    prev_end, next_start = doc_start.copy(), doc_start + np.array([len(t) for t in texts], dtype=np.int64)[word_doc]
    same_doc = word_doc[1:] == word_doc[:-1]
    prev_end[1:][same_doc] = word_end[:-1][same_doc]
    next_start[:-1][same_doc] = word_start[1:][same_doc]
    # the whitespace-only tokens between the previous word and this one belong to this word's unit, so that a
    # translation is tokenised with its leading space as the tokenizer would tokenise the switched text
    first = np.where(covered, np.minimum(first, starts_before[prev_end]), first)
    safe_first, safe_last = np.minimum(first, max(n_tok - 1, 0)), np.clip(last, 0, max(n_tok - 1, 0))
    clean = covered.copy()
    if n_tok:
        clean &= (tok_start[safe_first] >= prev_end) & (tok_end[safe_last] <= next_start)
        hits_special = np.zeros(n_tok + 1, dtype=np.int64)
        np.cumsum(special.astype(np.int64), out=hits_special[1:])
        keep = ~(covered & (hits_special[np.minimum(last + 1, n_tok)] > hits_special[np.minimum(first, n_tok)]))
        word_start, word_end, first, last, word_doc, clean = (
            a[keep] for a in (word_start, word_end, first, last, word_doc, clean)
        )
    doc_first = np.zeros(n_docs + 1, dtype=np.int64)
    np.cumsum(np.bincount(word_doc, minlength=n_docs), out=doc_first[1:])
    word_index = np.arange(len(word_start), dtype=np.int64) - doc_first[word_doc]

    # units: a switchable word's tokens after its first join its unit
    multi = clean & (last > first)
    inside = np.bincount(first[multi] + 1, minlength=n_tok + 2) - np.bincount(last[multi] + 1, minlength=n_tok + 2)
    new = np.cumsum(inside[:n_tok]) == 0
    starts = np.flatnonzero(new)
    unit_word = np.full(len(starts), -1, dtype=np.int64)
    clean_words = np.flatnonzero(clean)
    unit_word[(np.cumsum(new) - 1)[first[clean_words]]] = clean_words
    return Units(starts, unit_word, word_doc, word_index, clean, word_start, word_end, tok_start, tok_end, base)
