"""Embedding aligners on a multilingual encoder (transformers): SimAlign-style and awesome-align-style.

Both encode each side of a sentence pair separately with the model (no fine-tuning), take the hidden states
of one layer (``layer``: 0 is the embedding output, 8 the papers' default for mBERT), compare every source
subword with every target subword, and extract links (:mod:`.extraction`):

- ``simalign`` (Jalili Sabet et al. 2020): cosine similarity; ``argmax``, ``itermax`` or ``match``.
- ``awesome`` (Dou & Neubig 2021): dot products, softmax over both directions, threshold 1e-3 (``softmax``).

Two words are linked when any of their subwords are. The subword pieces of each distinct word are looked up
once (the vocabulary is tokenised in one batch), and each sentence's pieces are the concatenation of its
words' pieces, so every piece carries the index of its word: no piece-to-word guesswork after the fact.

Pairs are sorted by length and run many at a time: a batch of B pairs is one forward pass over 2B sequences.
A pair with a side longer than the encoder's limit (special tokens included) is skipped and counted as
``too_long``. The model runs in :class:`NeuralWorker` objects, one model load each, on a
:class:`~prealign.lexicon.aligners.base.WorkerPool` (this process, or Ray actors from ``prealign.pipelines``).
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from prealign.errors import InputError
from prealign.lexicon.aligners.base import Aligned, LocalWorkers, ProgressCallback, WorkerPool, require
from prealign.lexicon.aligners.extraction import SIMALIGN_METHODS, Method
from prealign.lexicon.encode import EncodedCorpus

DEVICES = ("auto", "cpu", "cuda")
CHUNK_BATCHES = 8  # batches per unit of work sent to a worker
_ROBERTA_LIKE = ("roberta", "camembert", "longformer")  # positions start after the padding index
_HUB_NAME = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


@dataclass(frozen=True)
class NeuralConfig:
    """User options of the simalign and awesome backends."""

    model: str
    method: Method = "argmax"
    device: str = "auto"
    batch_size: int = 32
    layer: int = 8
    threshold: float = 1e-3  # softmax
    rounds: int = 2  # itermax
    alpha: float = 0.9  # itermax

    def __post_init__(self) -> None:
        if self.device not in DEVICES:
            raise ValueError(f"device must be one of {', '.join(DEVICES)}, not {self.device!r}")
        if self.batch_size < 1 or self.layer < 0 or self.rounds < 1:
            raise ValueError("batch_size and rounds must be positive and layer at least 0")
        if not 0.0 < self.threshold < 1.0:
            raise ValueError(f"the softmax threshold must be in (0, 1), not {self.threshold}")


@dataclass(frozen=True)
class WorkerSpec:
    """What a worker needs to run the model: everything the driver learnt from the tokenizer and config."""

    model: str
    layer: int
    method: Method
    similarity: str  # "cosine" or "dot"
    prefix: tuple[int, ...]  # special tokens before the pieces ([CLS] / <s>)
    suffix: tuple[int, ...]  # and after ([SEP] / </s>)
    pad_id: int
    batch_size: int
    threshold: float
    rounds: int
    alpha: float


@dataclass
class PieceChunk:
    """Sentence pairs for one worker call: their corpus numbers and each side's pieces with word indices."""

    sentences: np.ndarray  # int64, corpus sentence numbers, sorted by length
    src: tuple[np.ndarray, np.ndarray, np.ndarray]  # pieces (int32), offsets (int64, k + 1), word of each piece
    tgt: tuple[np.ndarray, np.ndarray, np.ndarray]


@dataclass
class Prepared:
    """The driver's work before the model runs: the worker spec, the chunks, and the length guard's count."""

    spec: WorkerSpec
    chunks: list[PieceChunk]
    max_tokens: int
    too_long: int


def neural_device(requested: str) -> str:
    """The device name (``"cpu"`` or ``"cuda"``) an embedding aligner's model runs on for ``--device requested``.

    ``auto``: CUDA when torch sees a GPU, else CPU; ``cuda`` without a GPU is an :class:`InputError`.
    """
    if requested == "cpu":
        return "cpu"
    import torch

    if torch.cuda.is_available():
        return "cuda"
    if requested == "cuda":
        raise InputError("--device cuda, but torch sees no CUDA device here: use --device cpu or auto")
    return "cpu"


def _transformers() -> Any:
    """transformers, quiet (no weight-loading bars or warnings on stderr)."""
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    return transformers


