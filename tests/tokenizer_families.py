"""Small tokenizers of every family that real models use, built offline in a few seconds (not a test file).

Each builder trains a small vocabulary (300 to 1,500 tokens) on :func:`training_corpus` (generated English and
French text) and lays the ``tokenizers.Tokenizer`` out exactly as the real models' ``tokenizer.json`` files are
laid out (transformers' ``convert_slow_tokenizer.py`` for the SentencePiece and WordPiece conversions): same
normalizer, pre-tokenizer, model type and options, post-processor and decoder; only the vocabulary is small.
Every family has an end-of-text token for packing (:data:`EOT`, one of ``tokenizer.EOT_NAMES``). Every builder
also takes ``texts`` and ``vocab_size`` (``benchmarks/bench_switch.py --tokenizer`` trains them on Brown + French).

:func:`english_documents` generates the documents the tests switch: sentences with capitals, UPPER words,
digits, apostrophes (``Tom's``, ``don't``), commas, brackets and quotes next to words, hyphens, and the words of
:data:`LEXICON_ROWS` (with multi-word entries ``ice cream``, ``no one``, ``last night``).
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Sequence
from functools import cache
from pathlib import Path

import numpy as np
from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

VOCAB_SIZE = 1500

# en -> fr (src, tgt, p(tgt|src), score): the first row of each source word has the best score
LEXICON_ROWS = [
    ("dog", "chien", 1.0, 0.9),
    ("cat", "chat", 0.8, 0.7),
    ("cat", "minou", 0.2, 0.1),
    ("house", "maison", 1.0, 0.9),
    ("red", "rouge", 1.0, 0.9),
    ("river", "rivière", 1.0, 0.8),
    ("green", "vert", 1.0, 0.8),
    ("ox", "boeuf", 1.0, 0.9),
    ("big", "grand", 0.7, 0.8),
    ("big", "gros", 0.3, 0.5),
    ("small", "petit", 1.0, 0.8),
    ("old", "vieux", 1.0, 0.8),
    ("water", "eau", 1.0, 0.9),
    ("tree", "arbre", 1.0, 0.9),
    ("book", "livre", 1.0, 0.9),
    ("night", "nuit", 1.0, 0.9),
    ("man", "homme", 1.0, 0.9),
    ("friend", "ami", 0.6, 0.8),
    ("friend", "copain", 0.4, 0.6),
    ("city", "ville", 1.0, 0.9),
    ("bread", "pain", 1.0, 0.9),
    ("car", "voiture", 1.0, 0.9),
    ("today", "aujourd'hui", 1.0, 0.9),
    ("ice cream", "glace", 1.0, 0.9),
    ("no one", "personne", 1.0, 0.9),
    ("last night", "hier soir", 1.0, 0.9),
]
WITH_ENTRY = sorted({src for src, *_ in LEXICON_ROWS if " " not in src})
PHRASES = sorted({src for src, *_ in LEXICON_ROWS if " " in src})
NO_ENTRY = [
    "the", "a", "and", "of", "in", "to", "is", "was", "with", "by", "near", "on", "at", "saw", "sat", "walked",
    "quickly", "very", "under", "from", "yesterday", "large", "blue", "ran", "took", "found", "one", "cream",
]  # fmt: skip
NAMES = ["Tom", "Mary", "Paris", "London", "Anna"]
CONTRACTIONS = ["don't", "can't", "it's", "I'm", "we'll", "they're", "Tom's", "Mary's"]
FRENCH_FUNCTION = ["le", "la", "les", "un", "une", "de", "et", "est", "dans", "avec", "l'", "d'", "sur", "très"]


def _word(rng: np.random.Generator) -> str:
    r = rng.random()
    if r < 0.40:
        w = str(rng.choice(WITH_ENTRY))
    elif r < 0.45:
        w = str(rng.choice(PHRASES))
    elif r < 0.80:
        w = str(rng.choice(NO_ENTRY))
    elif r < 0.86:
        w = str(rng.choice(NAMES))
    elif r < 0.93:
        w = str(rng.choice(CONTRACTIONS))
    elif r < 0.96:
        w = str(rng.choice(WITH_ENTRY)) + "'s"  # the dog's
    else:
        w = str(rng.choice(["3", "42", "1999", "3.5", "10,000", "2nd"]))
    form = rng.random()
    if form < 0.06:
        w = w.upper()
    elif form < 0.12:
        w = w[:1].upper() + w[1:]
    mark = rng.random()
    if mark < 0.08:
        w += ","
    elif mark < 0.10:
        w = f"({w})"
    elif mark < 0.12:
        w = f'"{w}"'
    elif mark < 0.13:
        w += ";"
    elif mark < 0.14:
        w = f"{w}-{rng.choice(WITH_ENTRY)}"  # a hyphenated compound: dog-house
    return w


def english_documents(n: int, seed: int) -> list[str]:
    """``n`` English documents of 1 to 3 sentences of 4 to 13 words, single-spaced, no leading/trailing space."""
    rng = np.random.default_rng(seed)
    docs = []
    for _ in range(n):
        sentences = []
        for _ in range(int(rng.integers(1, 4))):
            words = [_word(rng) for _ in range(int(rng.integers(4, 14)))]
            words[0] = words[0][:1].upper() + words[0][1:]
            sentences.append(" ".join(words) + str(rng.choice([".", ".", ".", "!", "?"])))
        docs.append(" ".join(sentences))
    return docs


def french_sentences(n: int, seed: int) -> list[str]:
    """``n`` French sentences made of the lexicon's translations (lower, Title and UPPER) and function words."""
    rng = np.random.default_rng(seed)
    targets = sorted({tgt for _, tgt, *_ in LEXICON_ROWS})
    out = []
    for _ in range(n):
        words = []
        for _ in range(int(rng.integers(4, 12))):
            w = str(rng.choice(targets)) if rng.random() < 0.6 else str(rng.choice(FRENCH_FUNCTION))
            form = rng.random()
            words.append(w.upper() if form < 0.1 else w[:1].upper() + w[1:] if form < 0.25 else w)
        out.append(" ".join(words) + ".")
    return out


