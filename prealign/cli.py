"""The ``prealign-data`` command line: each command parses its options and calls one function elsewhere."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from prealign import __version__
from prealign.errors import InputError, disk_full

F = Callable[..., Any]


class Group(click.Group):
    """Turns bad input, usage errors and a full disk into one line on stderr and exit code 2."""

    def main(
        self, args: Any = None, prog_name: str | None = None, complete_var: str | None = None, **extra: Any
    ) -> Any:
        extra.pop("standalone_mode", None)
        try:
            code = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except click.UsageError as exc:
            click.echo(f"error: {usage_line(exc)}", err=True)
            sys.exit(exc.exit_code)
        except click.ClickException as exc:
            click.echo(f"error: {exc.format_message()}", err=True)
            sys.exit(exc.exit_code)
        except click.Abort:
            click.echo("aborted", err=True)
            sys.exit(1)
        sys.exit(code if isinstance(code, int) else 0)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except InputError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(2)
        except Exception as exc:
            full = disk_full(exc)
            if full is None:
                raise
            click.echo(f"error: {full}", err=True)
            sys.exit(2)


def usage_line(exc: click.UsageError) -> str:
    """A click usage error as one line: the command, the message, where help is."""
    command = exc.ctx.command_path if exc.ctx is not None else "prealign-data"
    message = " ".join(exc.format_message().split())
    return f"{command}: {message} (see '{command} --help')"


@click.group(
    "prealign-data", cls=Group, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100}
)
@click.version_option(__version__, prog_name="prealign-data")
def main() -> None:
    """Bilingual lexicons, code-switched shards and PreAlign models from parallel text.

    Start with `prealign-data demo`, then `prealign-data extract-lexicon --help`.
    """


def _options(*decorators: F) -> F:
    def apply(func: F) -> F:
        for d in reversed(decorators):
            func = d(func)
        return func

    return apply


existing = click.Path(exists=False, dir_okay=False, path_type=Path)
SEGMENTER_CHOICES = ("default", "chars", "whitespace", "jieba", "sudachi", "pythainlp")  # prealign.text.SEGMENTERS

input_options = _options(
    click.argument("pairs", required=False, type=existing),
    click.option("--src", type=existing, help="Source-language file, one sentence a line (with --tgt)."),
    click.option("--tgt", type=existing, help="Target-language file, line-aligned with --src."),
    click.option("--src-column", default="src", show_default=True, help="Source column of Parquet/Arrow/JSONL."),
    click.option("--tgt-column", default="tgt", show_default=True, help="Target column of Parquet/Arrow/JSONL."),
    click.option(
        "--src-lang",
        help="Source language (ISO 639: en, fr, zh, zh-Hant, ja, th, ...): chooses the word segmenter (zh: jieba, "
        "ja: sudachi, th: pythainlp, each an extra; others: split at spaces and punctuation) and the apostrophe "
        "rule; recorded. See docs/languages.md.",
    ),
    click.option("--tgt-lang", help="Target language, as --src-lang."),
    click.option(
        "--src-segmenter",
        type=click.Choice(SEGMENTER_CHOICES),
        help="Override the source side's segmenter: chars (every CJK/Thai character a word), whitespace (already "
        "segmented), default (spaces and punctuation), jieba, sudachi, pythainlp.",
    ),
    click.option("--tgt-segmenter", type=click.Choice(SEGMENTER_CHOICES), help="Override the target side's, as above."),
    click.option(
        "--chinese-script",
        type=click.Choice(["simplified", "traditional"]),
        help="Map the Chinese side(s) (language zh) to Simplified or Traditional characters before counting "
        "(OpenCC, [zh] extra); recorded in the lexicon's metadata.",
    ),
    click.option("--lowercase/--keep-case", default=True, show_default=True, help="Lowercase words."),
    click.option("--pretokenized", is_flag=True, help="Input is already tokenised: split on whitespace only."),
)


_RAY_ADDRESS = click.option(
    "--ray-address",
    envvar="RAY_ADDRESS",
    help="Join this Ray cluster (host:port or 'auto'; `ray job submit` sets RAY_ADDRESS); default: an embedded "
    "local Ray on 127.0.0.1, stopped with the job.",
)
_QUIET = click.option("--quiet", "-q", is_flag=True, help="No progress bars.")
ray_options = _options(
    _RAY_ADDRESS,
    click.option("--workers", type=click.IntRange(min=0), help="Parallel tasks (default: all CPUs; 0: no Ray)."),
    _QUIET,
)
stage_ray_options = _options(  # extract-lexicon, align: their default may run in this process
    _RAY_ADDRESS,
    click.option(
        "--workers",
        type=click.IntRange(min=0),
        help="Parallel tasks (0: in this process, no Ray). Default: in this process on a machine of one CPU or "
        "an input under 32 MiB (Ray would not pay for itself there), else every CPU on an embedded Ray; the "
        "job says which. On a cluster the output must be on storage every node sees.",
    ),
    _QUIET,
)


def aligner_options(default_symmetrize: str) -> F:
    """Options of the word aligner and of the Ray job, shared by align and extract-lexicon."""
    return _options(
        click.option(
            "--aligner",
            type=click.Choice(["builtin", "eflomal", "simalign", "awesome"]),
            default="builtin",
            show_default=True,
            help="Word aligner. builtin: IBM Model 1 + HMM trained on the corpus itself, no download; eflomal: "
            "eflomal's sampler ([eflomal] extra); simalign, awesome: embedding aligners on a --model encoder "
            "([neural] extra). See docs/aligner.md.",
        ),
        click.option("--ibm1-iterations", default=5, show_default=True, help="builtin: EM iterations of Model 1."),
        click.option(
            "--hmm-iterations", default=5, show_default=True, help="builtin: HMM EM iterations (0: Model 1 only)."
        ),
        click.option(
            "--agreement/--no-agreement",
            default=True,
            show_default=True,
            help="builtin: train both directions to agree (product of link posteriors).",
        ),
        click.option("--p0", default=0.2, show_default=True, help="builtin: HMM probability of the empty word."),
        click.option(
            "--model",
            help="simalign, awesome: the encoder, a local directory or a Hugging Face name "
            "(e.g. bert-base-multilingual-cased, xlm-roberta-base).",
        ),
        click.option(
            "--device",
            type=click.Choice(["auto", "cpu", "cuda"]),
            default="auto",
            show_default=True,
            help="simalign, awesome: where the model runs (auto: CUDA when a GPU is seen).",
        ),
        click.option(
            "--batch-size",
            type=click.IntRange(min=1),
            default=32,
            show_default=True,
            help="simalign, awesome: sentence pairs per forward pass.",
        ),
        click.option(
            "--layer",
            type=click.IntRange(min=0),
            default=8,
            show_default=True,
            help="simalign, awesome: the hidden layer compared (0: the embeddings).",
        ),
        click.option(
            "--method",
            type=click.Choice(["argmax", "itermax", "match", "softmax"]),
            help="Link extraction. simalign: argmax (default, mutual best), itermax, match; awesome: softmax.",
        ),
        click.option(
            "--softmax-threshold",
            type=click.FloatRange(0.0, 1.0, min_open=True, max_open=True),
            default=1e-3,
            show_default=True,
            help="awesome: minimum softmax probability in both directions.",
        ),
        click.option(
            "--symmetrize",
            type=click.Choice(["grow-diag-final-and", "intersect", "union", "forward", "backward"]),
            default=default_symmetrize,
            show_default=True,
            help="builtin, eflomal: how the two directions' links combine (simalign and awesome give one "
            "alignment, by --method).",
        ),
        stage_ray_options,
    )


BUILTIN_OPTIONS = ("ibm1_iterations", "hmm_iterations", "agreement", "p0")
NEURAL_OPTIONS = ("model", "device", "batch_size", "layer", "method", "softmax_threshold")


def _given(names: tuple[str, ...]) -> list[str]:
    """Those of ``names`` the user set (command line or environment), as option names."""
    ctx = click.get_current_context()
    default = (click.core.ParameterSource.DEFAULT, None)
    return ["--" + n.replace("_", "-") for n in names if ctx.get_parameter_source(n) not in default]


def _backend(kw: dict[str, Any]) -> tuple[str, Any]:
    """The --aligner and its options (checked: options of another aligner, missing --model, extras)."""
    from prealign.lexicon.aligners import NEURAL, make_aligner

    backend = kw.pop("aligner")
    neural = {n: kw.pop(n) for n in NEURAL_OPTIONS}
    misplaced = (_given(BUILTIN_OPTIONS) if backend != "builtin" else []) + (
        _given(NEURAL_OPTIONS) if backend not in NEURAL else []
    )
    if misplaced:
        verb = "does" if len(misplaced) == 1 else "do"
        raise click.UsageError(f"{', '.join(misplaced)} {verb} not apply to --aligner {backend}")
    if backend not in NEURAL:
        if backend != "builtin":
            make_aligner(backend)  # a missing extra: error now, before reading the input
        return backend, None
    from prealign.lexicon.aligners.neural import NeuralConfig

    if _given(("symmetrize",)):
        raise click.UsageError(f"--symmetrize does not apply to --aligner {backend}: --method gives one alignment")
    if neural["model"] is None:
        raise click.UsageError(
            f"--aligner {backend} needs --model: a local model directory or a Hugging Face name "
            "(e.g. bert-base-multilingual-cased)"
        )
    method = neural["method"] or ("argmax" if backend == "simalign" else "softmax")
    try:
        config = NeuralConfig(
            model=neural["model"],
            method=method,
            device=neural["device"],
            batch_size=neural["batch_size"],
            layer=neural["layer"],
            threshold=neural["softmax_threshold"],
        )
        make_aligner(backend, config)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--method") from exc
    return backend, config


def too_long_line(aligner: dict[str, Any]) -> str | None:
    """The summary line about pairs the aligner's length limit left unaligned, if there were any."""
    if not aligner.get("too_long"):
        return None
    limit = f"{aligner['max_tokens']} tokens" if "max_tokens" in aligner else f"{aligner['max_words']} words"
    n = aligner["too_long"]
    return f"not aligned: {n:,} pair{'s' if n > 1 else ''} with a side over the {aligner['name']} limit ({limit})"