def _is_local(model: str) -> bool:
    return Path(model).expanduser().exists() or not _HUB_NAME.match(model)


def check_model(model: str) -> None:
    """A model given as a path must exist (a hub name is only checked when it loads)."""
    if not model:
        raise InputError("--model is empty: pass a local model directory or a Hugging Face model name")
    if _is_local(model) and not Path(model).expanduser().is_dir():
        raise InputError(
            "no model directory here (--model takes a local directory or a Hugging Face model name)",
            Path(model).expanduser(),
        )


def _load_error(model: str, exc: BaseException) -> InputError:
    reason = " ".join(str(exc).split())
    if len(reason) > 300:
        reason = reason[:297] + "..."
    return InputError(
        f"cannot load model {model!r}: {reason} (pass --model a local model directory, or a Hugging Face model "
        "name with network access)"
    )


def _special_affixes(tok: Any) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """The special tokens the tokenizer puts before and after a single text."""
    plain = list(tok("a", add_special_tokens=False)["input_ids"])
    full = list(tok("a")["input_ids"])
    for k in range(len(full) - len(plain) + 1):
        if full[k : k + len(plain)] == plain:
            return tuple(full[:k]), tuple(full[k + len(plain) :])
    cls = getattr(tok, "cls_token_id", None) or getattr(tok, "bos_token_id", None)
    sep = getattr(tok, "sep_token_id", None) or getattr(tok, "eos_token_id", None)
    return (() if cls is None else (cls,)), (() if sep is None else (sep,))


def _max_tokens(tok: Any, config: Any) -> int:
    limits = []
    tok_limit = getattr(tok, "model_max_length", None)
    if isinstance(tok_limit, int) and 0 < tok_limit < 1_000_000:
        limits.append(tok_limit)
    positions = getattr(config, "max_position_embeddings", None)
    if isinstance(positions, int) and positions > 0:
        if any(name in str(getattr(config, "model_type", "")) for name in _ROBERTA_LIKE):
            positions -= (getattr(config, "pad_token_id", None) or 1) + 1
        limits.append(positions)
    return min(limits) if limits else 512


