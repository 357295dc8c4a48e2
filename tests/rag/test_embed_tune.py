"""The embedder tuner on a corpus built in code, with a tiny random sentence-transformers model.

The corpus: documents of random pseudo-words, and a tokenizer trained on them, so every word is
one token. A question is three of a chunk's words, so the right answer is the chunk that shares
them; the random model ranks it poorly, and fine-tuning on the tuning questions teaches it to
match words, which carries over to the held-out documents.
"""

from __future__ import annotations

import json
import math
import random
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from mentor.models.loading import load_embedder
from mentor.rag.embed_tune import (
    EMBEDDER_JSON,
    EmbedTuneConfig,
    clean_leftovers,
    contrastive_loss,
    dense_ndcg,
    fits_budget,
    install,
    load_embedder_tuning,
    tune_embedder,
)
from mentor.rag.index import IndexConfig, Manifest, build_index, embedder_location, open_store
from mentor.rag.retrieve import SearchConfig, open_retriever
from mentor.rag.selfeval import SelfEvalSet, split_by_document
from mentor.rag.synthetic import SyntheticQuestion
from mentor.testing.tiny_models import tiny_sentence_transformer_folder
from mentor.testing.tokenizers import tiny_wordpiece_tokenizer

VOCAB = [f"w{i}" for i in range(400)]
FAST = EmbedTuneConfig(learning_rate=1e-3, epochs=6, resamples=300)
"""A tiny random model needs a large step to learn anything in six epochs."""


def make_corpus(root: Path, docs: int = 120, seed: int = 0) -> tuple[Path, Path]:
    """(documents folder, model folder): random documents and a tiny model whose tokenizer
    knows their words."""
    rng = random.Random(seed)
    texts = [" ".join(rng.sample(VOCAB, 25)) for _ in range(docs)]
    folder = root / "docs"
    folder.mkdir(parents=True)
    for d, text in enumerate(texts):
        (folder / f"doc{d}.txt").write_text(text)
    tokenizer = tiny_wordpiece_tokenizer(1000, corpus=texts * 3)
    return folder, tiny_sentence_transformer_folder(root / "model", tokenizer=tokenizer)


def questions_of(index: Path) -> SelfEvalSet:
    questions = []
    for chunk in open_store(index).chunks():
        words = chunk.text.split()[-25:]
        question = f"{words[20]} {words[5]} {words[12]}"
        questions.append(SyntheticQuestion(question, chunk.chunk_id, chunk.doc_id))
    tuning, held = split_by_document(questions, 0.3, 0)
    return SelfEvalSet(tuning, held, "scripted", 0, created="2026-01-01T00:00:00Z")


def build(root: Path) -> tuple[Path, Path, Path]:
    """(index, documents, model): the corpus indexed with the stock tiny model."""
    docs, model = make_corpus(root)
    embedder = load_embedder(model, device="cpu")
    build_index(root / "idx", [docs], embedder, config=IndexConfig(embedder=str(model)))
    return root / "idx", docs, model


@pytest.fixture(scope="module")
def tuned(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path, dict[str, object]]:
    """One index whose embedder the tuner replaced (shared: training takes seconds)."""
    root = tmp_path_factory.mktemp("tuned")
    index, docs, model = build(root)
    before = Manifest.read(index)
    result = tune_embedder(index, questions_of(index), budget_s=300, config=FAST, device="cpu")
    return index, docs, model, {"result": result, "before": before}


# --- pure parts ------------------------------------------------------------------------------


def test_contrastive_loss_matches_a_hand_computation() -> None:
    q = torch.tensor([[2.0, 0.0], [0.0, 1.0]])  # normalised inside
    p = torch.tensor([[1.0, 0.0], [0.6, 0.8]])
    # scale 2: row 0 scores [2, 1.2], row 1 scores [0, 1.6]
    row0 = -math.log(math.exp(2) / (math.exp(2) + math.exp(1.2)))
    row1 = -math.log(math.exp(1.6) / (math.exp(0) + math.exp(1.6)))
    assert float(contrastive_loss(q, p, scale=2)) == pytest.approx((row0 + row1) / 2, rel=1e-5)
    # passage 1 is a chunk of query 0's own document: not a negative for it (loss 0 there)
    same = torch.tensor([[True, True], [False, True]])
    masked = contrastive_loss(q, p, scale=2, same_doc=same)
    assert float(masked) == pytest.approx(row1 / 2, rel=1e-5)


