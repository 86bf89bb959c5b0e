"""The English-Clone report: Markdown tables (mean and spread over seeds) and PNG plots from ``results.json``."""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from prealign.textio import atomic_write_text

# (title, how to read it, value of one run)
METRICS: tuple[tuple[str, str, Callable[[dict], float]], ...] = (
    ("Held-out loss, English", "lower is better", lambda r: r["heldout"]["en"]),
    ("Held-out loss, Clone", "lower is better", lambda r: r["heldout"]["clone"]),
    ("Knowledge probe in Clone, accuracy", "facts seen in English only", lambda r: r["knowledge_clone"]["accuracy"]),
    ("Knowledge probe in Clone, MRR", "facts seen in English only", lambda r: r["knowledge_clone"]["mrr"]),
    ("Knowledge probe in English, accuracy", "the facts' own language", lambda r: r["knowledge_en"]["accuracy"]),
    ("Transfer probe, Clone (zero-shot)", "classifier trained on English", lambda r: r["transfer"]["transfer"]),
    ("Transfer probe, English (held-out words)", "same classifier", lambda r: r["transfer"]["en"]),
)


def mean_sd(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    vals = [float(v) for v in values]
    return statistics.fmean(vals), statistics.stdev(vals) if len(vals) > 1 else 0.0


def _fmt(values: Sequence[float]) -> str:
    m, sd = mean_sd(values)
    return f"{m:.3f} ± {sd:.3f}" if len(values) > 1 else f"{m:.3f}"


def _by_condition(results: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {c: [] for c in results["conditions"]}
    for run in results["runs"]:
        out[run["condition"]].append(run)
    return {c: runs for c, runs in out.items() if runs}


def metric_table(results: dict[str, Any]) -> str:
    """One row per condition, one column per metric, mean ± sd over seeds."""
    groups = _by_condition(results)
    head = "| condition | " + " | ".join(title for title, _, _ in METRICS) + " |"
    lines = [head, "|" + "---|" * (len(METRICS) + 1)]
    for cond, runs in groups.items():
        lines.append(f"| {cond} | " + " | ".join(_fmt([get(r) for r in runs]) for _, _, get in METRICS) + " |")
    return "\n".join(lines)


def layer_table(results: dict[str, Any], key: str) -> str:
    """Retrieval ``accuracy`` or ``pair_cosine`` by layer (rows) and condition (columns)."""
    groups = _by_condition(results)
    first = next(iter(groups.values()))[0]["retrieval"]
    lines = ["| layer | " + " | ".join(groups) + " |", "|" + "---|" * (len(groups) + 1)]
    for i, layer in enumerate(first):
        cells = [_fmt([r["retrieval"][i][key] for r in runs]) for runs in groups.values()]
        lines.append(f"| {layer['name']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def render(results: dict[str, Any]) -> str:
    """The Markdown report."""
    cfg = results["config"]
    data = results["data"]
    runs = results["runs"]
    first = runs[0]
    q = data["lexicon_quality"]
    k_chance = first["knowledge_clone"]["chance"]
    t_chance = first["transfer"]["chance"]
    r_chance = first["retrieval"][0]["chance"]
    tokens = cfg["steps"] * cfg["batch_size"] * (cfg["seq_len"] + 1)
    rates = [r["switch"]["switched_per_word_with_entry"] for r in runs if "switch" in r]
    init_tokens = [r["init_tokens"] for r in runs if r.get("init_tokens")]
    init_note = f" = {statistics.fmean(init_tokens):,.0f} word tokens" if init_tokens else ""
    parts = [
        "# English-Clone experiment",
        "",
        f"Corpus `{results['corpus']}`: {data['train_lines']:,} training lines ({data['english_lines']:,} English, "
        f"{data['clone_lines']:,} in Clone = {cfg['clone_share']:.0%}), {data['eval_lines']:,} held-out lines "
        f"(English and their Clone), {data['facts']} facts stated {cfg['fact_repeats']} times each in English only. "
        f"Joint vocabulary {data['joint_vocab']:,} (English BPE {data['english_vocab']:,}). Model `{cfg['model']}` "
        f"{cfg['model_overrides'] or ''}; every condition trains {cfg['steps']:,} steps x {cfg['batch_size']} rows x "
        f"{cfg['seq_len'] + 1} tokens = {tokens:,} tokens; alignment init: {cfg['init_steps']} steps of "
        f"{cfg['init_batch']} lexicon entries{init_note} (not counted in the budget). Seeds: {results['seeds']}.",
        "",
        f"Lexicon extracted by the built-in aligner from the parallel English/Clone training text: "
        f"{data['lexicon_entries']:,} entries; P@1 against the true lexicon {q['all']['p@1']:.3f} over all "
        f"{q['all']['evaluated']:,} source words it covers, {q['count>=5']['p@1']:.3f} over words seen >= 5 times "
        f"(coverage {q['count>=5']['coverage']:.3f}).",
    ]
    if rates:
        parts.append(
            f"Code-switching ratio {cfg['ratio']}; realised {statistics.fmean(rates):.4f} of the English words "
            "with a lexicon entry."
        )
    random_cos = ", ".join(f"{x['random_cosine']:.2f}" for x in first["retrieval"])
    parts += [
        "",
        f"## Results (mean ± sd over {results['seeds']} seed(s))",
        "",
        f"Chance: knowledge probe {k_chance:.3f} (always answering a relation's most frequent value: "
        f"{first['knowledge_clone'].get('majority', float('nan')):.3f}), transfer probe {t_chance:.3f}.",
        "",
        metric_table(results),
        "",
        f"## Translation retrieval accuracy by layer (chance {r_chance:.4f})",
        "",
        layer_table(results, "accuracy"),
        "",
        "## Mean cosine of translation pairs by layer",
        "",
        f"(random pairs, seed 0 of the first condition, layer by layer: {random_cos})",
        "",
        layer_table(results, "pair_cosine"),
        "",
        "![held-out loss during training](loss_curves.png)",
        "",
        "![similarity by layer](similarity_by_layer.png)",
        "",
        "Timings (s): "
        + ", ".join(f"{k} {v}" for k, v in results["timings"].items())
        + f"; total {results['seconds']}",
    ]
    return "\n".join(parts) + "\n"


def plot(results: dict[str, Any], output: Path) -> list[Path]:
    """``loss_curves.png`` (held-out English and Clone loss against tokens) and ``similarity_by_layer.png``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = _by_condition(results)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    for ax, lang in zip(axes, ("en", "clone"), strict=True):
        for i, (cond, runs) in enumerate(groups.items()):
            xs = [p["tokens"] for p in runs[0]["curve"]]
            ys = [statistics.fmean(r["curve"][k][lang] for r in runs) for k in range(len(xs))]
            ax.plot(xs, ys, marker="o", ms=3, color=colours[i % len(colours)], label=cond)
        ax.set_title(f"held-out loss, {'English' if lang == 'en' else 'Clone'}")
        ax.set_xlabel("training tokens")
        ax.set_ylabel("loss")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    curves = output / "loss_curves.png"
    fig.savefig(curves, dpi=110)
    plt.close(fig)

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    for ax, key, title in zip(axes, ("accuracy", "pair_cosine"), ("retrieval accuracy", "pair cosine"), strict=True):
        for i, (cond, runs) in enumerate(groups.items()):
            layers = runs[0]["retrieval"]
            ys = [statistics.fmean(r["retrieval"][k][key] for r in runs) for k in range(len(layers))]
            ax.plot(range(len(layers)), ys, marker="o", color=colours[i % len(colours)], label=cond)
        ax.set_xticks(range(len(layers)), [x["name"] for x in layers], rotation=30, fontsize=8)
        ax.set_title(f"English-Clone {title} by layer")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    sims = output / "similarity_by_layer.png"
    fig.savefig(sims, dpi=110)
    plt.close(fig)
    return [curves, sims]


def write_report(results: dict[str, Any], output: Path) -> Path:
    """Write ``report.md`` and the plots into ``output``; returns the report's path."""
    plot(results, output)
    path = output / "report.md"
    atomic_write_text(path, render(results))
    return path