@cache
def training_corpus() -> tuple[str, ...]:
    """The text every family is trained on: 3,000 English documents (another seed than the tests') and 1,500
    French sentences."""
    return (*english_documents(3000, seed=1001), *french_sentences(1500, seed=1002))


def _bpe_trainer(specials: list[str], byte_level: bool, vocab_size: int) -> trainers.BpeTrainer:
    return trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        show_progress=False,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet() if byte_level else [],
    )


def byte_level_gpt2(texts: Sequence[str] | None = None, vocab_size: int = VOCAB_SIZE) -> Tokenizer:
    """GPT-2 (also GPT-J, GPT-NeoX without its NFC, RoBERTa's model): no normalizer; pre-tokenizer
    ``ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=True)`` (the GPT-2 regex, a space glued to
    the word after it: ``Ġdog``); BPE (no unk, no continuing prefix); post-processor
    ``ByteLevel(trim_offsets=False)``; decoder ``ByteLevel``. ``<|endoftext|>`` is BOS, EOS and UNK."""
    tok = Tokenizer(models.BPE(dropout=None, continuing_subword_prefix="", end_of_word_suffix="", fuse_unk=False))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(texts or training_corpus(), trainer=_bpe_trainer(["<|endoftext|>"], True, vocab_size))
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    return tok


LLAMA3_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+"
    r"|\s+(?!\S)|\s+"
)
QWEN2_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+"
    r"|\s+(?!\S)|\s+"
)


def _split_byte_level(pattern: str) -> pre_tokenizers.PreTokenizer:
    return pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(pattern), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=False),
        ]
    )


def byte_level_llama3(texts: Sequence[str] | None = None, vocab_size: int = VOCAB_SIZE) -> Tokenizer:
    """Llama-3 (tiktoken converted): no normalizer; pre-tokenizer ``Sequence[Split(Regex(<Llama-3 pattern>),
    isolated), ByteLevel(add_prefix_space=False, use_regex=False)]`` (the pattern glues one non-letter to the
    letters after it: ``(dog``, ``"cat``); BPE with ``ignore_merges=True``; post-processor ``Sequence[ByteLevel
    (trim_offsets=False), TemplateProcessing(<|begin_of_text|> $A)]``; decoder ``ByteLevel``.
    ``<|begin_of_text|>``, ``<|end_of_text|>``."""
    specials = ["<|begin_of_text|>", "<|end_of_text|>"]
    tok = Tokenizer(models.BPE(dropout=None, continuing_subword_prefix="", end_of_word_suffix="", fuse_unk=False))
    tok.pre_tokenizer = _split_byte_level(LLAMA3_PATTERN)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(texts or training_corpus(), trainer=_bpe_trainer(specials, True, vocab_size))
    tok.model.ignore_merges = True
    bos = tok.token_to_id(specials[0])
    tok.post_processor = processors.Sequence(
        [
            processors.ByteLevel(add_prefix_space=True, trim_offsets=False, use_regex=True),
            processors.TemplateProcessing(
                single=f"{specials[0]}:0 $A:0", pair=f"{specials[0]}:0 $A:0 {specials[0]}:1 $B:1",
                special_tokens=[(specials[0], bos)],
            ),
        ]
    )  # fmt: skip
    return tok