def _vocab_pieces(tok: Any, words: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Each distinct word's subword ids, tokenised once: (flat ids, offsets)."""
    offsets = np.zeros(len(words) + 1, dtype=np.int64)
    if not words:
        return np.zeros(0, np.int32), offsets
    encoded = tok(words, add_special_tokens=False)["input_ids"]
    np.cumsum([len(e) for e in encoded], out=offsets[1:])
    flat = np.fromiter((p for e in encoded for p in e), dtype=np.int32, count=int(offsets[-1]))
    return flat, offsets


def side_pieces(
    word_ids: np.ndarray, sent_offsets: np.ndarray, piece_flat: np.ndarray, piece_offsets: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All sentences of one side as pieces: (piece ids, per-sentence piece offsets, word index of each piece)."""
    plen = np.diff(piece_offsets)[word_ids]
    occ_off = np.zeros(len(word_ids) + 1, dtype=np.int64)
    np.cumsum(plen, out=occ_off[1:])
    occ = np.repeat(np.arange(len(word_ids), dtype=np.int64), plen)
    within = np.arange(occ_off[-1], dtype=np.int64) - occ_off[occ]
    pieces = piece_flat[piece_offsets[word_ids][occ] + within]
    lengths = np.diff(sent_offsets)
    word_pos = np.arange(len(word_ids), dtype=np.int64) - np.repeat(sent_offsets[:-1], lengths)
    return pieces, occ_off[sent_offsets], word_pos[occ].astype(np.int32)


def _take_ranges(
    side: tuple[np.ndarray, np.ndarray, np.ndarray], sel: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    pieces, offsets, words = side
    lens = offsets[sel + 1] - offsets[sel]
    new_off = np.zeros(len(sel) + 1, dtype=np.int64)
    np.cumsum(lens, out=new_off[1:])
    idx = np.repeat(offsets[sel] - new_off[:-1], lens) + np.arange(new_off[-1], dtype=np.int64)
    return pieces[idx], new_off, words[idx]


class NeuralAligner:
    """``simalign`` (cosine; argmax / itermax / match) or ``awesome`` (dot product; softmax + threshold)."""

    def __init__(self, name: str, config: NeuralConfig) -> None:
        if name not in ("simalign", "awesome"):
            raise ValueError(f"not a neural backend: {name!r}")
        if name == "simalign" and config.method not in SIMALIGN_METHODS:
            raise ValueError(f"simalign extracts with {', '.join(SIMALIGN_METHODS)}, not {config.method!r}")
        if name == "awesome" and config.method != "softmax":
            raise ValueError(f"awesome extracts with softmax, not {config.method!r}")
        self.name = name
        self.config = config
        require("transformers", name, "neural")
        if config.method == "match":
            require("scipy", name, "neural")
        check_model(config.model)
        self._prepared: tuple[int, Prepared] | None = None

    def describe(self) -> dict[str, Any]:
        return {**asdict(self.config), "similarity": "cosine" if self.name == "simalign" else "dot"}

    def prepare(self, corpus: EncodedCorpus) -> Prepared:
        """Load the tokenizer and config, tokenise the vocabularies once, apply the length guard, make chunks."""
        if self._prepared is not None and self._prepared[0] == id(corpus):
            return self._prepared[1]
        c = self.config
        transformers = _transformers()
        try:
            tok = transformers.AutoTokenizer.from_pretrained(c.model)
            mconf = transformers.AutoConfig.from_pretrained(c.model)
        except (OSError, ValueError, KeyError, ImportError) as exc:
            raise _load_error(c.model, exc) from exc
        layers = getattr(mconf, "num_hidden_layers", None)
        if getattr(mconf, "is_encoder_decoder", False):
            layers = getattr(mconf, "num_layers", layers)
        if isinstance(layers, int) and c.layer > layers:
            raise InputError(f"--layer {c.layer}, but model {c.model!r} has {layers} layers (0 is the embeddings)")
        prefix, suffix = _special_affixes(tok)
        max_tokens = _max_tokens(tok, mconf)
        budget = max_tokens - len(prefix) - len(suffix)
        sides = []
        for vocab, ids, offs in (
            (corpus.src_vocab, corpus.src_ids, corpus.src_offsets),
            (corpus.tgt_vocab, corpus.tgt_ids, corpus.tgt_offsets),
        ):
            flat, poff = _vocab_pieces(tok, vocab.words.to_pylist())
            sides.append(side_pieces(ids, offs, flat, poff))
        src_n, tgt_n = np.diff(sides[0][1]), np.diff(sides[1][1])
        too_long = (src_n > budget) | (tgt_n > budget)
        usable = np.flatnonzero(~too_long & (src_n > 0) & (tgt_n > 0))
        usable = usable[np.argsort(np.maximum(src_n, tgt_n)[usable], kind="stable")]
        size = c.batch_size * CHUNK_BATCHES
        chunks = [
            PieceChunk(sel, _take_ranges(sides[0], sel), _take_ranges(sides[1], sel))
            for sel in (usable[k : k + size] for k in range(0, len(usable), size))
        ]
        spec = WorkerSpec(
            model=c.model,
            layer=c.layer,
            method=c.method,
            similarity="cosine" if self.name == "simalign" else "dot",
            prefix=prefix,
            suffix=suffix,
            pad_id=int(tok.pad_token_id if tok.pad_token_id is not None else 0),
            batch_size=c.batch_size,
            threshold=c.threshold,
            rounds=c.rounds,
            alpha=c.alpha,
        )
        prepared = Prepared(spec, chunks, max_tokens, int(np.count_nonzero(too_long)))
        self._prepared = (id(corpus), prepared)
        return prepared

    def steps(self, corpus: EncodedCorpus) -> int | None:
        return max(1, len(self.prepare(corpus).chunks))

    def align(
        self,
        corpus: EncodedCorpus,
        pool: WorkerPool | None = None,
        progress: ProgressCallback | None = None,
    ) -> Aligned:
        prep = self.prepare(corpus)
        pool = pool or LocalWorkers(neural_device(self.config.device))
        parts = [np.zeros(0, np.int64)]
        if prep.chunks:
            for keys in pool.run(partial(NeuralWorker, prep.spec), "align_chunk", [(ch,) for ch in prep.chunks]):
                parts.append(keys)
                if progress is not None:
                    progress("chunk")
        elif progress is not None:
            progress("nothing to align")
        keys = np.sort(np.concatenate(parts))
        stats = {
            "too_long": prep.too_long,
            "max_tokens": prep.max_tokens,
            "device": pool.device,
            "workers": pool.workers,
        }
        return Aligned([(keys, keys)], stats)


class NeuralWorker:
    """One loaded model: aligns :class:`PieceChunk` s."""

    def __init__(self, spec: WorkerSpec, device: str) -> None:
        import torch

        transformers = _transformers()
        self.spec = spec
        self.device = torch.device(device)
        try:
            model = transformers.AutoModel.from_pretrained(spec.model)
        except (OSError, ValueError, KeyError, ImportError) as exc:
            raise _load_error(spec.model, exc) from exc
        if getattr(model.config, "is_encoder_decoder", False) and hasattr(model, "get_encoder"):
            model = model.get_encoder()
        blocks = getattr(getattr(model, "encoder", None), "layer", None)
        if isinstance(blocks, torch.nn.ModuleList) and spec.layer < len(blocks):
            model.encoder.layer = blocks[: spec.layer]  # the layers above the one used are never run
        self.model = model.eval().to(self.device)

    def hidden(self, rows: list[np.ndarray]) -> Any:
        """Hidden states of layer ``spec.layer`` for each row of piece ids, framed by the special tokens."""
        import torch

        prefix, suffix = np.asarray(self.spec.prefix, np.int64), np.asarray(self.spec.suffix, np.int64)
        width = max(len(r) for r in rows) + len(prefix) + len(suffix)
        ids = np.full((len(rows), width), self.spec.pad_id, dtype=np.int64)
        mask = np.zeros((len(rows), width), dtype=np.int64)
        for k, r in enumerate(rows):
            seq = np.concatenate([prefix, r, suffix])
            ids[k, : len(seq)] = seq
            mask[k, : len(seq)] = 1
        with torch.inference_mode():
            out = self.model(
                input_ids=torch.from_numpy(ids).to(self.device),
                attention_mask=torch.from_numpy(mask).to(self.device),
                output_hidden_states=True,
            )
        return out.hidden_states[self.spec.layer]

    def align_chunk(self, chunk: PieceChunk) -> np.ndarray:
        """Link keys (word level) of the chunk's sentence pairs."""
        out = [np.zeros(0, np.int64)]
        n = len(chunk.sentences)
        for b0 in range(0, n, self.spec.batch_size):
            b1 = min(b0 + self.spec.batch_size, n)
            out.append(self._batch(chunk, b0, b1))
        return np.sort(np.concatenate(out))

    def _batch(self, chunk: PieceChunk, b0: int, b1: int) -> np.ndarray:
        import torch

        from prealign.lexicon.aligners.extraction import extract
        from prealign.lexicon.symmetrize import link_keys

        s = self.spec
        sides = []
        for pieces, offsets, words in (chunk.src, chunk.tgt):
            rows = [pieces[offsets[k] : offsets[k + 1]] for k in range(b0, b1)]
            word_rows = [words[offsets[k] : offsets[k + 1]] for k in range(b0, b1)]
            sides.append((rows, word_rows))
        hidden = self.hidden(sides[0][0] + sides[1][0])
        b = b1 - b0
        p = len(s.prefix)
        lens = [np.array([len(r) for r in rows]) for rows, _ in sides]
        m, n = int(lens[0].max()), int(lens[1].max())
        hs, ht = hidden[:b, p : p + m].float(), hidden[b:, p : p + n].float()
        if s.similarity == "cosine":
            hs = torch.nn.functional.normalize(hs, dim=-1)
            ht = torch.nn.functional.normalize(ht, dim=-1)
            sim = (torch.bmm(hs, ht.transpose(1, 2)) + 1.0) / 2.0
        else:
            sim = torch.bmm(hs, ht.transpose(1, 2))
        dev = sim.device
        valid = (torch.arange(m, device=dev)[None, :, None] < torch.as_tensor(lens[0], device=dev)[:, None, None]) & (
            torch.arange(n, device=dev)[None, None, :] < torch.as_tensor(lens[1], device=dev)[:, None, None]
        )
        links = extract(s.method, sim, valid, s.threshold, s.rounds, s.alpha)
        bi, pi, qi = (t.cpu().numpy() for t in links.nonzero(as_tuple=True))
        src_words = np.full((b, m), -1, np.int64)
        tgt_words = np.full((b, n), -1, np.int64)
        for k in range(b):
            src_words[k, : lens[0][k]] = sides[0][1][k]
            tgt_words[k, : lens[1][k]] = sides[1][1][k]
        sent = chunk.sentences[b0:b1][bi]
        keys = link_keys(sent, src_words[bi, pi], tgt_words[bi, qi])
        keys = np.sort(keys)
        if len(keys):
            keys = keys[np.concatenate([[True], keys[1:] != keys[:-1]])]
        return keys
