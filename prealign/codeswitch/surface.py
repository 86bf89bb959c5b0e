"""Token ids of a translation as it stands in the switched text, for every tokenizer family.

Many tokenizers add a space marker to the start of whatever they encode: SentencePiece conversions (Llama-2,
Mistral, Gemma: a ``Prepend("▁")`` normalizer), Metaspace pre-tokenizers with ``prepend_scheme`` ``always`` or
``first`` (T5, older conversions), byte-level BPE with ``add_prefix_space`` (RoBERTa). That is right at the start
of a document and wrong in the middle of one: ``(Tom)`` switched to ``(Thomas)`` must not become ``( Thomas)``.
So a translation is encoded with the tokenizer itself when it replaces a document's first word, and otherwise
with a copy of the tokenizer that adds nothing (:func:`mid_text_tokenizer`), with the whitespace that stood
before the original word in the text, so that the translation gets the space marker exactly when the text had a
space.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import numpy as np
from tokenizers import Tokenizer


def _drop_prefix(node: Any) -> Any:
    """A normalizer or pre-tokenizer (JSON) that adds no leading space marker; None for a removed step. In a
    sequence, a whitespace split before a Metaspace goes too (T5's layout): it would drop the very space that
    must become the marker."""
    if not isinstance(node, dict):
        return node
    kind = node.get("type")
    if kind == "Prepend":
        return None
    if kind == "Metaspace":
        return {**node, "prepend_scheme": "never", "add_prefix_space": False}
    if kind == "ByteLevel":
        return {**node, "add_prefix_space": False}
    for key in ("normalizers", "pretokenizers"):
        steps = node.get(key)
        if isinstance(steps, list):
            if key == "pretokenizers" and any(n.get("type") == "Metaspace" for n in steps if isinstance(n, dict)):
                steps = [n for n in steps if not (isinstance(n, dict) and n.get("type") == "WhitespaceSplit")]
            kept = [n for n in (_drop_prefix(n) for n in steps) if n is not None]
            return {**node, key: kept}
    return node


@dataclass(frozen=True)
class MidText:
    """How to encode a translation inside a text: ``tokenizer`` adds no space marker at its start; with
    ``one_space``, the whitespace before it is written as one space (the original tokenizer splits at
    whitespace and marks each split with one marker, which the copy, without that split, must be given)."""

    tokenizer: Tokenizer
    one_space: bool


def mid_text_tokenizer(tokenizer: Tokenizer) -> MidText:
    """A copy of ``tokenizer`` that encodes a string as the tokenizer would inside a text: no space marker added
    at its start (the same tokenizer when it adds none)."""
    spec = json.loads(tokenizer.to_str())
    one_space = "WhitespaceSplit" in json.dumps(spec.get("pre_tokenizer"))  # before the copy drops it
    changed = False
    for part in ("normalizer", "pre_tokenizer"):
        node = spec.get(part)
        new = _drop_prefix(node)
        changed |= new != node
        spec[part] = new
    return MidText(Tokenizer.from_str(json.dumps(spec)) if changed else tokenizer, one_space and changed)


def surface_ids(tokenizer: Tokenizer, surface: str, cache: dict[str, np.ndarray]) -> np.ndarray:
    """Token ids of ``surface`` (whitespace prefix + cased translation) by ``tokenizer``, cached."""
    ids = cache.get(surface)
    if ids is None:
        ids = np.array(tokenizer.encode(surface, add_special_tokens=False).ids, dtype=np.int32)
        cache[surface] = ids
    return ids
