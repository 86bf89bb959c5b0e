"""Probes of cross-lingual transfer for the English-Clone experiment, computed from the model only.

* Knowledge: invented entities with attributes (where they live, what they work as) are stated in English
  training text only; the probe asks the same sentence start in a language (English or Clone) and ranks the
  true attribute among every value of that relation by the model's log-probability of the continuation.
* Zero-shot transfer: a logistic-regression classifier of word categories (numbers, colours, family, ...) is
  trained on English word vectors and tested on held-out words, in English and in Clone.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from tokenizers import Tokenizer

from prealign.train.align_init import pad_ids
from prealign.train.model import Transformer


@dataclass(frozen=True)
class Relation:
    """Sentence templates stating ``{entity}``'s value, the probe's sentence start, the possible values."""

    name: str
    templates: tuple[str, ...]
    prompt: str
    values: tuple[str, ...]


# Brown-style text (punctuation separated by spaces); every value is a frequent word of Brown
RELATIONS = (
    Relation(
        "city",
        ("{e} lives in {v} .", "{e} was born in {v} and never left .", "Everyone knows that {e} lives in {v} ."),
        "{e} lives in",
        ("Boston", "Chicago", "London", "Paris", "Texas", "Washington", "Moscow", "Rome"),
    ),
    Relation(
        "job",
        ("{e} works as a {v} .", "For many years {e} has been a {v} .", "People say {e} works as a {v} ."),
        "{e} works as a",
        ("doctor", "teacher", "farmer", "lawyer", "soldier", "writer", "painter", "driver"),
    ),
)


@dataclass(frozen=True)
class Fact:
    entity: str
    relation: str
    value: str


_ONSETS = ("b", "d", "f", "g", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z", "br", "dr", "gr", "kl", "tr")
_VOWELS = ("a", "e", "i", "o", "u")
_CODAS = ("", "", "n", "r", "l", "s", "k")


def invented_names(n: int, seed: int, avoid: set[str] = frozenset()) -> list[str]:
    """``n`` distinct pronounceable capitalised names of three syllables, none in ``avoid`` (lowercase)."""
    rng = random.Random(seed)
    names: list[str] = []
    seen: set[str] = set(avoid)
    while len(names) < n:
        word = "".join(rng.choice(_ONSETS) + rng.choice(_VOWELS) for _ in range(3)) + rng.choice(_CODAS)
        if word not in seen:
            seen.add(word)
            names.append(word.capitalize())
    return names


def make_facts(n_entities: int, seed: int, avoid: set[str] = frozenset()) -> list[Fact]:
    """One fact per relation for each invented entity, values drawn uniformly."""
    rng = random.Random(seed)
    facts = []
    for name in invented_names(n_entities, seed, avoid):
        for rel in RELATIONS:
            facts.append(Fact(name, rel.name, rng.choice(rel.values)))
    return facts


def fact_sentences(facts: Sequence[Fact], repeats: int, seed: int) -> list[str]:
    """Each fact stated ``repeats`` times, cycling through its relation's templates; shuffled."""
    by_name = {r.name: r for r in RELATIONS}
    out = []
    for fact in facts:
        templates = by_name[fact.relation].templates
        out.extend(templates[i % len(templates)].format(e=fact.entity, v=fact.value) for i in range(repeats))
    random.Random(seed).shuffle(out)
    return out


@torch.no_grad()
def continuation_logprobs(
    model: Transformer, tokenizer: Tokenizer, prompts: Sequence[str], continuations: Sequence[str], bos: int | None
) -> torch.Tensor:
    """log p(continuation | prompt) summed over the continuation's tokens, for each (prompt, continuation)."""
    seqs, starts = [], []
    for prompt, cont in zip(prompts, continuations, strict=True):
        p_ids = tokenizer.encode(prompt, add_special_tokens=False).ids
        c_ids = tokenizer.encode(cont, add_special_tokens=False).ids
        head = ([bos] if bos is not None else []) + p_ids
        seqs.append(head + c_ids)
        starts.append(len(head))
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    out = torch.empty(len(seqs))
    for lo in range(0, len(seqs), 64):
        ids, mask = pad_ids(seqs[lo : lo + 64], 0)
        logp = F.log_softmax(model(ids.to(device)).logits.float(), dim=-1).cpu()
        for k, seq in enumerate(seqs[lo : lo + 64]):
            start = starts[lo + k]
            target = torch.tensor(seq[start:])
            out[lo + k] = logp[k, start - 1 : len(seq) - 1].gather(1, target[:, None]).sum()
    model.train(was_training)
    return out