def _job_fields(kw: dict[str, Any]) -> dict[str, Any]:
    """Turn the shared options into AlignJob fields."""
    from prealign.lexicon.em import BuiltinConfig
    from prealign.pipelines.extract import ParallelInput
    from prealign.text import side_segmenters

    pairs, src, tgt = kw.pop("pairs"), kw.pop("src"), kw.pop("tgt")
    if pairs is None and (src is None or tgt is None):
        raise click.UsageError("give a PAIRS file, or both --src and --tgt")
    if pairs is not None and (src is not None or tgt is not None):
        raise click.UsageError("give either a PAIRS file or --src/--tgt, not both")
    src_seg, tgt_seg = side_segmenters(
        (kw["src_lang"], kw.pop("src_segmenter")),
        (kw["tgt_lang"], kw.pop("tgt_segmenter")),
        lowercase=kw.pop("lowercase"),
        pretokenized=kw.pop("pretokenized"),
        chinese_script=kw.pop("chinese_script"),
    )
    try:
        aligner = BuiltinConfig(
            ibm1_iterations=kw.pop("ibm1_iterations"),
            hmm_iterations=kw.pop("hmm_iterations"),
            agreement=kw.pop("agreement"),
            p0=kw.pop("p0"),
        )
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from exc
    backend, backend_options = _backend(kw)
    return {
        "data": ParallelInput(src, tgt, pairs, kw.pop("src_column"), kw.pop("tgt_column")),
        "src_segmenter": src_seg,
        "tgt_segmenter": tgt_seg,
        "aligner": aligner,
        "symmetrize": kw.pop("symmetrize"),
        "ray_address": kw.pop("ray_address"),
        "workers": kw.pop("workers"),
        "progress": not kw.pop("quiet"),
        "backend": backend,
        "backend_options": backend_options,
    }


