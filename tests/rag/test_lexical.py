"""The lexical tuner: language detection, the stemming decision both ways, the guard, and a
tuned BM25 that survives a reload and a sync.

The corpora are made of pseudo-words whose inflections Snowball conflates (``blavorting`` and
``blavorts`` both stem to ``blavort``), with a few real stop words, so whether stemming helps
is set by how the questions are written, not by chance.
"""

from __future__ import annotations

import itertools
import json
import random
from pathlib import Path

import pytest

from mentor.rag.bm25 import Analyzer, BM25Index, tokenize
from mentor.rag.index import Manifest, build_index, open_store
from mentor.rag.lexical import detect_language, load_lexical, tune_lexical
from mentor.rag.retrieve import Retriever, SearchConfig
from mentor.rag.selfeval import SelfEvalSet, split_by_document
from mentor.rag.synthetic import SyntheticQuestion
from mentor.testing import HashEmbedder

ENGLISH = (
    "The board is shared with every member of the team, and the owner can change who is able "
    "to edit it. When a card is moved, the people who follow it are told about the change."
)
GERMAN = (
    "Die Karte wird mit allen Mitgliedern des Teams geteilt, und der Besitzer kann ändern, wer "
    "sie bearbeiten darf. Wenn eine Karte verschoben wird, werden die Leute benachrichtigt, die "
    "ihr folgen, und sie sehen die Änderung sofort."
)
FRENCH = (
    "Le tableau est partagé avec tous les membres de l'équipe, et le propriétaire peut changer "
    "qui a le droit de le modifier. Quand une carte est déplacée, les personnes qui la suivent "
    "sont prévenues du changement."
)
SYLLABLES = ("bla", "vor", "tek", "min", "dru", "sal", "pof", "gen", "lut", "kar")


def bases(n: int, forms: tuple[str, str], language: str) -> list[str]:
    """``n`` pseudo-word stems whose two inflected ``forms`` the language's stemmer conflates."""
    import Stemmer

    stemmer = Stemmer.Stemmer(language)
    found = []
    for a, b in itertools.permutations(SYLLABLES, 2):
        base = f"{a}{b}t"
        if stemmer.stemWord(base + forms[0]) == stemmer.stemWord(base + forms[1]):
            found.append(base)
    assert len(found) >= n
    return found[:n]


def filler(rng: random.Random, n: int) -> str:
    return " ".join(f"zq{rng.randrange(300)}x" for _ in range(n))


def selfeval_of(index: Path, questions: dict[str, str]) -> SelfEvalSet:
    """Questions keyed by file name, judged relevant to that file's document, split by document."""
    by_name = {Path(c.source).name: c for c in open_store(index).chunks()}
    written = [
        SyntheticQuestion(q, by_name[n].chunk_id, by_name[n].doc_id) for n, q in questions.items()
    ]
    tuning, held = split_by_document(written, 0.4, seed=0)
    return SelfEvalSet(tuning, held, "test", 0)


def stemming_hurts(root: Path, pairs: int = 30) -> tuple[Path, dict[str, str]]:
    """Pairs of documents share a stem: A says ``<base>ing`` once in a long text, B says
    ``<base>s`` three times in a short one. Asked ``<base>ing``, exact words find A alone, while
    stemming puts B above A."""
    rng = random.Random(0)
    docs, questions = {}, {}
    for i, base in enumerate(bases(pairs, ("ing", "s"), "english")):
        docs[f"a{i}.txt"] = f"The {base}ing of the {filler(rng, 30)} and the {filler(rng, 10)}."
        docs[f"b{i}.txt"] = f"The {base}s and the {base}s of the {base}s {filler(rng, 5)}."
        questions[f"a{i}.txt"] = f"the {base}ing"
        questions[f"b{i}.txt"] = f"the {base}s"
    return write(root, docs), questions


def stemming_helps(root: Path, language: str, forms: tuple[str, str], words: str) -> Path:
    """Each document says ``<base><forms[0]>``; its question says ``<base><forms[1]>``: only
    the language's stemmer joins them. ``words`` are that language's stop words, for detection."""
    rng = random.Random(1)
    docs = {
        f"d{i}.txt": f"{words} {base}{forms[0]} {filler(rng, 20)} {words}"
        for i, base in enumerate(bases(50, forms, language))
    }
    return write(root, docs)


def write(root: Path, docs: dict[str, str]) -> Path:
    folder = root / "docs"
    folder.mkdir(parents=True)
    for name, text in docs.items():
        (folder / name).write_text(text)
    build_index(root / "idx", [folder], HashEmbedder(64))
    return root / "idx"


def test_default_analyzer_tokenizes_as_before() -> None:
    assert tokenize(["The running dogs of the city"]) == [["run", "dog", "citi"]]
    german = Analyzer("german")
    assert tokenize(["Die Verbindungen der Häuser"], german) == [["verbind", "haus"]]
    assert tokenize(["The running dogs"], Analyzer(None)) == [["the", "running", "dogs"]]
    assert tokenize(["The running dogs"], Analyzer("english", stem=False)) == [["running", "dogs"]]
    with pytest.raises(ValueError, match="analyzer language 'klingon'"):
        Analyzer("klingon")


@pytest.mark.parametrize(
    ("text", "language"),
    [(ENGLISH, "english"), (GERMAN, "german"), (FRENCH, "french"), ("zq1x zq2x zq3x", None)],
)
def test_detect_language(text: str, language: str | None) -> None:
    found, shares = detect_language([text, text])
    assert found == language
    if language is not None:
        assert shares[language] == max(shares.values())


