"""Student construction: every k-th layer of the teacher (weights copied, the teacher untouched,
generation still works) and a smaller config, with sizes reported."""

from __future__ import annotations

import pytest
import torch

from mentor.distill.students import from_config, keep_every_kth_layer, layers_to_keep
from mentor.testing import tiny_bert, tiny_llama, tiny_qwen2


def test_layers_to_keep_ends_on_the_last() -> None:
    assert layers_to_keep(12, 2) == [1, 3, 5, 7, 9, 11]
    assert layers_to_keep(30, 3) == list(range(2, 30, 3))
    assert layers_to_keep(4, 1) == [0, 1, 2, 3]
    assert layers_to_keep(5, 5) == [4]
    with pytest.raises(ValueError, match="k >= 1"):
        layers_to_keep(4, 0)
    with pytest.raises(ValueError, match="cannot keep every 6th"):
        layers_to_keep(4, 6)


@pytest.mark.parametrize("factory", [tiny_llama, tiny_qwen2], ids=["llama", "qwen2"])
def test_keep_every_kth_layer_copies_the_teachers_blocks(factory) -> None:  # type: ignore[no-untyped-def]
    teacher, tok = factory(num_layers=4, seed=0)
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    student, size = keep_every_kth_layer(teacher, 2)
    assert student.config.num_hidden_layers == 2 and len(student.model.layers) == 2
    assert teacher.config.num_hidden_layers == 4 and len(teacher.model.layers) == 4
    assert all(torch.equal(before[k], v) for k, v in teacher.state_dict().items())
    ours = student.state_dict()
    for new, old in enumerate([1, 3]):  # student block i is teacher block kept[i]
        prefix_new, prefix_old = f"model.layers.{new}.", f"model.layers.{old}."
        for key, value in ours.items():
            if key.startswith(prefix_new):
                assert torch.equal(value, before[prefix_old + key[len(prefix_new) :]])
    assert torch.equal(ours["model.embed_tokens.weight"], before["model.embed_tokens.weight"])
    assert size.kept_layers == (1, 3) and size.student_layers == 2 and size.teacher_layers == 4
    assert size.student_params < size.teacher_params
    assert "teacher layers [1, 3]" in str(size)
    # the student runs and generates with its KV cache (layer indices renumbered)
    ids = torch.tensor([[tok.bos_token_id or 1, 5, 6, 7]])
    out = student.generate(ids, max_new_tokens=3, do_sample=False)
    assert out.shape == (1, 7)


def test_keep_every_kth_layer_on_an_encoder_classifier() -> None:
    teacher, _ = tiny_bert(num_labels=3, num_layers=4)
    student, size = keep_every_kth_layer(teacher, 2)
    assert len(student.bert.encoder.layer) == 2
    assert student(input_ids=torch.tensor([[2, 5, 6, 3]])).logits.shape == (1, 3)
    assert size.ratio < 1


def test_from_config_counts_tied_weights_once() -> None:
    teacher, _ = tiny_llama(num_layers=4, hidden_size=64)
    student, size = from_config(teacher, num_hidden_layers=1, hidden_size=32, intermediate_size=64)
    assert student.config.num_hidden_layers == 1
    expected = sum(p.numel() for p in student.parameters())  # tied: listed once by parameters()
    assert size.student_params == expected and size.kept_layers is None
    with pytest.raises(ValueError, match="no field 'hidden_sise'"):
        from_config(teacher, hidden_sise=3)