@main.command("extract-lexicon")
@input_options
@aligner_options("intersect")
@click.option(
    "-o",
    "--output",
    type=existing,
    required=True,
    help="Lexicon file: .parquet, .tsv, .jsonl, or .json (PreAlign's dictionary format).",
)
@click.option("--links", "links_output", type=existing, help="Also write the kept pairs' links (Pharaoh).")
@click.option("--min-words", default=1, show_default=True, help="Drop pairs with a side shorter than this.")
@click.option("--max-words", default=80, show_default=True, help="Drop pairs with a side longer than this.")
@click.option("--max-ratio", default=3.0, show_default=True, help="Drop pairs whose side lengths differ more.")
@click.option("--dedup/--no-dedup", default=True, show_default=True, help="Drop exact duplicate pairs.")
@click.option(
    "--near-dedup/--no-near-dedup", default=True, show_default=True, help="Drop MinHash LSH near-duplicate pairs."
)
@click.option("--minhash-threshold", default=0.8, show_default=True, help="Jaccard similarity of a near duplicate.")
@click.option("--minhash-perm", default=64, show_default=True, help="MinHash permutations.")
@click.option("--shingle-size", default=3, show_default=True, help="Word n-gram size of MinHash shingles.")
@click.option("--seed", default=1, show_default=True, help="Seed of the MinHash permutations (EM has no randomness).")
@click.option("--min-count", default=2, show_default=True, help="Keep pairs linked at least this often.")
@click.option("--min-prob", default=0.01, show_default=True, help="Minimum p(tgt|src).")
@click.option("--min-rev-prob", default=0.0, show_default=True, help="Minimum p(src|tgt).")
@click.option("--top-k", default=0, show_default=True, help="Keep the k best translations per word (0: all).")
@click.option("--keep-non-words", is_flag=True, help="Keep punctuation and numbers in the lexicon.")
@click.option(
    "--max-span",
    type=click.IntRange(1, 8),
    default=2,
    show_default=True,
    help="Multi-word entries: a word aligned (grow-diag-final-and, anchored by --symmetrize's links) to a "
    "contiguous run of 2..N words on the other side becomes one entry, e.g. everybody -> tout le monde "
    "(1: single words only, as before). See docs/languages.md.",
)
@click.option("--overwrite", is_flag=True, help="Replace an existing lexicon (or --links) that another run wrote.")
@click.option(
    "--score",
    type=click.Choice(["lower-bound", "geometric"]),
    default="lower-bound",
    show_default=True,
    help="lower-bound: 95% lower bound of p(tgt|src); geometric: sqrt(p(tgt|src) * p(src|tgt)).",
)
def extract_lexicon_cmd(**kw: Any) -> None:
    """Extract a scored bilingual lexicon from parallel text.

    Input: PAIRS (`src ||| tgt` lines, TSV, Parquet, Arrow or JSONL; .gz/.zst ok) or --src/--tgt
    line-aligned files. Pairs are cleaned and deduplicated, words aligned both ways and symmetrised, and
    aligned word pairs counted and scored. Writes the lexicon and OUTPUT.stats.json (every input pair
    counted as kept or dropped by reason). Run again with the same inputs and options, it does nothing.
    """
    from prealign.lexicon.clean import CleanConfig
    from prealign.lexicon.score import LexiconConfig
    from prealign.pipelines.extract import ExtractJob, extract_lexicon

    try:
        cleaning = CleanConfig(
            min_words=kw.pop("min_words"),
            max_words=kw.pop("max_words"),
            max_ratio=kw.pop("max_ratio"),
            dedup=kw.pop("dedup"),
            near_dedup=kw.pop("near_dedup"),
            minhash_threshold=kw.pop("minhash_threshold"),
            minhash_perm=kw.pop("minhash_perm"),
            shingle_size=kw.pop("shingle_size"),
            seed=kw.pop("seed"),
        )
        lexicon = LexiconConfig(
            min_count=kw.pop("min_count"),
            min_p_tgt_given_src=kw.pop("min_prob"),
            min_p_src_given_tgt=kw.pop("min_rev_prob"),
            top_k=kw.pop("top_k"),
            words_only=not kw.pop("keep_non_words"),
            score=kw.pop("score"),
        )
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from exc
    fields = _job_fields(kw)
    job = ExtractJob(
        **fields,
        overwrite=kw["overwrite"],
        output=kw["output"],
        clean=cleaning,
        lexicon=lexicon,
        links_output=kw["links_output"],
        src_lang=kw["src_lang"],
        tgt_lang=kw["tgt_lang"],
        max_span=kw["max_span"],
    )
    stats = extract_lexicon(job)
    from prealign.pipelines.report import extract_summary

    if stats.get("already_done"):
        click.echo(f"extract-lexicon: already done (same inputs and options) -> {job.output}")
        return
    click.echo(extract_summary(stats, job.output))
    if too_long_line(stats["aligner"]):
        click.echo(too_long_line(stats["aligner"]))


@main.command("align")
@input_options
@aligner_options("grow-diag-final-and")
@click.option("-o", "--output", type=existing, required=True, help="Links file (Pharaoh i-j, 0-indexed).")
@click.option(
    "--max-words",
    type=click.IntRange(min=1),
    default=200,
    show_default=True,
    help="Leave a pair with a side longer than this unaligned (an empty line; counted in the summary).",
)
@click.option("--overwrite", is_flag=True, help="Replace an existing links file that another run wrote.")
def align_cmd(**kw: Any) -> None:
    """Word-align parallel text: one line of `i-j` links per input pair, in input order (no cleaning).

    Also writes OUTPUT.stats.json (what the run did); run again with the same inputs and options, it does
    nothing.
    """
    from prealign.pipelines.extract import AlignJob, align
    from prealign.pipelines.report import align_summary

    output, max_words, overwrite = kw.pop("output"), kw.pop("max_words"), kw.pop("overwrite")
    fields = _job_fields(kw)
    summary = align(AlignJob(**fields, max_words=max_words, overwrite=overwrite), output)
    if summary.get("already_done"):
        click.echo(f"align: already done (same inputs and options) -> {output}")
        return
    click.echo(align_summary(summary, output))
    if too_long_line(summary["aligner"]):
        click.echo(too_long_line(summary["aligner"]))