def knowledge_probe(
    model: Transformer,
    tokenizer: Tokenizer,
    facts: Sequence[Fact],
    translate: Callable[[str], str] = lambda s: s,
    bos: int | None = None,
) -> dict[str, float]:
    """Accuracy and mean reciprocal rank of each fact's true value among its relation's values (ties broken
    at random, in expectation).

    Prompts and candidates (``" " + value``) go through ``translate`` (e.g. :func:`clone_text`) first.
    """
    by_name = {r.name: r for r in RELATIONS}
    prompts, conts, index = [], [], []
    for f_i, fact in enumerate(facts):
        rel = by_name[fact.relation]
        for value in rel.values:
            prompts.append(translate(rel.prompt.format(e=fact.entity)))
            conts.append(translate(" " + value))
            index.append(f_i)
    scores = continuation_logprobs(model, tokenizer, prompts, conts, bos)
    correct, rr, chance = 0.0, 0.0, 0.0
    pos = 0
    for fact in facts:
        values = by_name[fact.relation].values
        s = scores[pos : pos + len(values)]
        pos += len(values)
        truth = s[values.index(fact.value)]
        above, ties = int((s > truth).sum()), int((s == truth).sum()) - 1
        # expectations under a random order of tied values, so a model without a preference scores chance
        correct += 1.0 / (ties + 1) if above == 0 else 0.0
        rr += sum(1.0 / (above + 1 + k) for k in range(ties + 1)) / (ties + 1)
        chance += 1.0 / len(values)
    n = max(len(facts), 1)
    return {
        "accuracy": correct / n,
        "mrr": rr / n,
        "chance": chance / n,
        "majority": majority_baseline(facts),
        "facts": len(facts),
    }


def majority_baseline(facts: Sequence[Fact]) -> float:
    """Accuracy of always answering each relation's most frequent value among ``facts``: what a model scores
    that learnt which values are common but no entity's own fact (with tied values, any of them scores this)."""
    counts: dict[str, Counter[str]] = {}
    for fact in facts:
        counts.setdefault(fact.relation, Counter())[fact.value] += 1
    return sum(max(c.values()) for c in counts.values()) / max(len(facts), 1)


# word categories for the zero-shot transfer probe (all frequent in Brown)
CATEGORIES: dict[str, tuple[str, ...]] = {
    "number": ("one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "twenty", "hundred"),
    "colour": ("red", "blue", "green", "white", "black", "yellow", "brown", "gray", "dark", "bright"),
    "family": ("father", "mother", "brother", "sister", "son", "daughter", "wife", "husband", "uncle", "family"),
    "body": ("hand", "head", "eye", "face", "arm", "leg", "foot", "heart", "hair", "mouth", "eyes", "hands"),
    "time": ("day", "week", "month", "year", "hour", "minute", "morning", "night", "evening", "moment", "years"),
    "verb": ("said", "went", "came", "took", "saw", "knew", "thought", "made", "gave", "told", "found", "felt"),
}


def category_split(words: set[str] | None = None) -> tuple[list[tuple[str, int]], list[tuple[str, int]]]:
    """(train, test) lists of (word, category index): alternate words of each category, restricted to ``words``."""
    train, test = [], []
    for label, members in enumerate(CATEGORIES.values()):
        kept = [w for w in members if words is None or w in words]
        for i, w in enumerate(kept):
            (train if i % 2 == 0 else test).append((w, label))
    return train, test


def fit_logistic(x: torch.Tensor, y: torch.Tensor, classes: int, l2: float = 1e-2, steps: int = 300) -> torch.nn.Linear:
    """Multinomial logistic regression by full-batch L-BFGS (deterministic)."""
    clf = torch.nn.Linear(x.shape[1], classes)
    torch.nn.init.zeros_(clf.weight)
    torch.nn.init.zeros_(clf.bias)
    opt = torch.optim.LBFGS(clf.parameters(), max_iter=steps, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = F.cross_entropy(clf(x), y) + l2 * clf.weight.pow(2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return clf


def transfer_probe(
    model: Transformer,
    tokenizer: Tokenizer,
    translate: Callable[[str], str],
    layer: int = -2,
    words: set[str] | None = None,
) -> dict[str, float]:
    """Word-category classifier trained on English vectors at ``layer`` (default: the last block), tested on
    held-out words in English (``en``) and through ``translate`` (``transfer``, zero-shot)."""
    from prealign.train.model_metrics import word_vectors

    train, test = category_split(words)
    if not train or not test:
        raise ValueError("the transfer probe has no words to train or test on")
    x_train = word_vectors(model, tokenizer, [w for w, _ in train], layer)
    mean, std = x_train.mean(0), x_train.std(0) + 1e-6
    y_train = torch.tensor([c for _, c in train])
    y_test = torch.tensor([c for _, c in test])
    with torch.enable_grad():
        clf = fit_logistic((x_train - mean) / std, y_train, len(CATEGORIES))
    out: dict[str, float] = {"chance": 1.0 / len(CATEGORIES), "train_words": len(train), "test_words": len(test)}
    with torch.no_grad():
        for key, fn in (("en", lambda s: s), ("transfer", translate)):
            x = word_vectors(model, tokenizer, [fn(w) for w, _ in test], layer)
            out[key] = float((clf((x - mean) / std).argmax(1) == y_test).float().mean())
    return out
