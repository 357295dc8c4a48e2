"""Tiny, randomly initialised Hugging Face models with real tokenizers, for tests.

Every builder is seeded (the same seed gives the same weights, without touching the global torch
random state), returns the model in eval mode together with its tokenizer, and runs a forward
pass in milliseconds on a CPU. The writers put the same models on disk as real Hugging Face and
sentence-transformers folders, so loading code can be tested without a model hub.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import torch
from transformers import (
    BertConfig,
    BertForSequenceClassification,
    BertModel,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    PreTrainedTokenizerFast,
    Qwen2Config,
    Qwen2ForCausalLM,
)

from mentor.testing.tokenizers import tiny_chat_tokenizer, tiny_wordpiece_tokenizer

__all__ = [
    "save_model_folder",
    "save_tiny_llama",
    "tiny_bert",
    "tiny_llama",
    "tiny_qwen2",
    "tiny_sentence_transformer_folder",
]

_ModelT = TypeVar("_ModelT", bound=PreTrainedModel)


@contextmanager
def _seeded(seed: int) -> Iterator[None]:
    # fork_rng restores the caller's CPU generator afterwards, so building a tiny model in the
    # middle of a test never changes what that test's own torch.rand calls return.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def _build(factory: Callable[[], _ModelT], seed: int) -> _ModelT:
    with _seeded(seed):
        model = factory()
    model.eval()  # type: ignore[no-untyped-call]  # transformers leaves eval() unannotated
    return model


def _special_ids(tokenizer: PreTrainedTokenizerBase) -> dict[str, Any]:
    return {
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
    }


def _set_generation_ids(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> None:
    # generate() reads these from generation_config, not from config: without a pad id it warns
    # on every call, and without the eos id it would never stop at <|im_end|>.
    for key, value in _special_ids(tokenizer).items():
        setattr(model.generation_config, key, value)


def _chat_tokenizer(
    tokenizer: PreTrainedTokenizerFast | None, vocab_size: int | None
) -> PreTrainedTokenizerFast:
    if tokenizer is not None:
        return tokenizer
    return tiny_chat_tokenizer() if vocab_size is None else tiny_chat_tokenizer(vocab_size)


def tiny_llama(
    vocab_size: int | None = None,
    hidden_size: int = 64,
    num_layers: int = 2,
    num_heads: int = 4,
    num_kv_heads: int = 2,
    intermediate_size: int = 128,
    max_position_embeddings: int = 512,
    seed: int = 0,
    tie_word_embeddings: bool = True,
    tokenizer: PreTrainedTokenizerFast | None = None,
) -> tuple[LlamaForCausalLM, PreTrainedTokenizerFast]:
    """A random ``LlamaForCausalLM`` (grouped-query attention, tied head) and its chat tokenizer.

    ``vocab_size`` is passed to :func:`tiny_chat_tokenizer` (default 512); the model's vocabulary
    is then exactly ``len(tokenizer)``. Pass ``tokenizer`` to reuse one instead. bos, eos and pad
    ids are set in both ``config`` and ``generation_config``.
    """
    tok = _chat_tokenizer(tokenizer, vocab_size)
    config = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=hidden_size,
        intermediate_size=intermediate_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=num_kv_heads,
        max_position_embeddings=max_position_embeddings,
        tie_word_embeddings=tie_word_embeddings,
        **_special_ids(tok),
    )
    model = _build(lambda: LlamaForCausalLM(config), seed)
    _set_generation_ids(model, tok)
    return model, tok


def tiny_qwen2(
    vocab_size: int | None = None,
    hidden_size: int = 64,
    num_layers: int = 2,
    num_heads: int = 4,
    num_kv_heads: int = 2,
    intermediate_size: int = 128,
    max_position_embeddings: int = 512,
    seed: int = 0,
    tie_word_embeddings: bool = False,
    tokenizer: PreTrainedTokenizerFast | None = None,
) -> tuple[Qwen2ForCausalLM, PreTrainedTokenizerFast]:
    """A random ``Qwen2ForCausalLM`` (untied head by default) and the same chat tokenizer.

    With the default ``vocab_size`` it shares its vocabulary with :func:`tiny_llama`, so the two
    make a teacher/student pair for distillation tests (give them different sizes or seeds).
    """
    tok = _chat_tokenizer(tokenizer, vocab_size)
    config = Qwen2Config(
        vocab_size=len(tok),
        hidden_size=hidden_size,
        intermediate_size=intermediate_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=num_kv_heads,
        max_position_embeddings=max_position_embeddings,
        tie_word_embeddings=tie_word_embeddings,
        **_special_ids(tok),
    )
    model = _build(lambda: Qwen2ForCausalLM(config), seed)
    _set_generation_ids(model, tok)
    return model, tok


def tiny_bert(
    num_labels: int | None = None,
    hidden_size: int = 64,
    num_layers: int = 2,
    num_heads: int = 4,
    intermediate_size: int = 128,
    max_position_embeddings: int = 512,
    seed: int = 0,
    vocab_size: int | None = None,
    tokenizer: PreTrainedTokenizerFast | None = None,
) -> tuple[BertModel | BertForSequenceClassification, PreTrainedTokenizerFast]:
    """A random BERT encoder and its WordPiece tokenizer.

    With ``num_labels=None`` the model is a bare ``BertModel`` (for embeddings); otherwise a
    ``BertForSequenceClassification`` with that many labels (for cross-encoders and judges).
    ``vocab_size`` is passed to :func:`tiny_wordpiece_tokenizer` (default 512), unless a
    ``tokenizer`` is given.
    """
    tok = tokenizer or (
        tiny_wordpiece_tokenizer() if vocab_size is None else tiny_wordpiece_tokenizer(vocab_size)
    )
    config = BertConfig(
        vocab_size=len(tok),
        hidden_size=hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        intermediate_size=intermediate_size,
        max_position_embeddings=max_position_embeddings,
        pad_token_id=tok.pad_token_id,
    )
    if num_labels is None:
        return _build(lambda: BertModel(config), seed), tok
    config.num_labels = num_labels
    return _build(lambda: BertForSequenceClassification(config), seed), tok


def save_model_folder(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, path: str | Path
) -> Path:
    """Write ``model`` and ``tokenizer`` as a Hugging Face folder (``model.safetensors``, no
    ``.bin``) that ``AutoModel*.from_pretrained`` and ``AutoTokenizer.from_pretrained`` load.
    """
    folder = Path(path)
    folder.mkdir(parents=True, exist_ok=True)
    # Newer transformers always writes safetensors and ignores the flag; older ones need it.
    model.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    return folder


def save_tiny_llama(path: str | Path, **kwargs: Any) -> Path:
    """Build :func:`tiny_llama` with ``kwargs`` and write it with :func:`save_model_folder`."""
    model, tokenizer = tiny_llama(**kwargs)
    return save_model_folder(model, tokenizer, path)


def tiny_sentence_transformer_folder(
    path: str | Path, seed: int = 0, tokenizer: PreTrainedTokenizerFast | None = None
) -> Path:
    """Write a sentence-transformers folder: tiny BERT, mean pooling, then L2 normalisation.

    ``sentence_transformers.SentenceTransformer(str(path))`` loads it and encodes texts to
    unit vectors of dimension 64. ``tokenizer``: e.g. a :func:`tiny_wordpiece_tokenizer`
    trained on a test's own corpus, so its words are whole tokens.
    """
    # Imported here: sentence-transformers is slow to import and most tests never need it.
    from sentence_transformers import SentenceTransformer

    try:
        from sentence_transformers.sentence_transformer.modules import (
            Normalize,
            Pooling,
            Transformer,
        )
    except ImportError:  # sentence-transformers 5.x, where the modules had their old home
        from sentence_transformers.models import Normalize, Pooling, Transformer  # type: ignore[no-redef]

    folder = Path(path)
    model, tokenizer = tiny_bert(seed=seed, tokenizer=tokenizer)
    # Transformer only loads from a path or hub name, so the BERT goes through a scratch folder;
    # SentenceTransformer.save then writes it, with its pooling and normalisation, into `folder`.
    with tempfile.TemporaryDirectory(prefix="mentor-tiny-bert-") as scratch:
        transformer = Transformer(str(save_model_folder(model, tokenizer, scratch)))
        pooling = Pooling(model.config.hidden_size, pooling_mode="mean")
        encoder = SentenceTransformer(modules=[transformer, pooling, Normalize()], device="cpu")
    encoder.save(str(folder), create_model_card=False)
    return folder