@main.command("eval-align")
@click.argument("links", type=existing)
@click.option("--gold", type=existing, required=True, help="Gold links: i-j sure, ipj possible.")
@click.option(
    "--gold-index",
    type=click.Choice(["auto", "0", "1"]),
    default="auto",
    show_default=True,
    help="Gold indexing; auto: 1-based unless some index is 0.",
)
@click.option("--one-indexed", is_flag=True, help="LINKS are 1-indexed.")
@click.option(
    "--pairs",
    type=existing,
    help="The aligned sentence pairs (`src ||| tgt`, TSV, ...): warn when a link lies past a sentence's "
    "whitespace tokens (links made on another tokenisation than the gold's).",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def eval_align_cmd(links: Path, gold: Path, gold_index: str, one_indexed: bool, pairs: Path, as_json: bool) -> None:
    """Alignment error rate, precision and recall of LINKS against gold links.

    When LINKS has more lines than the gold, only the first lines are scored (the standard setting aligns
    the gold pairs first, then extra data). Gold indices count the gold's whitespace tokens: align the gold
    pairs with --pretokenized (a warning on stderr says when LINKS does not fit them).
    """
    from prealign.pipelines.report import evaluate_alignment_files

    scores, warning = evaluate_alignment_files(links, gold, gold_index, one_indexed, pairs)
    if warning:
        click.echo(warning, err=True)
    if as_json:
        click.echo(json.dumps(scores))
    else:
        click.echo(
            f"AER {scores['aer']:.4f}  precision {scores['precision']:.4f}  recall {scores['recall']:.4f}"
            f"  ({scores['sentences']} sentences, {scores['links']} links)"
        )


@main.command("eval-lexicon")
@click.argument("lexicon", type=existing)
@click.option("--gold", type=existing, required=True, help="Gold dictionary: src<TAB>tgt per line.")
@click.option(
    "--min-count",
    default=0,
    show_default=True,
    help="Score only source words aligned at least this many times in the corpus.",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def eval_lexicon_cmd(lexicon: Path, gold: Path, min_count: int, as_json: bool) -> None:
    """P@1, P@5 and coverage of a lexicon against a gold dictionary (exact, case-sensitive strings)."""
    from prealign.pipelines.report import evaluate_lexicon_file

    scores = evaluate_lexicon_file(lexicon, gold, min_count)
    if as_json:
        click.echo(json.dumps(scores))
    else:
        click.echo(
            f"P@1 {scores['p@1']:.4f}  P@5 {scores['p@5']:.4f}  coverage {scores['coverage']:.4f}"
            f"  ({scores['evaluated']} of {scores['gold_words']} gold source words)"
        )


@main.command("switch")
@click.argument("corpus", nargs=-1, required=True, type=existing)
@click.option(
    "--lexicon",
    type=existing,
    required=True,
    multiple=True,
    help="Lexicon from extract-lexicon or `lexicon merge` (.parquet/.tsv/.jsonl). Repeat it to switch into several "
    "languages (bilingual lexicons sharing a source language, each with its tgt_lang in its metadata).",
)
@click.option(
    "--lang-weights",
    callback=lambda ctx, param, value: _lang_weights(value),
    help="Target-language weights, like fr=1,zh=2: a switched word goes into one of the languages it has a "
    "translation in, in proportion to these (default: 1 each; 0: never that language).",
)
@click.option("--tokenizer", type=click.Path(path_type=Path), required=True, help="tokenizer.json or its directory.")
@click.option("--ratio", type=float, required=True, help="Probability that a word with a lexicon entry is switched.")
@click.option(
    "-o", "--output", type=click.Path(file_okay=False, path_type=Path), required=True, help="Shard directory."
)
@click.option("--text-column", default="text", show_default=True, help="Text column of JSONL/Parquet input.")
@click.option(
    "--lang",
    help="The documents' language (ISO 639): chooses the word segmenter as in extract-lexicon. Default: the "
    "lexicon's source-side segmenter, so that documents are cut into the lexicon's own words.",
)
@click.option("--segmenter", type=click.Choice(SEGMENTER_CHOICES), help="Override the documents' segmenter.")
@click.option("--seed", default=0, show_default=True, help="Seed of the switching draws.")
@click.option(
    "--choice",
    type=click.Choice(["weighted", "uniform", "top"]),
    default="weighted",
    show_default=True,
    help="Translation choice: by p(tgt|src), uniform, or always the best.",
)
@click.option("--min-prob", default=0.0, show_default=True, help="Use lexicon rows with p(tgt|src) at least this.")
@click.option("--min-count", default=1, show_default=True, help="Use lexicon rows linked at least this often.")
@click.option(
    "--labels",
    type=click.Choice(["input-only", "switched"]),
    default="input-only",
    show_default=True,
    help="input-only: targets stay the original text (PreAlign); switched: labels = input_ids.",
)
@click.option("--seq-len", default=1024, show_default=True, help="Packed rows hold seq-len + 1 tokens.")
@click.option("--pack/--no-pack", default=True, show_default=True, help="Pack documents, or one document per row.")
@click.option("--shard-rows", default=8192, show_default=True, help="Rows per shard file.")
@click.option(
    "--bos",
    metavar="TOKEN|none",
    help="Begin each document with this token of the tokenizer, or not (none). Default: as the tokenizer "
    "directory's tokenizer_config.json says (bos_token, add_bos_token); a plain tokenizer.json: none.",
)
@click.option(
    "--eos",
    metavar="TOKEN|none",
    help="The token after each packed document (the separator), a token of the tokenizer, or none (only with "
    "--no-pack). Default: the config's eos_token, else an end-of-text token found by name (</s>, <|endoftext|>...).",
)
@click.option(
    "--allow-low-coverage",
    is_flag=True,
    help="Write the shards even when under 1% of words have a lexicon entry or over half are unswitchable "
    "(otherwise an error, exit code 2); the summary warns.",
)
@click.option("--overwrite", is_flag=True, help="Replace another run's shards in the output directory.")
@ray_options
def switch_cmd(corpus: tuple[Path, ...], **kw: Any) -> None:
    """Write code-switched, tokenised Arrow shards from monolingual text.

    CORPUS: text files (one document a line), JSONL or Parquet (--text-column); .gz/.zst ok. Each word with a
    lexicon entry is replaced by a translation with probability --ratio, in the input only (default labels).
    With several target languages (a multi-way lexicon, or --lexicon repeated) a switched word's language is
    drawn by --lang-weights among those it has a translation in; the manifest reports the rate per language.
    Output is byte-identical for any number of workers.
    """
    from prealign.codeswitch.table import SwitchConfig
    from prealign.pipelines.switch_job import SwitchJob, switch_corpus, switch_report

    try:
        config = SwitchConfig(
            ratio=kw["ratio"],
            seed=kw["seed"],
            choice=kw["choice"],
            min_prob=kw["min_prob"],
            min_count=kw["min_count"],
            labels=kw["labels"],
        )
    except ValueError as exc:
        raise InputError(str(exc)) from exc
    job = SwitchJob(
        corpus=list(corpus),
        lexicon=list(kw["lexicon"]),
        lang_weights=kw["lang_weights"],
        tokenizer=kw["tokenizer"],
        output=kw["output"],
        config=config,
        text_column=kw["text_column"],
        seq_len=kw["seq_len"],
        pack=kw["pack"],
        shard_rows=kw["shard_rows"],
        overwrite=kw["overwrite"],
        ray_address=kw["ray_address"],
        workers=kw["workers"],
        progress=not kw["quiet"],
        lang=kw["lang"],
        segmenter=kw["segmenter"],
        bos=kw["bos"],
        eos=kw["eos"],
        allow_low_coverage=kw["allow_low_coverage"],
    )
    click.echo(switch_report(switch_corpus(job), job.output))


def _lang_weights(value: str | None) -> dict[str, float] | None:
    from prealign.lexicon.multiway import parse_lang_weights

    if value is None:
        return None
    try:
        return parse_lang_weights(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="'--lang-weights'") from None


@main.group("lexicon")
def lexicon_group() -> None:
    """Work on lexicon files: join bilingual lexicons into a multi-way one."""


@lexicon_group.command("merge")
@click.argument("lexicons", nargs=-1, required=True, type=existing)
@click.option(
    "-o", "--output", type=existing, required=True, help="The multi-way lexicon: .parquet, .tsv, .jsonl or .json."
)
@click.option(
    "--tgt-langs",
    help="Target language of each input, comma-separated in input order, for lexicons whose metadata has no "
    "tgt_lang ('-': from the metadata; a multi-way input always takes '-').",
)
@click.option("--require-all", is_flag=True, help="Keep only source words with a translation in every language.")
@click.option("--overwrite", is_flag=True, help="Replace an existing output file.")
def lexicon_merge_cmd(
    lexicons: tuple[Path, ...], output: Path, tgt_langs: str | None, require_all: bool, overwrite: bool
) -> None:
    """Join bilingual lexicons on their source (pivot) language into one multi-way lexicon.

    LEXICONS: lexicons from extract-lexicon (or multi-way ones) sharing a source language, each with a
    different target language (from its metadata, or --tgt-langs). The output has a tgt_lang column and keeps
    every row's scores; .json writes PreAlign's dictionary, one {"words": "bank $ banque $ 银行"} per word.
    """
    from prealign.lexicon.multiway import merge_files, parse_languages
    from prealign.outputs import check_outputs

    try:
        langs = parse_languages(tgt_langs) if tgt_langs is not None else None
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="'--tgt-langs'") from None
    check_outputs(list(lexicons), {"-o": output})
    if output.exists() and not overwrite:
        raise InputError("exists; pass --overwrite to replace it", output)
    summary = merge_files(lexicons, output, langs, require_all)
    per_lang = ", ".join(f"{lang} {v['pivot_words']:,} words" for lang, v in summary["languages"].items())
    click.echo(
        f"lexicon merge: {summary['pivot_words']:,} source words, {summary['rows']:,} rows in "
        f"{len(summary['languages'])} language(s) ({per_lang}) -> {output}"
    )


@main.group("tokenizer")
def tokenizer_group() -> None:
    """Train the byte-level BPE tokenizer that code-switched shards are made with."""


@tokenizer_group.command("train")
@click.argument("corpus", nargs=-1, required=True, type=existing)
@click.option("--vocab-size", type=click.IntRange(min=258), required=True, help="Vocabulary size, specials included.")
@click.option("-o", "--output", type=existing, required=True, help="Where to write tokenizer.json.")
@click.option("--min-frequency", default=2, show_default=True, help="Merge only pairs seen at least this often.")
@click.option("--text-column", default="text", show_default=True, help="Text column of JSONL/Parquet input.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
def tokenizer_train_cmd(
    corpus: tuple[Path, ...], vocab_size: int, output: Path, min_frequency: int, text_column: str, quiet: bool
) -> None:
    """Train a byte-level BPE tokenizer on CORPUS files (text, .gz/.zst, JSONL or Parquet) of all languages.

    Special tokens: <|endoftext|> (id 0) and <|pad|> (id 1). The same files give a byte-identical tokenizer.
    """
    from prealign.codeswitch.tokenizer import train_tokenizer_file

    info = train_tokenizer_file(
        list(corpus), output, vocab_size, min_frequency=min_frequency, text_column=text_column, show_progress=not quiet
    )
    click.echo(f"tokenizer: {info.vocab_size:,} tokens, sha256 {info.sha256} -> {output}")


shard_dir = click.Path(exists=True, file_okay=False, path_type=Path)


@main.command("export")
@click.argument("directory", type=shard_dir)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["nanogpt"]),
    default="nanogpt",
    show_default=True,
    help="nanogpt: train.bin, val.bin (token ids), train_labels.bin, val_labels.bin (int32), meta.pkl, meta.json.",
)
@click.option(
    "-o", "--output-dir", type=click.Path(file_okay=False, path_type=Path), required=True, help="Where files go."
)
@click.option(
    "--val-fraction",
    type=float,
    default=0.01,
    show_default=True,
    help="Share of the rows (the last ones, whole rows, at least one) written to val.bin.",
)
def export_cmd(directory: Path, fmt: str, output_dir: Path, val_fraction: float) -> None:
    """Export the code-switched shards in DIRECTORY to another trainer's format (checked first)."""
    from prealign.codeswitch.export import export_nanogpt

    meta = export_nanogpt(directory, output_dir, val_fraction)
    click.echo(
        f"exported {meta['rows']:,} rows, {meta['tokens']:,} tokens ({meta['dtype']}): train {meta['train_rows']:,} "
        f"rows, val {meta['val_rows']:,} rows -> {output_dir} (train.bin, val.bin, train_labels.bin, "
        "val_labels.bin, meta.pkl, meta.json)"
    )
    for warning in meta["warnings"]:
        click.echo(f"warning: {warning}", err=True)


