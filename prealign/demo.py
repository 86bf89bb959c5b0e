"""A built-in English-French parallel corpus for ``prealign-data demo``: no download, a known answer.

Sentences come from a small grammar with a fixed bilingual word list, so the true lexicon is known and the
demo can score what the aligner recovers. French adjectives follow their noun and articles agree in gender,
so the aligner has to learn reordering and one-to-many choices, not just copy positions.
"""

from __future__ import annotations

import random
from pathlib import Path

from prealign.textio import atomic_write_text

# english, french, gender
NOUNS = [
    ("cat", "chat", "m"),
    ("dog", "chien", "m"),
    ("house", "maison", "f"),
    ("car", "voiture", "f"),
    ("book", "livre", "m"),
    ("table", "table", "f"),
    ("bird", "oiseau", "m"),
    ("tree", "arbre", "m"),
    ("city", "ville", "f"),
    ("river", "rivière", "f"),
    ("child", "enfant", "m"),
    ("woman", "femme", "f"),
    ("man", "homme", "m"),
    ("door", "porte", "f"),
    ("window", "fenêtre", "f"),
    ("apple", "pomme", "f"),
    ("bread", "pain", "m"),
    ("horse", "cheval", "m"),
    ("garden", "jardin", "m"),
    ("flower", "fleur", "f"),
    ("letter", "lettre", "f"),
    ("friend", "ami", "m"),
    ("boat", "bateau", "m"),
    ("key", "clé", "f"),
    ("chair", "chaise", "f"),
    ("teacher", "professeur", "m"),
    ("song", "chanson", "f"),
    ("road", "route", "f"),
    ("fish", "poisson", "m"),
    ("mountain", "montagne", "f"),
    ("shop", "magasin", "m"),
    ("train", "train", "m"),
]
ADJECTIVES = [
    ("red", "rouge", "rouge"),
    ("big", "grand", "grande"),
    ("small", "petit", "petite"),
    ("green", "vert", "verte"),
    ("old", "vieux", "vieille"),
    ("new", "neuf", "neuve"),
    ("black", "noir", "noire"),
    ("white", "blanc", "blanche"),
    ("beautiful", "beau", "belle"),
    ("quiet", "calme", "calme"),
    ("strange", "étrange", "étrange"),
    ("warm", "chaud", "chaude"),
]
VERBS = [
    ("sees", "voit"),
    ("likes", "aime"),
    ("finds", "trouve"),
    ("wants", "veut"),
    ("draws", "dessine"),
    ("follows", "suit"),
    ("watches", "regarde"),
    ("paints", "peint"),
    ("buys", "achète"),
    ("sells", "vend"),
]
PLACES = [("near", "près de"), ("behind", "derrière"), ("in front of", "devant")]


def true_lexicon() -> list[tuple[str, str]]:
    """The content-word pairs of the grammar (English, French)."""
    pairs = [(e, f) for e, f, _ in NOUNS] + [(e, f) for e, f in VERBS]
    pairs += [(e, m) for e, m, _ in ADJECTIVES] + [(e, f) for e, _, f in ADJECTIVES if _ != f]
    pairs += [("behind", "derrière")]
    return pairs


def _noun_phrase(rng: random.Random, definite: bool) -> tuple[str, str]:
    en, fr, gender = rng.choice(NOUNS)
    art_en = "the" if definite else "a"
    if definite:
        art_fr = "l'" if fr[0] in "aeiouéh" else ("le" if gender == "m" else "la")
    else:
        art_fr = "un" if gender == "m" else "une"
    if rng.random() < 0.5:
        a_en, a_m, a_f = rng.choice(ADJECTIVES)
        a_fr = a_m if gender == "m" else a_f
        sep = "" if art_fr == "l'" else " "
        return f"{art_en} {a_en} {en}", f"{art_fr}{sep}{fr} {a_fr}"
    sep = "" if art_fr == "l'" else " "
    return f"{art_en} {en}", f"{art_fr}{sep}{fr}"


def sentence_pair(rng: random.Random) -> tuple[str, str]:
    """One English sentence and its French translation."""
    subj_en, subj_fr = _noun_phrase(rng, definite=rng.random() < 0.7)
    obj_en, obj_fr = _noun_phrase(rng, definite=rng.random() < 0.5)
    v_en, v_fr = rng.choice(VERBS)
    en, fr = f"{subj_en} {v_en} {obj_en}", f"{subj_fr} {v_fr} {obj_fr}"
    if rng.random() < 0.3:
        p_en, p_fr = rng.choice(PLACES)
        loc_en, loc_fr = _noun_phrase(rng, definite=True)
        if p_fr == "près de" and loc_fr.startswith("le "):
            p_fr, loc_fr = "près", "du " + loc_fr[3:]
        en, fr = f"{en} {p_en} {loc_en}", f"{fr} {p_fr} {loc_fr}"
    en, fr = en[0].upper() + en[1:] + ".", fr[0].upper() + fr[1:] + "."
    if rng.random() < 0.1:
        en, fr = en[:-1] + "!", fr[:-1] + " !"
    return en, fr


def write_corpus(path: Path, n_pairs: int = 4000, seed: int = 0) -> Path:
    """Write ``n_pairs`` pairs as ``English<TAB>French`` lines; returns the path."""
    rng = random.Random(seed)
    lines = ["\t".join(sentence_pair(rng)) for _ in range(n_pairs)]
    atomic_write_text(path, "\n".join(lines) + "\n")
    return path
