"""A randomly initialised BERT and a WordPiece vocabulary trained on given text, saved as a local model.

For trying the embedding backends offline (tests, benchmarks, a machine without a hub): its alignments are as
good as random weights make them, but shapes, subword mapping, batching and speed are those of a real model.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any


def save_random_bert(
    texts: Iterable[str],
    out: Path,
    vocab_size: int = 16000,
    max_positions: int = 512,
    lowercase: bool = False,
    seed: int = 0,
    **config: Any,
) -> Path:
    """Train a WordPiece vocabulary on ``texts``, build ``BertModel(BertConfig(**config))`` with random weights
    (seeded) and ``max_positions`` positions, and save both under ``out`` (loadable by ``--model out``)."""
    import torch
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import BertConfig, BertModel, PreTrainedTokenizerFast

    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=lowercase)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tok.train_from_iterator(texts, trainers.WordPieceTrainer(vocab_size=vocab_size, special_tokens=specials))
    cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B [SEP]", special_tokens=[("[CLS]", cls), ("[SEP]", sep)]
    )
    PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
        model_max_length=max_positions,
    ).save_pretrained(out)
    torch.manual_seed(seed)
    bert = BertConfig(vocab_size=tok.get_vocab_size(), max_position_embeddings=max_positions, **config)
    BertModel(bert).save_pretrained(out)
    return out