@main.command("export-model")
@click.argument("run", type=click.Path(file_okay=False, path_type=Path))
@click.option(
    "-o", "--output", type=click.Path(file_okay=False, path_type=Path), required=True, help="Directory to write."
)
@click.option(
    "--dtype",
    type=click.Choice(["float32", "bfloat16"]),
    default="float32",
    show_default=True,
    help="Weight type in model.safetensors (and config.json's torch_dtype).",
)
@click.option("--overwrite", is_flag=True, help="Replace a directory that is not empty.")
def export_model_cmd(run: Path, output: Path, dtype: str, overwrite: bool) -> None:
    """Write RUN's model and tokenizer as a Hugging Face Llama directory.

    AutoModelForCausalLM.from_pretrained(DIR) loads it as LlamaForCausalLM and AutoTokenizer.from_pretrained(DIR)
    as PreTrainedTokenizerFast (config.json, model.safetensors, tokenizer.json, tokenizer_config.json,
    special_tokens_map.json). The directory appears whole or not at all.
    """
    from prealign.train.export_hf import export_model

    summary = export_model(run, output, dtype, overwrite)
    click.echo(
        f"exported {summary['parameters']:,} parameters ({dtype}, embeddings "
        f"{'tied' if summary['tied'] else 'untied'}) -> {output}"
    )