def byte_level_qwen2(texts: Sequence[str] | None = None, vocab_size: int = VOCAB_SIZE) -> Tokenizer:
    """Qwen2 / Qwen2.5: normalizer ``NFC``; pre-tokenizer ``Sequence[Split(Regex(<Qwen2 pattern>: digits one
    at a time>), isolated), ByteLevel(add_prefix_space=False, use_regex=False)]``; BPE; post-processor
    ``ByteLevel(trim_offsets=False)``; decoder ``ByteLevel``. ``<|endoftext|>`` (EOS and pad), ``<|im_start|>``,
    ``<|im_end|>``."""
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    tok = Tokenizer(models.BPE(dropout=None, continuing_subword_prefix="", end_of_word_suffix="", fuse_unk=False))
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = _split_byte_level(QWEN2_PATTERN)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(texts or training_corpus(), trainer=_bpe_trainer(specials, True, vocab_size))
    tok.post_processor = processors.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False)
    return tok


SPM_TRAINERS = {  # the SentencePiece trainer options of each real model (identity normalisation for all)
    # Llama-2 / Mistral: dummy prefix, extra whitespace kept, digits split, byte fallback, <unk> 0, <s> 1, </s> 2
    "llama": dict(
        model_type="bpe", add_dummy_prefix=True, byte_fallback=True, split_digits=True, unk_id=0, bos_id=1, eos_id=2,
        pad_id=-1, allow_whitespace_only_pieces=True, remove_extra_whitespaces=False,
    ),
    # Gemma: as Llama-2 but no dummy prefix, and <pad> 0, <eos> 1, <bos> 2, <unk> 3
    "gemma": dict(
        model_type="bpe", add_dummy_prefix=False, byte_fallback=True, split_digits=True, pad_id=0, eos_id=1,
        bos_id=2, unk_id=3, pad_piece="<pad>", eos_piece="<eos>", bos_piece="<bos>", unk_piece="<unk>",
        allow_whitespace_only_pieces=True, remove_extra_whitespaces=False,
    ),
    # T5 (unigram): no byte fallback, <pad> 0, </s> 1, <unk> 2 (identity instead of T5's nmt_nfkc, which changes
    # nothing in this text)
    "t5": dict(
        model_type="unigram", add_dummy_prefix=True, byte_fallback=False, pad_id=0, eos_id=1, unk_id=2, bos_id=-1,
        hard_vocab_limit=False,
    ),
}  # fmt: skip


def _train_sentencepiece(
    texts: Sequence[str], trainer: str, vocab_size: int = VOCAB_SIZE
) -> tuple[list[str], list[float], int]:
    """Train a real SentencePiece model with the options of :data:`SPM_TRAINERS` ``[trainer]`` in a temporary
    directory; its pieces, scores and unk id."""
    import sentencepiece as spm

    with tempfile.TemporaryDirectory() as tmp:
        corpus = Path(tmp) / "corpus.txt"
        corpus.write_text("\n".join(texts) + "\n", encoding="utf-8")
        spm.SentencePieceTrainer.train(
            input=str(corpus),
            model_prefix=str(Path(tmp) / "sp"),
            vocab_size=vocab_size,
            character_coverage=1.0,
            normalization_rule_name="identity",
            num_threads=2,
            minloglevel=2,
            **SPM_TRAINERS[trainer],
        )
        sp = spm.SentencePieceProcessor(model_file=str(Path(tmp) / "sp.model"))
        pieces = [sp.id_to_piece(i) for i in range(sp.get_piece_size())]
        scores = [sp.get_score(i) for i in range(sp.get_piece_size())]
        return pieces, scores, sp.unk_id()


