"""Classifier fine-tuning: the loss, pooling, LoRA wiring, learning, saving and bad files."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F  # noqa: N812

from mentor.finetune.classify import train_classifier
from mentor.testing import tiny_sentence_transformer_folder
from mentor.train.classifier import (
    LabelSet,
    SequenceClassifier,
    build_classifier,
    collate,
    encode,
    load_classification,
    load_classifier,
    load_encoder,
    save_classifier,
    split_validation,
)
from mentor.train.data import DataError
from mentor.train.lora import LoRAConfig
from mentor.train.trainer import TrainSettings

CALM = ["coffee", "kettle", "water", "grinder", "filter", "chair"]
LOUD = ["router", "wireless", "devices", "headphones", "electric", "support"]
TEXTS = ["the river and the stone", "copper lantern", "a cloud", "ember harbor storm engine"]


@pytest.fixture(scope="module")
def encoder_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_sentence_transformer_folder(tmp_path_factory.mktemp("encoder") / "st")


def _texts(n: int, seed: int) -> tuple[list[str], list[str]]:
    """Texts of 2-4 words drawn from one of two disjoint word pools; the pool is the label."""
    rng = random.Random(seed)
    texts, labels = [], []
    for i in range(n):
        label, pool = ("calm", CALM) if i % 2 == 0 else ("loud", LOUD)
        texts.append(" ".join(rng.choice(pool) for _ in range(rng.randint(2, 4))))
        labels.append(label)
    return texts, labels


def _batch(model: SequenceClassifier, tokenizer, texts: list[str], labels: list[int]):  # type: ignore[no-untyped-def]
    rows = encode(texts, labels, tokenizer, model.max_length)
    return collate(rows, pad_id=tokenizer.pad_token_id)


def _perturb(model: SequenceClassifier, seed: int = 1) -> None:
    """Move every trainable weight off its start, as training would (LoRA's B starts at 0)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in model.parameters():
            if param.requires_grad:
                param.add_(0.05 * torch.randn(param.shape, generator=generator))


def test_loss_is_summed_cross_entropy(encoder_dir: Path) -> None:
    model, tokenizer = build_classifier(encoder_dir, LabelSet(("a", "b", "c")), method="full")
    model.eval()
    batch = _batch(model, tokenizer, TEXTS, [0, 2, 1, 2])
    loss = model(batch.input_ids, batch.attention_mask, batch.labels)
    logits = model.logits(batch.input_ids, batch.attention_mask)
    expected = F.cross_entropy(logits, batch.labels, reduction="sum")
    assert torch.allclose(loss, expected, atol=1e-6)
    assert batch.n_targets == 4
    assert batch.n_tokens == int(batch.attention_mask.sum()) < batch.input_ids.numel()


def test_mean_pooling_ignores_padding(encoder_dir: Path) -> None:
    model, tokenizer = build_classifier(encoder_dir, LabelSet(("a", "b")), method="lora")
    _perturb(model)
    model.eval()
    alone = _batch(model, tokenizer, ["a cloud"], [0])
    padded = _batch(model, tokenizer, ["a cloud", "ember harbor storm engine and more"], [0, 1])
    assert padded.input_ids.shape[1] > alone.input_ids.shape[1]
    with torch.no_grad():
        one = model.logits(alone.input_ids, alone.attention_mask)[0]
        two = model.logits(padded.input_ids, padded.attention_mask)[0]
    assert torch.allclose(one, two, atol=1e-5)
    one_by_one = torch.cat([model.predict_logits([t], tokenizer) for t in TEXTS])
    assert torch.allclose(one_by_one, model.predict_logits(TEXTS, tokenizer), atol=1e-5)


def test_lora_trains_only_adapter_and_head_and_starts_at_the_base(encoder_dir: Path) -> None:
    model, tokenizer = build_classifier(encoder_dir, LabelSet(("a", "b")), method="lora")
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert {"head.weight", "head.bias"} <= set(trainable)
    assert all(".lora_A." in n or ".lora_B." in n or n.startswith("head.") for n in trainable)
    assert any(".lora_B." in n for n in trainable)
    assert not any("pooler" in n for n, _ in model.named_parameters())
    base = load_encoder(encoder_dir).eval()
    model.eval()
    batch = _batch(model, tokenizer, TEXTS, [0, 1, 0, 1])
    with torch.no_grad():
        ours = model.encoder(input_ids=batch.input_ids, attention_mask=batch.attention_mask)
        theirs = base(input_ids=batch.input_ids, attention_mask=batch.attention_mask)
    assert torch.equal(ours.last_hidden_state, theirs.last_hidden_state)

    full, _ = build_classifier(encoder_dir, LabelSet(("a", "b")), method="full")
    assert all(p.requires_grad for p in full.parameters())


def test_same_seed_same_start(encoder_dir: Path) -> None:
    first, _ = build_classifier(encoder_dir, LabelSet(("a", "b")), method="lora", seed=3)
    torch.manual_seed(123)  # the global random state must not matter
    second, _ = build_classifier(encoder_dir, LabelSet(("a", "b")), method="lora", seed=3)
    for (name, a), (_, b) in zip(
        first.state_dict().items(), second.state_dict().items(), strict=True
    ):
        assert torch.equal(a, b), name


@pytest.mark.parametrize("method", ["lora", "full"])
def test_save_load_round_trip(encoder_dir: Path, tmp_path: Path, method: str) -> None:
    labels = LabelSet.from_labels(["x", "y", "z"])
    lora = LoRAConfig(r=4, alpha=8.0) if method == "lora" else None
    model, tokenizer = build_classifier(
        encoder_dir,
        labels,
        method=method,  # type: ignore[arg-type]
        lora=lora,
        max_length=16,
    )
    _perturb(model)
    saved = save_classifier(
        model, tmp_path / "clf", tokenizer=tokenizer, base_model=str(encoder_dir), lora=lora
    )
    expected_dir = "adapter" if method == "lora" else "encoder"
    assert (saved / expected_dir).is_dir()
    assert json.loads((saved / "labels.json").read_text()) == ["x", "y", "z"]
    loaded, loaded_tokenizer = load_classifier(saved)
    assert loaded.labels == labels and loaded.max_length == 16
    assert torch.equal(
        model.predict_logits(TEXTS, tokenizer), loaded.predict_logits(TEXTS, loaded_tokenizer)
    )


def test_save_wants_the_lora_config_exactly_for_lora(encoder_dir: Path, tmp_path: Path) -> None:
    model, tokenizer = build_classifier(encoder_dir, LabelSet(("a", "b")), method="lora")
    with pytest.raises(ValueError, match="LoRAConfig"):
        save_classifier(model, tmp_path / "m", tokenizer=tokenizer, base_model="x")


@pytest.mark.slow
def test_training_separates_two_word_pools(encoder_dir: Path, tmp_path: Path) -> None:
    train_texts, train_labels = _texts(48, seed=0)
    test_texts, test_labels = _texts(20, seed=1)
    train_file, test_file = tmp_path / "train.jsonl", tmp_path / "test.csv"
    train_file.write_text(
        "".join(
            json.dumps({"text": t, "label": y}) + "\n"
            for t, y in zip(train_texts, train_labels, strict=True)
        )
    )
    test_file.write_text(
        "text,category\n"
        + "".join(f"{t},{y}\n" for t, y in zip(test_texts, test_labels, strict=True))
    )
    settings = TrainSettings(
        epochs=10, batch_size=8, lr=3e-3, warmup=0.1, eval_every=5, patience=None, save_every=1000
    )
    result = train_classifier(
        train_file,
        test_file,
        out=tmp_path / "run",
        settings=settings,
        base_model=encoder_dir,
        method="lora",
        lora=LoRAConfig(r=8, alpha=16.0),
        val_share=0.25,
        device="cpu",
    )
    assert result.tuned_accuracy >= 0.95
    assert result.training.best_val_loss is not None and result.training.best_val_loss < 0.05
    assert (result.train_rows, result.val_rows, result.test_rows) == (36, 12, 20)
    assert 0 < result.trainable_params < result.base_params
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    assert report["tuned_accuracy"] == result.tuned_accuracy
    assert "| accuracy |" in (tmp_path / "run" / "report.md").read_text()
    loaded, tokenizer = load_classifier(result.model_dir)
    predicted = loaded.labels.decode(loaded.predict(test_texts, tokenizer))
    accuracy = sum(p == y for p, y in zip(predicted, test_labels, strict=True)) / len(test_labels)
    assert accuracy == result.tuned_accuracy


def test_bad_rows_are_named_by_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "train.jsonl"
    path.write_text('{"text": "fine", "label": "a"}\n{"text": "no label"}\n{"text": ""}\n')
    with pytest.raises(DataError) as caught:
        load_classification(path)
    assert f"{path}:2:" in str(caught.value) and f"{path}:3:" in str(caught.value)
    csv_path = tmp_path / "train.csv"
    csv_path.write_text("text,category\nhello,a\nonly one cell\n")
    with pytest.raises(DataError, match=f"{csv_path}:3:"):
        load_classification(csv_path)


def test_csv_label_column(tmp_path: Path) -> None:
    path = tmp_path / "data.csv"
    path.write_text("text,category,topic\nhello there,greet,x\nbye now,leave,y\n")
    assert load_classification(path) == (["hello there", "bye now"], ["greet", "leave"])
    assert load_classification(path, label_column="topic")[1] == ["x", "y"]


def test_split_validation_is_stratified_and_repeatable() -> None:
    texts = [f"t{i}" for i in range(100)]
    labels = ["a"] * 60 + ["b"] * 30 + ["c"] * 9 + ["d"]
    (train_texts, train_labels), (val_texts, val_labels) = split_validation(texts, labels, 0.1)
    assert sorted(val_labels) == ["a"] * 6 + ["b"] * 3 + ["c"]
    assert "d" in train_labels and sorted(train_texts + val_texts) == sorted(texts)
    assert split_validation(texts, labels, 0.1) == (
        (train_texts, train_labels),
        (val_texts, val_labels),
    )
    assert split_validation(texts, labels, 0.1, seed=1)[1][0] != val_texts


def test_label_set() -> None:
    labels = LabelSet.from_labels(["b", "a", "b"])
    assert labels.names == ("a", "b") and len(labels) == 2
    assert labels.ids(["b", "a"]) == [1, 0] and labels.decode([0, 1]) == ["a", "b"]
    with pytest.raises(ValueError, match="does not know: c"):
        labels.ids(["c"])