@main.command("inspect")
@click.argument("directory", type=shard_dir)
@click.option("--rows", "n_rows", type=click.IntRange(min=0), default=3, show_default=True, help="Rows to decode.")
@click.option(
    "--tokenizer",
    type=click.Path(exists=True, path_type=Path),
    help="Decode with this tokenizer.json or tokenizer directory (default: the one the manifest names).",
)
def inspect_cmd(directory: Path, n_rows: int, tokenizer: Path | None) -> None:
    """Summarise a shard directory, check every shard against the manifest, and decode a few rows.

    Switched input tokens are shown as [[...]]. Exit code 1 when a check fails.
    """
    from prealign.codeswitch.inspect_shards import inspect_shards

    result = inspect_shards(directory, n_rows, tokenizer)
    click.echo(result.report, nl=False)
    if not result.ok:
        sys.exit(1)


@main.group("train")
def train_group() -> None:
    """Train PreAlign models: alignment initialisation, then pretraining on code-switched shards."""


@train_group.command("align-init")
@click.option("--lexicon", type=existing, required=True, help="Lexicon (.parquet, .tsv or .jsonl).")
@click.option(
    "--tokenizer",
    "tokenizer_path",
    type=click.Path(path_type=Path),
    help="tokenizer.json or its directory (required, except with --hf-model whose directory holds one).",
)
@click.option("-o", "--output", type=click.Path(file_okay=False, path_type=Path), required=True, help="Run directory.")
@click.option(
    "--config",
    "size",
    type=click.Choice(["tiny", "mini", "small", "base", "150m"]),
    default="tiny",
    show_default=True,
    help="Model size (our model; ignored with --hf-model).",
)
@click.option(
    "--hf-model",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="Align a transformers causal LM instead: a model directory (its weights), or a directory with only "
    "config.json (random init). The run directory is then a transformers model directory. Needs [hf].",
)
@click.option("--steps", type=click.IntRange(min=1), default=2000, show_default=True, help="Optimizer steps.")
@click.option(
    "--batch-size", type=click.IntRange(min=2), default=256, show_default=True, help="Lexicon entries per step."
)
@click.option("--temperature", type=float, default=0.1, show_default=True, help="InfoNCE temperature.")
@click.option("--align-weight", type=float, default=0.1, show_default=True, help="Weight of the contrastive loss.")
@click.option(
    "--layers",
    default="all",
    show_default=True,
    help="'all' or comma-separated indices: 0 embedding, 1..L blocks, L+1 LM head (only when it is not tied to "
    "the embedding: tied, it is layer 0).",
)
@click.option("--lr", type=float, default=1e-3, show_default=True, help="Peak learning rate.")
@click.option(
    "--min-prob", type=float, default=0.0, show_default=True, help="Use lexicon rows with p(tgt|src) >= this."
)
@click.option("--min-count", type=int, default=1, show_default=True, help="Use lexicon rows linked >= this often.")
@click.option("--seed", type=int, default=0, show_default=True, help="Initialisation and sampling seed.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda, cuda:N.")
@click.option("--overwrite", is_flag=True, help="Replace a run already in the output directory.")
@click.option("--quiet", "-q", is_flag=True, help="No progress lines.")
def align_init_cmd(
    lexicon: Path,
    tokenizer_path: Path | None,
    output: Path,
    size: str,
    hf_model: Path | None,
    layers: str,
    overwrite: bool,
    quiet: bool,
    **kw: Any,
) -> None:
    """Alignment initialisation: train a model so that translations in LEXICON get similar states.

    Each lexicon word is fed alone; its token states are summed at every layer (embedding, each block, and the
    LM-head rows when the head is not tied) and an InfoNCE loss pulls translations together (positives: words
    that share a lexicon entry); total = LM loss + align-weight x mean align loss.
    """
    from prealign.outputs import check_outputs
    from prealign.train.align_init import AlignInitConfig, run_align_init

    check_outputs([lexicon, tokenizer_path, hf_model], {"-o": output}, directories=("-o",))
    try:
        layer_spec: Any = "all" if layers == "all" else [int(x) for x in layers.split(",") if x.strip()]
        config = AlignInitConfig(layers=layer_spec, **kw)
        echo = None if quiet else lambda m: click.echo(m, err=True)
        summary = run_align_init(
            lexicon, tokenizer_path, output, size, config, echo, overwrite=overwrite, hf_model=hf_model
        )
    except ValueError as exc:
        raise InputError(str(exc)) from None
    click.echo(f"align-init: {summary['steps']} steps, {summary['parameters']:,} parameters -> {output}")