def test_dense_ndcg_is_document_level() -> None:
    matrix = np.array([[1, 0], [0.9, 0.1], [0, 1]], dtype=np.float32)
    ids = ["a#0", "a#1", "b#0"]
    doc_of = {"a#0": "a", "a#1": "a", "b#0": "b"}
    query = np.array([[1, 0], [1, 0]], dtype=np.float32)
    # doc a first for both; doc b second (its chunk is third, but a's two chunks count once)
    assert dense_ndcg(query, matrix, ids, ["a", "b"], doc_of) == pytest.approx(
        [1.0, 1 / math.log2(3)]
    )


def test_fits_budget_is_half_the_budget() -> None:
    assert fits_budget(1000, 0.01, 20)
    assert not fits_budget(1000, 0.01, 19.9)


def test_config_rejects_bad_values() -> None:
    with pytest.raises(ValueError, match="batch_size"):
        EmbedTuneConfig(batch_size=1)
    with pytest.raises(ValueError, match="validation_share"):
        EmbedTuneConfig(validation_share=1.0)


def test_an_old_manifest_reads_with_the_default_table(tmp_path: Path) -> None:
    index, _, _ = build(tmp_path)
    raw = json.loads((index / "index.json").read_text())
    del raw["lance_dir"]
    (index / "index.json").write_text(json.dumps(raw))
    assert Manifest.read(index).lance_dir == "lance"
    assert len(open_store(index)) > 0


# --- a kept embedder ---------------------------------------------------------------------------


def test_training_lowers_the_loss_and_the_tuned_embedder_is_kept(tuned) -> None:  # type: ignore[no-untyped-def]
    index, _, model, run = tuned
    result = run["result"]
    assert result.train_loss[-1] < 0.5 * result.train_loss[0]
    assert max(result.validation_ndcg[1:]) > result.validation_ndcg[0]
    assert result.chosen == "tuned", result.reason
    assert result.held_out_ndcg["tuned"] > result.held_out_ndcg["current"] + 0.1
    assert result.held_out_gap["current"][2] < 0  # measurably worse, not within noise
    assert result.base == str(model) and result.current == str(model)
    manifest = Manifest.read(index)
    assert manifest.config.embedder == result.embedder
    assert manifest.config.embedder.startswith("embedder-t")
    assert (index / manifest.config.embedder / "model.safetensors").exists()
    old = run["before"]
    assert manifest.lance_dir != old.lance_dir
    assert not (index / old.lance_dir).exists() and not (index / old.bm25_dir).exists()
    saved = load_embedder_tuning(index)
    assert saved is not None and saved.chosen == "tuned" and saved.pairs == result.pairs