@cache
def _sentencepiece_bpe(
    texts: tuple[str, ...], vocab_size: int, trainer: str = "llama"
) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """A SentencePiece BPE model's vocabulary and merges as transformers' ``SentencePieceExtractor`` derives
    them: every split of a piece into two pieces of the vocabulary, ordered by the merged piece's score."""
    pieces, scores, _ = _train_sentencepiece(texts, trainer, vocab_size)
    vocab = {p: i for i, p in enumerate(pieces)}
    merges = []
    for piece, score in zip(pieces, scores, strict=True):
        local = [
            (piece[:k], piece[k:], score) for k in range(1, len(piece)) if piece[:k] in vocab and piece[k:] in vocab
        ]
        merges.extend(sorted(local, key=lambda m: (vocab[m[0]], vocab[m[1]])))
    merges.sort(key=lambda m: m[2], reverse=True)
    return vocab, [(a, b) for a, b, _ in merges]


def _spm_bpe_tokenizer(
    texts: Sequence[str] | None,
    vocab_size: int,
    trainer: str = "llama",
    specials: Sequence[str] = ("<unk>", "<s>", "</s>"),
) -> Tokenizer:
    vocab, merges = _sentencepiece_bpe(tuple(texts or training_corpus()), vocab_size, trainer)
    tok = Tokenizer(models.BPE(vocab, merges, unk_token="<unk>", fuse_unk=True, byte_fallback=True))
    tok.add_special_tokens([AddedToken(t, normalized=False, special=True) for t in specials])
    return tok


def _bos_template(tok: Tokenizer, bos: str = "<s>") -> processors.TemplateProcessing:
    return processors.TemplateProcessing(
        single=f"{bos}:0 $A:0", pair=f"{bos}:0 $A:0 {bos}:1 $B:1", special_tokens=[(bos, tok.token_to_id(bos))]
    )


def sentencepiece_llama2(texts: Sequence[str] | None = None, vocab_size: int = VOCAB_SIZE) -> Tokenizer:
    """Llama-2, Mistral-7B v0.1, CodeLlama (transformers' ``LlamaConverter``, legacy): a real SentencePiece BPE
    model (byte fallback) converted with normalizer ``Sequence[Prepend("▁"), Replace(" ", "▁")]``, **no
    pre-tokenizer** (one pre-token per document: ``word_ids`` are all 0), BPE ``(unk_token="<unk>",
    fuse_unk=True, byte_fallback=True)`` with the vocabulary in SentencePiece's id order and merges from the
    piece scores, post-processor ``TemplateProcessing(<s> $A)``, decoder ``Sequence[Replace("▁", " "),
    ByteFallback(), Fuse(), Strip(" ", 1, 0)]``. ``<unk>`` 0, ``<s>`` 1, ``</s>`` 2."""
    tok = _spm_bpe_tokenizer(texts, vocab_size)
    tok.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    tok.pre_tokenizer = None
    tok.decoder = decoders.Sequence(
        [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(), decoders.Strip(" ", 1, 0)]
    )
    tok.post_processor = _bos_template(tok)
    return tok


def sentencepiece_gemma(texts: Sequence[str] | None = None, vocab_size: int = VOCAB_SIZE) -> Tokenizer:
    """Gemma / Gemma-2 / Gemma-3 (the hub's ``tokenizer.json``): a real SentencePiece BPE model trained as Gemma's
    (``add_dummy_prefix=False``, digits split, byte fallback, whitespace-only pieces) converted with normalizer
    ``Replace(" ", "▁")`` only (no ``Prepend``: the first word has no ``▁``), **no pre-tokenizer** (one
    pre-token per document), BPE ``(unk_token="<unk>", fuse_unk=True, byte_fallback=True)``, post-processor
    ``TemplateProcessing(<bos> $A)``, decoder ``Sequence[Replace("▁", " "), ByteFallback(), Fuse()]`` (no
    ``Strip``). ``<pad>`` 0, ``<eos>`` 1, ``<bos>`` 2, ``<unk>`` 3 (the real vocabulary then has ``<mask>``,
    ``<start_of_turn>``, ... which are left out). transformers 5's ``GemmaConverter`` would add a pre-tokenizer
    ``Split(" ", merged_with_previous)``; the files on the hub have none."""
    tok = _spm_bpe_tokenizer(texts, vocab_size, "gemma", ("<pad>", "<eos>", "<bos>", "<unk>"))
    tok.normalizer = normalizers.Replace(" ", "▁")
    tok.pre_tokenizer = None
    tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse()])
    tok.post_processor = _bos_template(tok, "<bos>")
    return tok