def test_saved_bm25_keeps_its_analyzer(tmp_path: Path) -> None:
    index = BM25Index.build(
        ["die Verbindungen der Häuser", "ein Garten"], analyzer=Analyzer("german")
    )
    index.save(tmp_path)
    loaded = BM25Index.load(tmp_path)
    assert loaded.analyzer == Analyzer("german")
    assert [row for row, _ in loaded.search("Verbindung", 2)] == [0]  # stemmed alike
    (tmp_path / "analyzer.json").unlink()  # a BM25 saved before analysers: the old default
    assert BM25Index.load(tmp_path).analyzer == Analyzer()


def test_stemming_that_hurts_is_turned_off_and_reloads_and_syncs(tmp_path: Path) -> None:
    index, questions = stemming_hurts(tmp_path)
    selfeval = selfeval_of(index, questions)
    before = Manifest.read(index)
    result = tune_lexical(index, selfeval, resamples=300)

    assert result.language == "english"
    assert result.setting["bm25_stem"] is False and result.setting["bm25_language"] == "english"
    assert result.chosen != "default" and result.applied
    assert result.held_out_gap["default"][2] < 0  # the default is measurably worse
    assert result.held_out_ndcg[result.chosen] > result.held_out_ndcg["default"] + 0.1
    assert load_lexical(index) == result

    manifest = Manifest.read(index)
    assert manifest.config.bm25_stem is False and manifest.bm25_dir != before.bm25_dir
    assert not (index / before.bm25_dir).exists()
    assert manifest.lance_version == before.lance_version and manifest.chunks == before.chunks

    # reopened, the index tokenizes queries its own way: an exact word finds its document first
    retriever = Retriever(index, HashEmbedder(64))
    assert retriever.bm25.analyzer == Analyzer("english", stem=False)
    base = questions["a0.txt"].split()[-1]
    top = retriever.search(base, SearchConfig(mode="bm25", k=1)).hits[0]
    assert top.chunk.source.endswith("a0.txt")

    # a sync rebuilds BM25 with the tuned settings and indexes the new file the same way
    (tmp_path / "docs" / "new.txt").write_text("The glorpings of the zq1x")
    build_index(index, [tmp_path / "docs"], HashEmbedder(64), sync=True)
    synced = Manifest.read(index)
    assert synced.config == manifest.config and synced.lance_version > manifest.lance_version
    assert json.loads((index / synced.bm25_dir / "analyzer.json").read_text())["stem"] is False
    retriever = Retriever(index, HashEmbedder(64))
    assert retriever.bm25.analyzer == Analyzer("english", stem=False)
    assert not retriever.search("glorping", SearchConfig(mode="bm25")).hits  # not stemmed
    hit = retriever.search("glorpings", SearchConfig(mode="bm25")).hits[0]
    assert hit.chunk.source.endswith("new.txt")


@pytest.mark.parametrize(
    ("language", "forms", "words"),
    [
        ("english", ("ing", "s"), "the of and is with"),
        ("german", ("ungen", "ung"), "der die und das ist nicht mit"),
    ],
)
def test_stemming_that_helps_is_kept_in_the_corpus_language(
    tmp_path: Path, language: str, forms: tuple[str, str], words: str
) -> None:
    index = stemming_helps(tmp_path, language, forms, words)
    names = {Path(c.source).name: c for c in open_store(index).chunks()}
    docs = {n: c.text for n, c in names.items()}
    questions = {
        n: next(w for w in text.split() if w.endswith(forms[0]))[: -len(forms[0])] + forms[1]
        for n, text in docs.items()
    }
    result = tune_lexical(index, selfeval_of(index, questions), resamples=300)

    assert result.language == language
    assert result.setting["bm25_language"] == language and result.setting["bm25_stem"] is True
    unstemmed = [t["tuning_ndcg"] for t in result.tried if not t["setting"]["bm25_stem"]]
    stemmed = [t["tuning_ndcg"] for t in result.tried if t["stage"] == "analyser"]
    assert unstemmed and max(unstemmed) < 0.2 < 0.9 < max(stemmed)
    # English is mentor's default already: nothing changes; German needs its own stemmer
    assert result.applied is (language != "english")
    assert Retriever(index, HashEmbedder(64)).bm25.analyzer.language == language


def test_the_guard_keeps_the_default_within_noise(tmp_path: Path) -> None:
    """Questions of random words of their document plus random words of others: settings
    differ by chance only. Few held-out questions cannot show a difference: default kept."""
    rng = random.Random(3)
    docs = {f"d{i}.txt": f"the {filler(rng, 40)}" for i in range(30)}
    index = write(tmp_path, docs)
    questions = {
        name: " ".join(rng.sample(text.split()[1:], 2)) + " " + filler(rng, 4)
        for name, text in docs.items()
    }
    before = Manifest.read(index)
    result = tune_lexical(index, selfeval_of(index, questions), resamples=300)

    assert result.chosen == "default" and not result.applied
    assert len(result.stage_settings) > 1  # some stage did win on the tuning questions
    assert Manifest.read(index).bm25_dir == before.bm25_dir
    assert result.setting == {
        "bm25_language": "english",
        "bm25_stem": True,
        "bm25_stopwords": True,
        "bm25_heading_weight": 1,
        "bm25_k1": 1.5,
        "bm25_b": 0.75,
    }


def test_needs_questions_in_both_parts(tmp_path: Path) -> None:
    index = write(tmp_path, {"a.txt": "the zq1x"})
    with pytest.raises(ValueError, match="need questions in both parts"):
        tune_lexical(index, SelfEvalSet([], [], "test", 0))
