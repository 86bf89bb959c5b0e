"""Alignment links (Pharaoh, gold) and evaluation (AER, lexicon P@k)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from prealign.errors import InputError
from prealign.lexicon.evaluate import alignment_scores, lexicon_precision, read_gold_lexicon
from prealign.lexicon.links import format_pharaoh, normalize_links, read_gold, read_pharaoh, write_pharaoh

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"
GOLD = DATA / "gold" / "hansards.en-fr.gold"
FREEDICT = DATA / "gold" / "freedict.en-fr.tsv"


def links(*pairs: tuple[int, int]) -> np.ndarray:
    return np.array(pairs, dtype=np.int32).reshape(-1, 2)


def same(a: list[np.ndarray], b: list[np.ndarray]) -> bool:
    return len(a) == len(b) and all(x.shape == y.shape and (x == y).all() for x, y in zip(a, b, strict=True))


# --- Pharaoh ---------------------------------------------------------------------------------------------


def test_format_pharaoh_sorts_and_dedups() -> None:
    assert format_pharaoh([[2, 1], [0, 0], [2, 1], [1, 3], [1, 0]]) == "0-0 1-0 1-3 2-1"
    assert format_pharaoh(np.zeros((0, 2), dtype=np.int32)) == ""
    assert format_pharaoh([]) == ""


def test_normalize_links_rejects_bad_input() -> None:
    out = normalize_links([[3, 1], [0, 2]])
    assert out.dtype == np.int32 and out.tolist() == [[0, 2], [3, 1]]
    with pytest.raises(ValueError):
        normalize_links([[0, -1]])
    with pytest.raises(ValueError):
        normalize_links([[0, 1, 2]])
    with pytest.raises(ValueError):
        normalize_links([[0.5, 1.0]])


def test_pharaoh_round_trip(tmp_path: Path) -> None:
    sents = [links((1, 2), (0, 0), (1, 2)), links(), links((5, 3)), np.array([[2, 2], [2, 1]], dtype=np.int64), []]
    path = tmp_path / "out.align"
    write_pharaoh(sents, path)
    assert path.read_text() == "0-0 1-2\n\n5-3\n2-1 2-2\n\n"
    assert [p.name for p in tmp_path.iterdir()] == ["out.align"]  # no temp file left behind
    back = read_pharaoh(path)
    assert len(back) == 5
    assert all(a.dtype == np.int32 and a.ndim == 2 and a.shape[1] == 2 for a in back)
    expected = [links((0, 0), (1, 2)), links(), links((5, 3)), links((2, 1), (2, 2)), links()]
    assert same(back, expected)


def test_write_pharaoh_empty_corpus_and_overwrite(tmp_path: Path) -> None:
    path = tmp_path / "a.txt"
    path.write_text("old content\n")
    write_pharaoh([], path)
    assert path.read_text() == ""
    assert read_pharaoh(path) == []


def test_read_pharaoh_tolerates_spacing_and_crlf(tmp_path: Path) -> None:
    path = tmp_path / "a.txt"
    path.write_bytes(b"  3-4\t 0-1  \r\n\r\n12-7")  # no final newline
    assert same(read_pharaoh(path), [links((0, 1), (3, 4)), links(), links((12, 7))])


def test_read_pharaoh_one_indexed(tmp_path: Path) -> None:
    path = tmp_path / "a.txt"
    path.write_text("1-1 2-3\n4-2\n")
    assert same(read_pharaoh(path, one_indexed=True), [links((0, 0), (1, 2)), links((3, 1))])
    path.write_text("1-1\n\n2-0\n")
    with pytest.raises(InputError) as err:
        read_pharaoh(path, one_indexed=True)
    assert err.value.line == 3 and err.value.path == str(path)


@pytest.mark.parametrize(
    ("text", "line", "token"),
    [
        ("0-1 x-1\n", 1, "x-1"),
        ("0-1\n1-2 3-4-5\n", 2, "3-4-5"),
        ("0-1\n\n1p2\n", 3, "1p2"),  # possible links are not Pharaoh
        ("0-1 -2\n", 1, "-2"),
        ("0-1 2-\n", 1, "2-"),
        ("0-1 1-2x\n", 1, "1-2x"),
        ("0-1 1234567890-1\n", 1, "1234567890-1"),
        ("0-0\n0-1 é-2\n", 2, "é-2"),
    ],
)
def test_read_pharaoh_errors_name_file_line_and_token(tmp_path: Path, text: str, line: int, token: str) -> None:
    path = tmp_path / "bad.align"
    path.write_text(text)
    with pytest.raises(InputError) as err:
        read_pharaoh(path)
    assert err.value.path == str(path)
    assert err.value.line == line
    assert f"bad link {token!r}" in str(err.value)
    assert str(err.value).startswith(f"{path}:{line}: ")


def test_read_missing_file(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no such file"):
        read_pharaoh(tmp_path / "nope.align")
    with pytest.raises(InputError, match="no such file"):
        read_gold(tmp_path / "nope.gold")


# --- gold -----------------------------------------------------------------------------------------------


def test_read_gold_one_indexed_auto(tmp_path: Path) -> None:
    path = tmp_path / "g.gold"
    path.write_text("1-1 2p3 2-2\n\n3p1 1-2 3p1\n")
    sure, possible = read_gold(path)
    assert same(sure, [links((0, 0), (1, 1)), links(), links((0, 1))])
    assert same(possible, [links((0, 0), (1, 1), (1, 2)), links(), links((0, 1), (2, 0))])
    assert all(s.dtype == np.int32 and p.dtype == np.int32 for s, p in zip(sure, possible, strict=True))
    # forcing 1 gives the same; forcing 0 keeps the file's numbers
    assert same(read_gold(path, index_base=1)[0], sure)
    sure0, possible0 = read_gold(path, index_base=0)
    assert same(sure0, [links((1, 1), (2, 2)), links(), links((1, 2))])
    assert same(possible0[0:1], [links((1, 1), (2, 2), (2, 3))])


def test_read_gold_auto_detects_zero_indexed(tmp_path: Path) -> None:
    path = tmp_path / "g.gold"
    path.write_text("1-1 2p2\n2-0\n")  # one 0 anywhere in the file makes it 0-indexed
    sure, possible = read_gold(path)
    assert same(sure, [links((1, 1)), links((2, 0))])
    assert same(possible, [links((1, 1), (2, 2)), links((2, 0))])
    with pytest.raises(InputError) as err:
        read_gold(path, index_base=1)
    assert err.value.line == 2


def test_read_gold_sure_and_possible_same_link(tmp_path: Path) -> None:
    path = tmp_path / "g.gold"
    path.write_text("1p1 1-1\n")
    sure, possible = read_gold(path)
    assert same(sure, [links((0, 0))]) and same(possible, [links((0, 0))])


def test_read_gold_errors(tmp_path: Path) -> None:
    path = tmp_path / "g.gold"
    path.write_text("1-1\n1s2\n")
    with pytest.raises(InputError, match="bad link '1s2'") as err:
        read_gold(path)
    assert err.value.line == 2
    with pytest.raises(ValueError):
        read_gold(path, index_base=2)  # type: ignore[arg-type]


@pytest.mark.skipif(not GOLD.exists(), reason="shared Hansards gold data not available")
def test_read_real_hansards_gold() -> None:
    sure, possible = read_gold(GOLD)
    assert len(sure) == len(possible) == 447
    assert sure[0].tolist() == [[0, 0], [1, 1]]  # first line is "2-2 1-1", 1-indexed
    assert min(int(a.min()) for a in possible if len(a)) == 0
    assert sum(map(len, sure)) == 4038
    for s, p in zip(sure, possible, strict=True):
        assert {tuple(x) for x in s.tolist()} <= {tuple(x) for x in p.tolist()}
    scores = alignment_scores(sure, sure, possible)
    assert scores["aer"] == 0.0 and scores["recall"] == 1.0


# --- AER ------------------------------------------------------------------------------------------------


def test_aer_perfect() -> None:
    sure = [links((0, 0), (1, 1)), links((0, 1))]
    possible = [links((0, 0), (1, 1), (1, 2)), links((0, 1))]
    out = alignment_scores(sure, sure, possible)
    assert out["aer"] == 0.0 and out["precision"] == 1.0 and out["recall"] == 1.0
    assert out["links"] == 3 and out["sentences"] == 2 and out["ignored_sentences"] == 0


def test_aer_hand_computed_with_possible_links() -> None:
    # S = {00, 11}, P = S + {12, 22}, A = {00, 12, 20}: |A∩S| = 1, |A∩P| = 2, |A| = 3, |S| = 2
    sure = [links((0, 0), (1, 1))]
    possible = [links((0, 0), (1, 1), (1, 2), (2, 2))]
    out = alignment_scores([links((0, 0), (1, 2), (2, 0))], sure, possible)
    assert out["aer"] == pytest.approx(1 - 3 / 5)
    assert out["precision"] == pytest.approx(2 / 3)
    assert out["recall"] == pytest.approx(1 / 2)
    assert out["links"] == 3 and out["sure_links"] == 2 and out["possible_links"] == 4


def test_aer_is_micro_averaged_and_per_sentence() -> None:
    sure = [links((0, 0), (1, 1)), links((0, 0))]
    possible = [links((0, 0), (1, 1), (1, 2), (2, 2)), links((0, 0))]
    # sentence 2 predicts (1, 2), which is a possible link only in sentence 1: no credit
    pred = [links((0, 0), (1, 2), (2, 0)), links((1, 2))]
    out = alignment_scores(pred, sure, possible)
    # |A∩S| = 1, |A∩P| = 2, |A| = 4, |S| = 3  (a macro average over sentences would give 0.7)
    assert out["aer"] == pytest.approx(1 - 3 / 7)
    assert out["precision"] == pytest.approx(2 / 4)
    assert out["recall"] == pytest.approx(1 / 3)


def test_aer_possible_without_sure_and_duplicates() -> None:
    sure = [links((0, 0), (1, 1))]
    only_possible = [links((1, 2))]  # sure links are added to P even if the caller left them out
    pred = [np.array([[0, 0], [0, 0], [1, 2]])]
    out = alignment_scores(pred, sure, only_possible)
    # A = {00, 12}: |A∩S| = 1, |A∩P| = 2, |A| = 2, |S| = 2
    assert out["links"] == 2
    assert out["aer"] == pytest.approx(1 - 3 / 4)
    assert out["precision"] == 1.0 and out["recall"] == 0.5


def test_aer_extra_pred_sentences_are_ignored_fewer_is_error() -> None:
    sure = [links((0, 0))]
    pred = [links((0, 0)), links((5, 5), (6, 6))]
    out = alignment_scores(pred, sure, sure)
    assert out["aer"] == 0.0 and out["links"] == 1
    assert out["sentences"] == 1 and out["ignored_sentences"] == 1
    with pytest.raises(ValueError, match="fewer"):
        alignment_scores([], sure, sure)
    with pytest.raises(ValueError):
        alignment_scores(pred, sure, [])


def test_aer_empty_prediction() -> None:
    out = alignment_scores([links()], [links((0, 0))], [links((0, 0))])
    assert out["aer"] == 1.0 and out["recall"] == 0.0 and math.isnan(out["precision"])


def test_aer_large_corpus_matches_set_arithmetic() -> None:
    rng = np.random.default_rng(1)
    n = 2000
    sure = [np.unique(rng.integers(0, 8, size=(5, 2)), axis=0) for _ in range(n)]
    extra = [np.unique(rng.integers(0, 8, size=(5, 2)), axis=0) for _ in range(n)]
    possible = [np.concatenate([s, e]) for s, e in zip(sure, extra, strict=True)]
    pred = [np.unique(rng.integers(0, 8, size=(6, 2)), axis=0) for _ in range(n)]
    a_s = a_p = n_a = n_s = 0
    for a, s, p in zip(pred, sure, possible, strict=True):
        sa, ss, sp = ({tuple(x) for x in m.tolist()} for m in (a, s, p))
        a_s += len(sa & ss)
        a_p += len(sa & (sp | ss))
        n_a += len(sa)
        n_s += len(ss)
    out = alignment_scores(pred, sure, possible)
    assert out["aer"] == pytest.approx(1 - (a_s + a_p) / (n_a + n_s))
    assert out["precision"] == pytest.approx(a_p / n_a)
    assert out["recall"] == pytest.approx(a_s / n_s)


# --- lexicon P@k ------------------------------------------------------------------------------------------

LEXICON_ROWS = [
    # src, tgt, score, count (rows shuffled on purpose)
    ("dog", "chien", 0.7, 3),
    ("bank", "la", 0.1, 9),
    ("house", "maison", 0.5, 1),
    ("red", "vermillon", 0.5, 2),
    ("cat", "chien", 0.9, 1),
    ("bank", "rive", 0.5, 1),
    ("dog", "chienne", 0.7, 5),  # same score as "chien", higher count: ranked first
    ("house", "la", 0.6, 1),
    ("red", "rouge", 0.5, 2),  # same score and count as "vermillon": tgt asc puts "rouge" first
    ("bank", "banque", 0.8, 1),
    ("zebra", "zèbre", 0.9, 1),
    ("Tree", "arbre", 0.9, 1),  # exact strings: "Tree" is not "tree"
]
GOLD_ROWS = [
    ("bank", "banque"),
    ("bank", "rive"),
    ("house", "maison"),
    ("cat", "chat"),
    ("dog", "chien"),
    ("red", "rouge"),
    ("red", "rouge"),
    ("tree", "arbre"),
]


def lexicon() -> pl.DataFrame:
    return pl.DataFrame(LEXICON_ROWS, schema=["src", "tgt", "score", "count"], orient="row")


def gold() -> pl.DataFrame:
    return pl.DataFrame(GOLD_ROWS, schema=["src", "tgt"], orient="row")


def test_lexicon_precision_hand_made() -> None:
    out = lexicon_precision(lexicon(), gold())
    # evaluated: bank, house, cat, dog, red; top-1 hits: bank, red; top-5 hits: all but cat
    assert out["evaluated"] == 5
    assert out["gold_words"] == 6
    assert out["coverage"] == pytest.approx(5 / 6)
    assert out["p@1"] == pytest.approx(2 / 5)
    assert out["p@5"] == pytest.approx(4 / 5)


def test_lexicon_precision_other_ks_and_without_count() -> None:
    out = lexicon_precision(lexicon(), gold(), ks=(1, 2, 3))
    assert out["p@2"] == pytest.approx(4 / 5) and out["p@3"] == pytest.approx(4 / 5)
    # without a count column the dog tie falls to tgt asc: "chien" first, a top-1 hit
    no_count = lexicon_precision(lexicon().drop("count"), gold(), ks=(1,))
    assert no_count["p@1"] == pytest.approx(3 / 5)
    with pytest.raises(ValueError):
        lexicon_precision(lexicon(), gold(), ks=(0,))


def test_lexicon_precision_min_count() -> None:
    counts = pl.DataFrame({"src": ["bank", "house", "cat", "dog", "tree", "zebra"], "count": [10, 3, 1, 7, 20, 100]})
    out = lexicon_precision(lexicon(), gold(), min_count=5, src_counts=counts)
    # eligible: bank, dog, tree ("red" is absent from counts: frequency 0); evaluated: bank, dog
    assert out["gold_words"] == 3
    assert out["evaluated"] == 2
    assert out["p@1"] == pytest.approx(1 / 2)
    assert out["p@5"] == 1.0
    assert out["coverage"] == pytest.approx(2 / 3)
    with pytest.raises(ValueError, match="src_counts"):
        lexicon_precision(lexicon(), gold(), min_count=5)


def test_lexicon_precision_nothing_evaluated() -> None:
    out = lexicon_precision(lexicon(), pl.DataFrame({"src": ["nope"], "tgt": ["non"]}))
    assert out["evaluated"] == 0 and out["coverage"] == 0.0 and math.isnan(out["p@1"])


def test_read_gold_lexicon(tmp_path: Path) -> None:
    path = tmp_path / "dict.tsv"
    path.write_text("bank\tbanque\n\n  bank \t rive \r\nx\t\nbank\tbanque\ncat\tchat\textra\n")
    df = read_gold_lexicon(path)
    assert df.schema == pl.Schema({"src": pl.String, "tgt": pl.String})
    assert df.rows() == [("bank", "banque"), ("bank", "rive"), ("cat", "chat")]


def test_read_gold_lexicon_errors(tmp_path: Path) -> None:
    path = tmp_path / "dict.tsv"
    path.write_text("bank\tbanque\n\nno tab here\n")
    with pytest.raises(InputError) as err:
        read_gold_lexicon(path)
    assert err.value.path == str(path) and err.value.line == 3
    with pytest.raises(InputError, match="no such file"):
        read_gold_lexicon(tmp_path / "missing.tsv")


@pytest.mark.skipif(not FREEDICT.exists(), reason="shared FreeDict data not available")
def test_read_real_freedict() -> None:
    df = read_gold_lexicon(FREEDICT)
    assert df.height > 12000
    assert df.row(0) == ("a", "dans")
    assert df.filter(pl.col("src") == "").height == 0