def sentencepiece_mistral_v03(texts: Sequence[str] | None = None, vocab_size: int = VOCAB_SIZE) -> Tokenizer:
    """Mistral-7B v0.3 (and non-legacy Llama conversions, ``legacy=False``): the Llama-2 SentencePiece BPE model
    with no normalizer, pre-tokenizer ``Metaspace(replacement="▁", prepend_scheme="first", split=False)`` (spaces
    become ``▁``, ``▁`` prepended to the document, still one pre-token per document), BPE with byte fallback,
    post-processor ``TemplateProcessing(<s> $A)``, decoder ``Metaspace(replacement="▁", prepend_scheme="first",
    split=False)`` (drops the first token's leading space). ``<unk>`` 0, ``<s>`` 1, ``</s>`` 2 (the real
    vocabulary then has 768 control tokens, ``[INST]``, ``[/INST]``, ..., left out)."""
    tok = _spm_bpe_tokenizer(texts, vocab_size)
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first", split=False)
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="first", split=False)
    tok.post_processor = _bos_template(tok)
    return tok


def metaspace(texts: Sequence[str] | None = None, vocab_size: int = VOCAB_SIZE) -> Tokenizer:
    """Older SentencePiece conversions (``SpmConverter`` with ``add_prefix_space=True``: early Llama/Mistral
    uploads, ALBERT-style): the same SentencePiece BPE model, no normalizer, pre-tokenizer
    ``Metaspace(replacement="▁", prepend_scheme="always", split=True)`` (spaces become ``▁``, one pre-token per
    word, ``▁`` prepended to the first), BPE with byte fallback, decoder ``Metaspace(replacement="▁",
    prepend_scheme="always")`` (which drops the first token's leading space). ``<unk>``, ``<s>``, ``</s>``."""
    tok = _spm_bpe_tokenizer(texts, vocab_size)
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always", split=True)
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always", split=True)
    tok.post_processor = _bos_template(tok)
    return tok


def wordpiece_bert(texts: Sequence[str] | None = None, vocab_size: int = VOCAB_SIZE) -> Tokenizer:
    """BERT uncased (``BertConverter``): normalizer ``BertNormalizer(clean_text=True, handle_chinese_chars=True,
    strip_accents=None, lowercase=True)`` (lowercases and, following lowercase, strips accents: ``rivière`` ->
    ``riviere``); pre-tokenizer ``BertPreTokenizer`` (whitespace, and every punctuation character alone:
    ``tom ' s``); ``WordPiece(unk_token="[UNK]", continuing_subword_prefix="##", max_input_chars_per_word=100)``
    trained with ``WordPieceTrainer``; post-processor ``TemplateProcessing([CLS] $A [SEP])``; decoder
    ``WordPiece(prefix="##", cleanup=True)`` (tokens joined by spaces, ``##`` glued, `` .`` -> ``.``).
    ``[PAD]`` 0, ``[UNK]`` 1, ``[CLS]`` 2, ``[SEP]`` 3, ``[MASK]`` 4."""
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]", continuing_subword_prefix="##", max_input_chars_per_word=100))
    tok.normalizer = normalizers.BertNormalizer(
        clean_text=True, handle_chinese_chars=True, strip_accents=None, lowercase=True
    )
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece(prefix="##", cleanup=True)
    trainer = trainers.WordPieceTrainer(
        vocab_size=vocab_size, min_frequency=2, show_progress=False, special_tokens=specials,
        continuing_subword_prefix="##",
    )  # fmt: skip
    tok.train_from_iterator(texts or training_corpus(), trainer=trainer)
    cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS]:0 $A:0 [SEP]:0", pair="[CLS]:0 $A:0 [SEP]:0 $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls), ("[SEP]", sep)],
    )  # fmt: skip
    return tok


def _t5_layout(tok: Tokenizer) -> Tokenizer:
    tok.normalizer = normalizers.Replace(Regex(" {2,}"), " ")
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")]
    )
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    return tok