def test_a_kept_embedder_reloads_and_the_index_can_move(tuned, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    index, _, _, _ = tuned
    moved = tmp_path / "elsewhere"
    shutil.copytree(index, moved)
    for folder in (index, moved):
        retriever = open_retriever(folder, device="cpu")
        local = embedder_location(folder, retriever.manifest.config)
        assert Path(local).parent == folder
        assert retriever.embedder.folder == Path(local)  # type: ignore[attr-defined]
    # the same answers from the moved copy, with the tuned model's own scores
    chunk = open_store(index).chunks()[0]
    query = " ".join(chunk.text.split()[:3])
    a = open_retriever(index, device="cpu").search(query, SearchConfig(mode="dense", k=5))
    b = open_retriever(moved, device="cpu").search(query, SearchConfig(mode="dense", k=5))
    assert [h.chunk.chunk_id for h in a.hits] == [h.chunk.chunk_id for h in b.hits]
    tuned_model = load_embedder(embedder_location(index, Manifest.read(index).config), device="cpu")
    vector = tuned_model.embed([query])[0]
    stored = {c.chunk_id: i for i, c in enumerate(open_store(index).chunks())}
    matrix = _matrix(index)
    top = a.hits[0]
    assert top.score == pytest.approx(float(matrix[stored[top.chunk.chunk_id]] @ vector), abs=1e-3)


def test_a_rerun_on_the_same_questions_is_not_repeated(tuned) -> None:  # type: ignore[no-untyped-def]
    index, _, _, run = tuned
    again = tune_embedder(index, questions_of(index), budget_s=300, config=FAST, device="cpu")
    assert again.created == run["result"].created
    assert Manifest.read(index).config.embedder == run["result"].embedder


def test_sync_embeds_new_documents_with_the_kept_embedder(tuned, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    index, docs, model, _ = tuned
    copy = tmp_path / "idx"
    shutil.copytree(index, copy)
    (docs / "new.txt").write_text("w1 w2 w3 w4 w5 w6 w7 w8 w9 w10 w11 w12")
    try:
        config = Manifest.read(copy).config
        kept = load_embedder(embedder_location(copy, config), device="cpu")
        report = build_index(copy, [docs], kept, sync=True)
        # the stock model may not write into an index that embeds with its tuned one
        with pytest.raises(ValueError, match="fine-tuned embedder"):
            build_index(copy, [docs], load_embedder(model, device="cpu"), sync=True)
    finally:
        (docs / "new.txt").unlink()
    assert report.indexed == ["docs/new.txt"]
    chunks = open_store(copy).chunks()
    row = next(i for i, c in enumerate(chunks) if c.doc_id == "docs/new.txt")
    from mentor.rag.index import embed_input

    expected = kept.embed([embed_input(chunks[row])])[0]
    assert float(_matrix(copy)[row] @ expected) == pytest.approx(1.0, abs=1e-4)
    assert Manifest.read(copy).config.embedder == config.embedder


# --- the guard and the swap --------------------------------------------------------------------


def test_the_current_embedder_stays_when_the_tuned_one_is_no_better(tmp_path: Path) -> None:
    index, _, model = build(tmp_path)
    before = (index / "index.json").read_text()
    # learning rate 0: the "tuned" model is the stock one, so it can never be better
    still = replace(FAST, learning_rate=0.0, epochs=2)
    result = tune_embedder(index, questions_of(index), budget_s=300, config=still, device="cpu")
    assert result.chosen == "current"
    assert result.embedder == str(model)
    assert (index / "index.json").read_text() == before
    assert sorted(p.name for p in index.iterdir() if p.name.startswith(("lance", "embedder-"))) == [
        "lance"
    ]
    assert json.loads((index / EMBEDDER_JSON).read_text())["chosen"] == "current"


def test_an_interrupted_swap_leaves_the_old_index_usable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    index, _, _ = build(tmp_path)
    query = " ".join(open_store(index).chunks()[3].text.split()[:3])
    before = open_retriever(index, device="cpu").search(query, SearchConfig(k=5))

    def killed(self: Manifest, folder: Path) -> None:
        raise KeyboardInterrupt("killed before the manifest was written")

    monkeypatch.setattr(Manifest, "write", killed)
    with pytest.raises(KeyboardInterrupt):
        tune_embedder(index, questions_of(index), budget_s=300, config=FAST, device="cpu")
    monkeypatch.undo()
    # the new model and table were moved in, but the manifest still names the old ones
    assert list(index.glob("embedder-t*")) and list(index.glob("lance-t*"))
    manifest = Manifest.read(index)
    assert manifest.lance_dir == "lance"
    after = open_retriever(index, device="cpu").search(query, SearchConfig(k=5))
    assert [h.chunk.chunk_id for h in after.hits] == [h.chunk.chunk_id for h in before.hits]
    assert [h.score for h in after.hits] == pytest.approx([h.score for h in before.hits])
    clean_leftovers(index)
    assert not list(index.glob("*-t*")) and not list(index.glob(".embedtune-*"))


def test_install_rejects_a_tag_the_cleaner_would_not_know(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="tag"):
        install(tmp_path, tmp_path / "m", tmp_path / "t", "x1")


def _matrix(index: Path) -> np.ndarray:  # type: ignore[type-arg]
    manifest = Manifest.read(index)
    data = open_store(index).table.to_arrow()
    flat = data.column("vector").combine_chunks().flatten().to_numpy(zero_copy_only=False)
    return np.asarray(flat, dtype=np.float32).reshape(-1, manifest.dim)
