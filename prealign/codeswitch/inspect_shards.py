"""A human-readable look at a shard directory: manifest summary, shard checks and a few decoded rows.

In a decoded row, each maximal run of switched input tokens is wrapped as ``[[...]]``; the labels line shows the
targets, with each run of -100 (no loss) as ``[-100 xN]``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from prealign.errors import InputError
from prealign.shards import IGNORE_INDEX, check_shards, read_manifest, read_rows

MAX_SHARDS_LISTED = 20


@dataclass
class Inspection:
    """What :func:`inspect_shards` found: the report and the check problems ([] when sound)."""

    report: str
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def shard_problems(directory: Path) -> list[str]:
    """:func:`prealign.shards.check_shards`, with an unreadable shard reported as a problem, not raised."""
    try:
        return check_shards(directory)
    except InputError as exc:
        return [str(exc)]


def inspect_ok(directory: Path) -> bool:
    """True when every shard is present and matches the manifest (sha256, row count)."""
    return not shard_problems(directory)


def inspect_report(directory: Path, rows: int = 3, tokenizer_path: Path | None = None) -> str:
    """The report of :func:`inspect_shards`."""
    return inspect_shards(directory, rows, tokenizer_path).report


def inspect_shards(directory: Path, rows: int = 3, tokenizer_path: Path | None = None) -> Inspection:
    """Summarise the manifest, check the shards and decode the first ``rows`` rows (one pass over the shards).

    Rows are decoded with ``tokenizer_path``, else the tokenizer the manifest names; when it cannot be loaded,
    token ids are shown and the report says why. InputError when ``directory`` has no readable manifest.
    """
    directory = Path(directory)
    manifest = read_manifest(directory)
    lines = _summary(directory, manifest)
    problems = shard_problems(directory)
    if problems:
        lines.append(f"checks:    FAILED, {len(problems)} problem(s):")
        lines += [f"  - {p}" for p in problems]
    else:
        lines.append("checks:    OK (every shard present, sha256 and row count as in the manifest)")
    if rows > 0:
        lines.append("")
        lines += _rows_section(directory, manifest, rows, tokenizer_path)
    return Inspection("\n".join(lines) + "\n", problems)


def _fmt(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _pairs(d: dict[str, Any] | None) -> str:
    return ", ".join(f"{k} {_fmt(v)}" for k, v in (d or {}).items()) or "-"


def _specials(tok: dict[str, Any], packed: bool) -> str:
    """What is put around each document: BOS and EOS with their ids and where they came from."""
    if "add_bos" not in tok:  # a manifest written before BOS/EOS were recorded
        return f"no BOS; {'eot ' + str(tok.get('eot_id')) + ' after each' if packed else 'nothing after'}"

    def token(kind: str) -> str:
        return f"{tok.get(kind + '_token')!r} (id {tok.get(kind + '_id')}, from {tok.get(kind + '_from')})"

    bos = f"BOS {token('bos')} first" if tok.get("add_bos") else "no BOS"
    eos = f"EOS {token('eos')} after each" if packed or tok.get("add_eos") else "no EOS"
    return f"{bos}; {eos}"


def _coverage(totals: dict[str, Any]) -> str:
    """Words with a lexicon entry and unswitchable words, over all words."""
    words = totals.get("words") or 0

    def share(key: str) -> str:
        n = totals.get(key, 0)
        return f"{_fmt(n)} of {_fmt(words)} ({100 * n / words:.1f}%)" if words else f"{_fmt(n)} of 0"

    return f"words with an entry {share('words_with_entry')}, unswitchable {share('words_unswitchable')}"


def _summary(directory: Path, m: dict[str, Any]) -> list[str]:
    tok, lex = m.get("tokenizer") or {}, m.get("lexicon") or {}
    shards = m.get("shards", [])
    sha = (tok.get("sha256") or "?")[:12]
    packing = "packed" if m.get("packed") else "not packed"
    lines = [
        f"shard directory: {directory}",
        f"  schema {m.get('schema_version')}, {m.get('format', '?')}, written by {m.get('tool', '?')} "
        f"{m.get('version', '?')}",
        f"tokenizer: {tok.get('path', '?')} (vocab {_fmt(tok.get('vocab_size'))}, eot {tok.get('eot_id')}, "
        f"pad {tok.get('pad_id')}, sha256 {sha}...)",
        f"documents: {_specials(tok, bool(m.get('packed')))}",
        f"lexicon:   {lex.get('path', '?')} ({_fmt(lex.get('entries'))} entries, "
        f"sha256 {(lex.get('sha256') or '?')[:12]}...)",
        f"switching: ratio {_fmt(m.get('ratio'))}, seed {m.get('seed')}, choice {m.get('choice')}, "
        f"labels {m.get('labels')}",
        f"rows:      seq_len {_fmt(m.get('seq_len'))}, {packing}, row_tokens {_fmt(m.get('row_tokens'))}",
        f"totals:    {_pairs(m.get('totals'))}",
        f"coverage:  {_coverage(m.get('totals') or {})}"
        + (" (WARNING: low, written with --allow-low-coverage)" if m.get("coverage_warning") else ""),
        f"rates:     {_pairs(m.get('rates'))}",
        f"shards:    {len(shards)} ({_fmt(sum(s.get('rows', 0) for s in shards))} rows, "
        f"{_fmt(sum(s.get('tokens', 0) for s in shards))} tokens)",
    ]
    for s in shards[:MAX_SHARDS_LISTED]:
        lines.append(
            f"  {s.get('file')}  {_fmt(s.get('rows'))} rows  {_fmt(s.get('tokens'))} tokens  "
            f"sha256 {str(s.get('sha256'))[:12]}..."
        )
    if len(shards) > MAX_SHARDS_LISTED:
        lines.append(f"  ... and {len(shards) - MAX_SHARDS_LISTED} more")
    return lines


def _load_tokenizer(manifest: dict[str, Any], tokenizer_path: Path | None) -> tuple[Any, str]:
    """(tokenizer or None, a note for the report). A tokenizer whose vocabulary size differs from the manifest's
    is not the one the shards were made with: InputError when it was given (``tokenizer_path``), token ids shown
    when it is the one the manifest names (edited or replaced since)."""
    from tokenizers import Tokenizer

    from prealign.codeswitch.tokenizer import tokenizer_file

    recorded = manifest.get("tokenizer") or {}
    path = tokenizer_path if tokenizer_path is not None else recorded.get("path")
    if not path:
        return None, "showing token ids: no tokenizer given and the manifest names none"
    try:
        tok = Tokenizer.from_file(str(tokenizer_file(path)))
    except Exception as exc:  # tokenizers raises plain Exception for IO and parse errors
        return None, f"showing token ids: cannot load tokenizer {path}: {exc}"
    size, expected = tok.get_vocab_size(with_added_tokens=True), recorded["vocab_size"]
    if size != expected:
        mismatch = (
            f"has {size:,} tokens, the manifest's tokenizer had {expected:,}: not the one the shards were made with"
        )
        if tokenizer_path is not None:
            raise InputError(mismatch, path)
        return None, f"showing token ids: tokenizer {path} {mismatch}"
    note = f"decoded with {path}"
    sha = hashlib.sha256(tok.to_str().encode("utf-8")).hexdigest()
    if recorded.get("sha256") and recorded["sha256"] != sha:
        note += " (WARNING: its sha256 differs from the manifest's; the text may be wrong)"
    return tok, note


def _runs(flags: np.ndarray) -> list[tuple[int, int, bool]]:
    """Maximal runs of equal flags as (start, stop, flag)."""
    if len(flags) == 0:
        return []
    cuts = np.flatnonzero(flags[1:] != flags[:-1]) + 1
    bounds = [0, *cuts.tolist(), len(flags)]
    return [(a, b, bool(flags[a])) for a, b in zip(bounds[:-1], bounds[1:], strict=True)]


def _decode_pieces(tok: Any, ids: Sequence[int], bounds: Sequence[int]) -> list[str]:
    """The text of ``ids[bounds[k]:bounds[k + 1]]`` for each k, as differences of decoded prefixes (so spacing
    between pieces is the tokenizer's own); a piece whose prefix is not extended is decoded alone."""
    pieces, prev = [], ""
    for k in range(1, len(bounds)):
        full = tok.decode(list(ids[: bounds[k]]), skip_special_tokens=False)
        if full.startswith(prev):
            pieces.append(full[len(prev) :])
        else:
            alone = tok.decode(list(ids[bounds[k - 1] : bounds[k]]), skip_special_tokens=False)
            pieces.append((" " if pieces else "") + alone)
        prev = full
    return pieces


def _wrap(piece: str, left: str, right: str) -> str:
    core = piece.lstrip()
    return piece[: len(piece) - len(core)] + left + core + right


def _decoded_input(tok: Any, ids: np.ndarray, switched: np.ndarray) -> str:
    runs = _runs(switched != 0)
    pieces = _decode_pieces(tok, ids.tolist(), [0, *(b for _, b, _ in runs)])
    return "".join(_wrap(p, "[[", "]]") if flag else p for p, (_, _, flag) in zip(pieces, runs, strict=True))


def _decoded_labels(tok: Any, labels: np.ndarray) -> str:
    runs = _runs(labels == IGNORE_INDEX)
    bounds = [0]
    for a, b, ignored in runs:
        if not ignored:
            bounds.append(bounds[-1] + b - a)
    pieces = iter(_decode_pieces(tok, labels[labels != IGNORE_INDEX].tolist(), bounds))
    return "".join(f"[-100 x{b - a}]" if ignored else next(pieces) for a, b, ignored in runs)


def _ids_input(ids: np.ndarray, switched: np.ndarray) -> str:
    out = []
    for a, b, flag in _runs(switched != 0):
        text = " ".join(map(str, ids[a:b].tolist()))
        out.append(f"[[{text}]]" if flag else text)
    return " ".join(out)


def _show(text: str) -> str:
    return text.replace("\r", "\\r").replace("\n", "\\n")


def _rows_section(directory: Path, manifest: dict[str, Any], n: int, tokenizer_path: Path | None) -> list[str]:
    tok, note = _load_tokenizer(manifest, tokenizer_path)
    lines = [f"first {n} row(s), switched input tokens as [[...]]; {note}"]
    shown = 0
    for entry in manifest.get("shards", []):
        if shown >= n:
            break
        try:
            shard = read_rows(directory / entry["file"])
        except InputError as exc:
            lines.append(f"cannot read {entry['file']}: {exc.message}")
            continue
        for r in range(min(len(shard), n - shown)):
            lo, hi = shard.offsets[r], shard.offsets[r + 1]
            ids, labels, switched = shard.input_ids[lo:hi], shard.labels[lo:hi], shard.switched[lo:hi]
            lines.append(
                f"row {shown} ({entry['file']} row {r}: {_fmt(len(ids))} tokens, "
                f"{_fmt(int(np.count_nonzero(switched)))} switched, "
                f"{_fmt(int(np.count_nonzero(labels == IGNORE_INDEX)))} without loss)"
            )
            text_in = text_labels = None
            if tok is not None:
                try:
                    text_in, text_labels = _decoded_input(tok, ids, switched), _decoded_labels(tok, labels)
                except Exception as exc:  # an id the tokenizer cannot decode
                    lines.append(f"  (cannot decode: {exc}; showing token ids)")
            if text_in is None:
                text_in, text_labels = _ids_input(ids, switched), " ".join(map(str, labels.tolist()))
            lines += [f"  input : {_show(text_in)}", f"  labels: {_show(text_labels)}"]
            shown += 1
    if shown == 0:
        lines.append("(no rows)")
    return lines