def _t5_template(tok: Tokenizer) -> processors.TemplateProcessing:
    return processors.TemplateProcessing(
        single="$A:0 </s>:0", pair="$A:0 </s>:0 $B:1 </s>:1", special_tokens=[("</s>", tok.token_to_id("</s>"))]
    )


def unigram_t5(texts: Sequence[str] | None = None, vocab_size: int = VOCAB_SIZE) -> Tokenizer:
    """T5 (``T5Converter``; XLM-R's layout is the same with other specials): a real SentencePiece Unigram model
    converted to ``Unigram(vocab=[(piece, score)], unk_id)``, normalizer ``Replace(Regex(" {2,}"), " ")`` (the
    real file puts SentencePiece's ``Precompiled`` nmt_nfkc map first; it changes nothing in this ASCII + French
    text), pre-tokenizer ``Sequence[WhitespaceSplit(), Metaspace(replacement="▁", prepend_scheme="always")]``
    (every whitespace-separated chunk gets its own ``▁``, the space itself is in no token's offsets),
    post-processor ``TemplateProcessing($A </s>)``, decoder ``Metaspace``. ``<pad>`` 0, ``</s>`` 1, ``<unk>`` 2."""
    pieces, scores, unk = _train_sentencepiece(tuple(texts or training_corpus()), "t5", vocab_size)
    tok = Tokenizer(models.Unigram(list(zip(pieces, scores, strict=True)), unk_id=unk, byte_fallback=False))
    tok.add_special_tokens([AddedToken(t, normalized=False, special=True) for t in ("<pad>", "</s>", "<unk>")])
    _t5_layout(tok)
    tok.post_processor = _t5_template(tok)
    return tok


def unigram_hf(texts: Sequence[str] | None = None, vocab_size: int = VOCAB_SIZE) -> Tokenizer:
    """The T5 layout of :func:`unigram_t5` with a Unigram trained by ``tokenizers``' ``UnigramTrainer`` (as a user
    training their own would): unlike SentencePiece (which splits pieces where the Unicode script changes), it
    learns pieces across punctuation inside a whitespace chunk (``▁night,``, ``▁Tom's``, ``▁(car)``), so the words
    of such pieces are unswitchable. ``<pad>`` 0, ``</s>`` 1, ``<unk>`` 2."""
    specials = ["<pad>", "</s>", "<unk>"]
    tok = _t5_layout(Tokenizer(models.Unigram()))
    trainer = trainers.UnigramTrainer(
        vocab_size=vocab_size, show_progress=False, special_tokens=specials, unk_token="<unk>", max_piece_length=16
    )
    tok.train_from_iterator(texts or training_corpus(), trainer=trainer)
    tok.post_processor = _t5_template(tok)
    return tok


FAMILIES: dict[str, Callable[..., Tokenizer]] = {
    "byte_level_gpt2": byte_level_gpt2,
    "byte_level_llama3": byte_level_llama3,
    "byte_level_qwen2": byte_level_qwen2,
    "sentencepiece_llama2": sentencepiece_llama2,
    "metaspace": metaspace,
    "gemma": sentencepiece_gemma,
    "mistral_v03": sentencepiece_mistral_v03,
    "wordpiece_bert": wordpiece_bert,
    "unigram_t5": unigram_t5,
    "unigram_hf": unigram_hf,
}
EOT = {  # the end-of-text token each family packs documents with
    "byte_level_gpt2": "<|endoftext|>",
    "byte_level_llama3": "<|end_of_text|>",
    "byte_level_qwen2": "<|endoftext|>",
    "sentencepiece_llama2": "</s>",
    "metaspace": "</s>",
    "gemma": "<eos>",
    "mistral_v03": "</s>",
    "wordpiece_bert": "[SEP]",
    "unigram_t5": "</s>",
    "unigram_hf": "</s>",
}
BYTE_LEVEL = ("byte_level_gpt2", "byte_level_llama3", "byte_level_qwen2")


@cache
def family_tokenizer(name: str) -> Tokenizer:
    """The family's tokenizer, built once per process (through its ``tokenizer.json`` text, as users load it)."""
    return Tokenizer.from_str(FAMILIES[name]().to_str())


def added_token(content: str) -> dict:
    """A special token as transformers writes it in tokenizer_config.json / special_tokens_map.json."""
    return {"__type": "AddedToken", "content": content, "lstrip": False, "normalized": False, "rstrip": False,
            "single_word": False}  # fmt: skip