@train_group.command("pretrain")
@click.option(
    "--shards",
    "shards",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Shard directory (manifest.json + shard-*.arrow).",
)
@click.option(
    "--init",
    "init_run",
    type=click.Path(file_okay=False, path_type=Path),
    help="Start from this run's weights (e.g. an align-init run); its tokenizer must match the shards'.",
)
@click.option("-o", "--output", required=True, type=click.Path(file_okay=False, path_type=Path), help="Run directory.")
@click.option(
    "--config",
    "model",
    default="tiny",
    show_default=True,
    type=click.Choice(["tiny", "mini", "small", "base", "150m"]),
    help="Model size.",
)
@click.option("--steps", default=1000, show_default=True, type=click.IntRange(min=1), help="Optimizer steps.")
@click.option("--batch-size", default=8, show_default=True, type=click.IntRange(min=1), help="Rows per micro-batch.")
@click.option("--grad-accum", default=1, show_default=True, type=click.IntRange(min=1), help="Micro-batches per step.")
@click.option("--lr", default=3e-4, show_default=True, type=float, help="Peak learning rate (cosine to 0.1x).")
@click.option("--warmup", default=100, show_default=True, type=click.IntRange(min=0), help="Linear warmup steps.")
@click.option(
    "--eval-every",
    default=200,
    show_default=True,
    type=click.IntRange(min=0),
    help="Evaluate on held-out shards every N steps (0: only at the end).",
)
@click.option(
    "--save-every",
    default=1000,
    show_default=True,
    type=click.IntRange(min=0),
    help="Checkpoint every N steps (0: only at the end).",
)
@click.option("--seed", default=0, show_default=True, type=int, help="Initialisation and data-order seed.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda, cuda:1, ...")
@click.option("--compile", "compile_", is_flag=True, help="torch.compile the model (CUDA only).")
@click.option(
    "--resume", is_flag=True, help="Continue the run in -o from its last checkpoint, with the options it recorded."
)
@click.option("--overwrite", is_flag=True, help="Replace a run already in -o (without --resume).")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
def train_pretrain_cmd(shards: Path, init_run: Path | None, output: Path, **kw: Any) -> None:
    """Pretrain a causal LM on code-switched shards (metrics in RUN/metrics.jsonl, checkpoints in RUN).

    With --init the model is the init run's (a --config that differs is an error); with --resume the run's
    recorded options are used, and an option given again must equal them (--device, --compile, --save-every
    and --eval-every may change).
    """
    from prealign.outputs import check_outputs
    from prealign.train.pretrain import PretrainConfig, pretrain

    check_outputs([shards, init_run], {"-o": output}, directories=("-o",))
    resume, overwrite, quiet = kw.pop("resume"), kw.pop("overwrite"), kw.pop("quiet")
    explicit = [name.removesuffix("_") for name in kw if _given((name,))]
    try:
        config = PretrainConfig(compile=kw.pop("compile_"), **kw)
    except ValueError as exc:
        raise InputError(str(exc)) from None
    summary = pretrain(
        shards, output, config, init_run, resume, progress=not quiet, overwrite=overwrite, explicit=explicit
    )
    click.echo(json.dumps(summary))


@train_group.command("eval")
@click.argument("run", type=click.Path(file_okay=False, path_type=Path))
@click.option(
    "--shards",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Shard directory (manifest.json + shard-*.arrow); its tokenizer must be the run's.",
)
@click.option("--lexicon", type=existing, help="Also report translation retrieval per layer on this lexicon's pairs.")
@click.option(
    "--max-pairs",
    default=5000,
    show_default=True,
    type=click.IntRange(min=0),
    help="Use the N lexicon pairs of highest count (ties: file order); 0: all.",
)
@click.option("--batch-size", default=8, show_default=True, type=click.IntRange(min=1), help="Rows per batch.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda, cuda:N.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
def train_eval_cmd(
    run: Path,
    shards: Path,
    lexicon: Path | None,
    max_pairs: int,
    batch_size: int,
    device: str,
    as_json: bool,
    quiet: bool,
) -> None:
    """Next-token loss of RUN's model over every row of --shards (token-weighted mean; labels as stored).

    Prints `loss` and `tokens` (label tokens counted); with --lexicon, a table of retrieval accuracy, pair
    cosine and random-pair cosine per layer (embedding output, each block, ...) and the chance accuracy.
    """
    from prealign.train.eval_run import evaluate_run, format_result

    result = evaluate_run(run, shards, lexicon, batch_size, device, max_pairs or None, progress=not quiet)
    click.echo(json.dumps(result) if as_json else format_result(result))


@main.command("plot")
@click.argument("runs", nargs=-1, required=True, type=click.Path(file_okay=False, path_type=Path))
@click.option(
    "-o", "--output", type=click.Path(dir_okay=False, path_type=Path), help="PNG to write (default: RUN/loss.png)."
)
def plot_cmd(runs: tuple[Path, ...], output: Path | None) -> None:
    """Plot train/eval loss of one or more runs (one line per run)."""
    from prealign.outputs import check_outputs
    from prealign.train.plot import plot_run

    check_outputs(runs, {"-o": output})
    click.echo(str(plot_run(list(runs), output)))


@main.group("clone")
def clone_group() -> None:
    """English-Clone: English written in a disjoint alphabet, for checking alignment end to end."""


@clone_group.command("make")
@click.argument("corpus", type=existing)
@click.option("-o", "--output", type=click.Path(file_okay=False, path_type=Path), required=True, help="Directory.")
@click.option("--max-lines", type=click.IntRange(min=1), help="Read at most this many non-blank lines.")
@click.option("--overwrite", is_flag=True, help="Replace a non-empty output directory.")
def clone_make_cmd(corpus: Path, output: Path, max_lines: int | None, overwrite: bool) -> None:
    """Write the Clone of an English CORPUS (one document a line, plain/.gz/.zst).

    Output: en.txt and clone.txt (line-aligned parallel text), lexicon.tsv (the true lexicon: word, clone,
    count) and clone.json (the character map). Check the aligner with `extract-lexicon --src DIR/en.txt --tgt
    DIR/clone.txt -o lex.parquet && eval-lexicon lex.parquet --gold DIR/lexicon.tsv`.
    """
    from prealign.outputs import check_outputs
    from prealign.train.clone import make_clone

    check_outputs([corpus], {"-o": output}, directories=("-o",))
    summary = make_clone(corpus, output, max_lines, overwrite)
    click.echo(f"clone: {summary['lines']:,} lines, {summary['words']:,} distinct words -> {output}")


@main.group("experiment")
def experiment_group() -> None:
    """Experiments that run the whole toolkit."""


@experiment_group.command("clone")
@click.option("--corpus", type=existing, required=True, help="English text, one document a line.")
@click.option("-o", "--output", type=click.Path(file_okay=False, path_type=Path), required=True, help="Directory.")
@click.option(
    "--config",
    "preset_name",
    type=click.Choice(["test", "tiny", "small", "gpu"]),
    default="tiny",
    show_default=True,
    help="Sizes: test (seconds), tiny (2-core CPU, ~20 min), small (CPU, hours), gpu (one H100).",
)
@click.option("--seeds", type=click.IntRange(min=1), default=2, show_default=True, help="Seeds per condition.")
@click.option(
    "--conditions",
    default="joint,prealign,init-only,switch-only",
    show_default=True,
    help="Comma-separated conditions: joint, prealign, init-only, switch-only; lm-init (a control: the init "
    "stage without its alignment loss) on request.",
)
@click.option("--steps", type=click.IntRange(min=1), help="Pretraining steps (overrides the config).")
@click.option("--init-steps", type=click.IntRange(min=1), help="Alignment-init steps (overrides the config).")
@click.option("--ratio", type=click.FloatRange(0, 1), help="Code-switching ratio (default 0.05).")
@click.option("--clone-share", type=click.FloatRange(0, 1, min_open=True, max_open=True), help="Share in Clone.")
@click.option("--max-lines", type=click.IntRange(min=1), help="Read at most this many corpus lines.")
@click.option("--device", help="auto, cpu, cuda (overrides the config).")
@click.option("--quiet", "-q", is_flag=True, help="No progress lines.")
def experiment_clone_cmd(
    corpus: Path, output: Path, preset_name: str, seeds: int, conditions: str, quiet: bool, **overrides: Any
) -> None:
    """Joint training vs PreAlign vs init only vs switching only on English + a little Clone, equal budgets.

    Writes OUTPUT/report.md (tables: held-out loss per language, knowledge learnt in English asked in Clone,
    zero-shot transfer, retrieval and cosine by layer; mean and sd over seeds), results.json and PNG plots,
    and prints the report. Finished steps are kept: rerun the same command to finish an interrupted run.
    """
    from prealign.outputs import check_outputs
    from prealign.pipelines.clone_experiment import CONDITIONS, EXTRA_CONDITIONS, preset, run_experiment

    check_outputs([corpus], {"-o": output}, directories=("-o",))
    chosen = tuple(c.strip() for c in conditions.split(",") if c.strip())
    unknown = [c for c in chosen if c not in CONDITIONS + EXTRA_CONDITIONS]
    if unknown or not chosen:
        raise click.BadParameter(f"choose from {', '.join(CONDITIONS + EXTRA_CONDITIONS)}", param_hint="--conditions")
    try:
        cfg = preset(preset_name, **overrides)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
    echo = (lambda _m: None) if quiet else (lambda m: click.echo(m, err=True))
    results = run_experiment(corpus, output, cfg, seeds, chosen, echo=echo)
    click.echo(Path(results["report"]).read_text("utf-8"))


@main.command("demo")
@click.option(
    "-o",
    "--output-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("prealign-demo"),
    show_default=True,
    help="Where the demo writes its files.",
)
@click.option("--pairs", "n_pairs", default=4000, show_default=True, help="Sentence pairs to generate.")
@click.option("--workers", type=click.IntRange(min=0), help="Parallel tasks (default: all CPUs; 0: no Ray).")
@click.option("--quiet", "-q", is_flag=True, help="No progress bars.")
def demo_cmd(output_dir: Path, n_pairs: int, workers: int | None, quiet: bool) -> None:
    """Run extract-lexicon on a built-in English-French corpus and score it against the known answer."""
    from prealign.pipelines.report import run_demo

    click.echo(run_demo(output_dir, n_pairs, workers, not quiet))


if __name__ == "__main__":
    main()
