"""``mentor export``: a model or a LoRA adapter as one GGUF file for llama.cpp, Ollama, LM Studio.

What goes in: any causal LM folder mentor writes or loads (a pulled base, a merged or fully
fine-tuned or distilled model: Hugging Face safetensors folders; a ``mentor quantize`` folder,
read by :mod:`.io`), or a LoRA adapter folder (:mod:`mentor.train.adapters`). What comes out:
the ``gguf`` package's writer fills in the file, with tensor names from its own name map, so the
layout is the one llama.cpp's ``convert_hf_to_gguf.py`` writes for the same architecture.

Quantized folders are not quantized twice: an int4 layer's codes go into ``Q4_1`` blocks as they
are and an int8 layer's into ``Q8_0`` (:mod:`.ggml`), so the exported model is mentor's own
quantized model, not a second approximation of the float one. Everything else is quantized by
``gguf.quants`` (ggml's reference rounding). Embeddings and an untied output head stay at
``Q8_0`` in the 4-bit types, as mentor's int4 keeps them in floating point and llama.cpp's own
4-bit recipes keep the output at 6 bits or more.

The tokenizer comes from the GGUF the model was pulled from when there is one (every
``tokenizer.*`` field as llama.cpp wrote it, pre-tokenizer name included); otherwise it is built
from the folder's ``tokenizer.json`` (byte-level BPE only), with ``gguf.SpecialVocab`` for the
merges, special ids and chat template.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mentor.quantize.convert import QuantizeError
from mentor.quantize.ggml import BLOCK, int4_to_q4_1, int8_to_q8_0, permute_rope_rows

GGUF_TYPES: dict[str, str] = {
    "f32": "32-bit floats (the reference; 4 bytes a weight)",
    "f16": "16-bit floats (2 bytes a weight)",
    "q8_0": "8-bit codes per block of 32 with an fp16 scale (int8 folders carry over exactly)",
    "q4_1": "4-bit codes per block of 32 with fp16 scale and minimum (int4 folders exactly)",
    "q4_0": "4-bit symmetric codes per block of 32 with an fp16 scale",
}
"""The file types ``mentor export --type`` writes, by name."""

ADAPTER_TYPES = ("f32", "f16")

ARCHITECTURES: dict[str, tuple[str, bool]] = {
    "LlamaForCausalLM": ("llama", True),
    "MistralForCausalLM": ("llama", True),
    "Qwen2ForCausalLM": ("qwen2", False),
}
"""Hugging Face class -> (llama.cpp architecture, whether q/k rows are permuted for its rope)."""

log = logging.getLogger(__name__)
Say = Callable[[str], None]


class ExportError(QuantizeError):
    """A model, adapter or setting that cannot be exported as asked (names the field or file)."""


# --- what a source folder holds ---------------------------------------------------------------


@dataclass(frozen=True)
class Int4Codes:
    """An int4 layer's weight as mentor saved it: codes unpacked to (rows, cols)."""

    codes: torch.Tensor
    scales: torch.Tensor
    offsets: torch.Tensor

    def dequantize(self) -> torch.Tensor:
        rows, cols = self.codes.shape
        groups = self.codes.float().view(rows, self.scales.shape[1], -1)
        return (groups * self.scales[..., None] + self.offsets[..., None]).view(rows, cols)

    def permuted(self, n_head: int) -> Int4Codes:
        return Int4Codes(*(permute_rope_rows(t, n_head) for t in self.__dict__.values()))


@dataclass(frozen=True)
class Int8Codes:
    """An int8 layer's weight: codes, one scale per row, SmoothQuant factors if it has them."""

    codes: torch.Tensor
    scale: torch.Tensor
    smooth: torch.Tensor | None

    def dequantize(self) -> torch.Tensor:
        weight = self.codes.float() * self.scale[:, None]
        # the layer divides its input by ``smooth``: fold that back into the columns
        return weight if self.smooth is None else weight / self.smooth[None, :]

    def permuted(self, n_head: int) -> Int8Codes:
        return Int8Codes(
            permute_rope_rows(self.codes, n_head),
            permute_rope_rows(self.scale, n_head),
            self.smooth,
        )


Weight = torch.Tensor | Int4Codes | Int8Codes


@dataclass
class SourceModel:
    """A causal LM folder read for export: its config and every tensor, by Hugging Face name."""

    folder: Path
    config: dict[str, Any]
    tensors: dict[str, Weight]
    method: str | None = None
    """``int8``/``int4`` for a ``mentor quantize`` folder, None for floating point."""
    base_model: str | None = None
    """Where the weights came from, as the folder records it (a registry name or a path)."""


def read_source(folder: Path) -> SourceModel:
    """The model in ``folder``: a quantized folder (its manifest decides) or safetensors."""
    from mentor.quantize.io import MANIFEST_FILE

    config = _read_config(folder)
    if (folder / MANIFEST_FILE).exists():
        return _read_quantized(folder, config)
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise ExportError(f"{folder}: no .safetensors weights and no {MANIFEST_FILE}")
    from safetensors import safe_open

    tensors: dict[str, Weight] = {}
    for path in files:
        with safe_open(str(path), framework="pt") as fh:
            for key in fh.keys():  # noqa: SIM118  (safe_open is not a mapping)
                tensors[key] = fh.get_tensor(key).float()
    return SourceModel(folder, config, tensors, None, _recorded_base(folder))


def _read_config(folder: Path) -> dict[str, Any]:
    path = folder / "config.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ExportError(f"{folder}: not a model folder (no config.json)") from None
    except json.JSONDecodeError as exc:
        raise ExportError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise ExportError(f"{path}: expected a JSON object")
    return data


def _read_quantized(folder: Path, config: dict[str, Any]) -> SourceModel:
    from safetensors.torch import load_file

    from mentor.quantize.int4 import unpack_int4
    from mentor.quantize.io import WEIGHTS_FILE, read_manifest

    manifest = read_manifest(folder)
    try:
        state = load_file(str(folder / WEIGHTS_FILE))
    except FileNotFoundError:
        raise ExportError(f"{folder}: no {WEIGHTS_FILE}") from None
    for alias, source in manifest.tied.items():
        if source in state:
            state[alias] = state[source]
    tensors: dict[str, Weight] = {}
    for plan in manifest.layers:
        try:
            if plan.method == "int4":
                tensors[f"{plan.path}.weight"] = Int4Codes(
                    unpack_int4(state.pop(f"{plan.path}.qweight")),
                    state.pop(f"{plan.path}.scales").float(),
                    state.pop(f"{plan.path}.offsets").float(),
                )
            else:
                tensors[f"{plan.path}.weight"] = Int8Codes(
                    state.pop(f"{plan.path}.qweight"),
                    state.pop(f"{plan.path}.scale").float(),
                    state.pop(f"{plan.path}.smooth", None),
                )
        except KeyError as exc:
            raise ExportError(f"{folder / WEIGHTS_FILE}: {exc.args[0]} is missing") from None
    tensors.update({key: value.float() for key, value in state.items()})
    return SourceModel(folder, config, tensors, manifest.method, manifest.base_model)


def _recorded_base(folder: Path) -> str | None:
    """The base a folder says it came from (a finetune or distill run's manifest), if any."""
    for name in ("mentor.json", "mentor_model.json", "mentor_run.json"):
        path = folder / name
        if path.exists():
            try:
                data = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, json.JSONDecodeError):
                continue
            for key in ("base_model", "base", "student"):
                if isinstance(data.get(key), str):
                    return str(data[key])
    return None


# --- the architecture --------------------------------------------------------------------------


@dataclass(frozen=True)
class Architecture:
    """What llama.cpp needs to know about the network, read from ``config.json``."""

    name: str
    permute: bool
    n_layers: int
    n_embd: int
    n_ff: int
    n_head: int
    n_head_kv: int
    head_dim: int
    n_ctx: int
    rms_eps: float
    rope_theta: float
    vocab_size: int
    tied: bool

    @classmethod
    def from_config(cls, config: dict[str, Any], where: Path) -> Architecture:
        archs = config.get("architectures") or []
        known = [a for a in archs if a in ARCHITECTURES]
        if not known:
            raise ExportError(
                f"{where / 'config.json'}: architectures {archs} cannot be exported yet; "
                f"supported: {', '.join(ARCHITECTURES)}"
            )
        name, permute = ARCHITECTURES[known[0]]
        rope = config.get("rope_parameters") or config.get("rope_scaling") or {}
        kind = rope.get("rope_type", rope.get("type", "default"))
        if kind not in ("default", None):
            raise ExportError(
                f"{where / 'config.json'}: rope_type {kind!r} is not exported yet (default only)"
            )
        theta = rope.get("rope_theta", config.get("rope_theta", 10000.0))
        try:
            n_head = int(config["num_attention_heads"])
            hidden = int(config["hidden_size"])
            return cls(
                name=name,
                permute=permute,
                n_layers=int(config["num_hidden_layers"]),
                n_embd=hidden,
                n_ff=int(config["intermediate_size"]),
                n_head=n_head,
                n_head_kv=int(config.get("num_key_value_heads") or n_head),
                head_dim=int(config.get("head_dim") or hidden // n_head),
                n_ctx=int(config.get("max_position_embeddings", 2048)),
                rms_eps=float(config.get("rms_norm_eps", 1e-6)),
                rope_theta=float(theta),
                vocab_size=int(config["vocab_size"]),
                tied=bool(config.get("tie_word_embeddings", False)),
            )
        except KeyError as exc:
            raise ExportError(f"{where / 'config.json'}: field {exc.args[0]} is missing") from None

    def gguf_name(self, hf_name: str) -> str:
        import gguf

        arch = next(a for a, n in gguf.MODEL_ARCH_NAMES.items() if n == self.name)
        mapping = gguf.get_tensor_name_map(arch, self.n_layers)
        found = mapping.get_name(hf_name, try_suffixes=(".weight", ".bias"))
        if found is None:
            raise ExportError(f"tensor {hf_name}: no GGUF name for it in the {self.name} map")
        return str(found)

    def heads_for(self, hf_name: str) -> int | None:
        """The head count to permute ``hf_name``'s rows by, or None to leave them."""
        if not self.permute:
            return None
        if ".q_proj." in hf_name:
            return self.n_head
        if ".k_proj." in hf_name:
            return self.n_head_kv
        return None

    def write(self, writer: Any) -> None:
        writer.add_context_length(self.n_ctx)
        writer.add_embedding_length(self.n_embd)
        writer.add_block_count(self.n_layers)
        writer.add_feed_forward_length(self.n_ff)
        writer.add_head_count(self.n_head)
        writer.add_head_count_kv(self.n_head_kv)
        writer.add_rope_dimension_count(self.head_dim)
        writer.add_rope_freq_base(self.rope_theta)
        writer.add_layer_norm_rms_eps(self.rms_eps)
        writer.add_vocab_size(self.vocab_size)
        if self.head_dim * self.n_head != self.n_embd:
            writer.add_key_length(self.head_dim)
            writer.add_value_length(self.head_dim)


# --- encoding one tensor -----------------------------------------------------------------------


@dataclass(frozen=True)
class Encoded:
    """One tensor ready for the writer: its bytes (or floats) and ggml type."""

    data: np.ndarray
    ggml_type: str
    exact: bool
    """The codes of mentor's quantized layer carried over unchanged."""


def encode(weight: Weight, wanted: str, *, embedding: bool = False) -> Encoded:
    """``weight`` in ggml type ``wanted`` (:data:`GGUF_TYPES`; 1-D tensors always f32).

    int4 codes go to Q4_1 and int8 codes (unsmoothed) to Q8_0 unchanged when that is the type
    wanted, or when the 4-bit types meet an int8 layer (mentor's int8 output head); anything else
    is dequantized and quantized again. Rows that are no whole number of 32-blocks fall back to
    f16, as llama.cpp's converter does."""
    import gguf

    if isinstance(weight, Int4Codes) and wanted == "q4_1":
        return Encoded(int4_to_q4_1(weight.codes, weight.scales, weight.offsets), "q4_1", True)
    if (
        isinstance(weight, Int8Codes)
        and weight.smooth is None
        and wanted in ("q8_0", "q4_0", "q4_1")
    ):
        return Encoded(int8_to_q8_0(weight.codes, weight.scale), "q8_0", True)
    values = weight if isinstance(weight, torch.Tensor) else weight.dequantize()
    array = values.detach().float().cpu().numpy()
    if array.ndim == 1:
        return Encoded(array.astype(np.float32), "f32", False)
    target = "q8_0" if embedding and wanted in ("q4_0", "q4_1") else wanted
    if target in ("q8_0", "q4_0", "q4_1") and array.shape[-1] % BLOCK:
        target = "f16"
    if target == "f32":
        return Encoded(array.astype(np.float32), "f32", False)
    if target == "f16":
        return Encoded(array.astype(np.float16), "f16", False)
    qtype = getattr(gguf.GGMLQuantizationType, target.upper())
    return Encoded(gguf.quants.quantize(array, qtype), target, False)


def _qtype(name: str) -> Any:
    import gguf

    return getattr(gguf.GGMLQuantizationType, name.upper())


def _file_type(name: str) -> int:
    import gguf

    return int(
        {
            "f32": gguf.LlamaFileType.ALL_F32,
            "f16": gguf.LlamaFileType.MOSTLY_F16,
            "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0,
            "q4_0": gguf.LlamaFileType.MOSTLY_Q4_0,
            "q4_1": gguf.LlamaFileType.MOSTLY_Q4_1,
        }[name]
    )


# --- the tokenizer -----------------------------------------------------------------------------


def find_source_gguf(folder: Path, base_model: str | None) -> Path | None:
    """The GGUF file the model in ``folder`` (or its recorded base) was pulled from, if any."""
    seen: set[str] = set()
    candidates: list[Path] = [folder]
    while candidates:
        here = candidates.pop(0)
        if str(here) in seen:
            continue
        seen.add(str(here))
        found = _pulled_from(here)
        if found is not None:
            return found
        if base_model is not None:
            candidates.append(_folder_of(base_model))
            base_model = None
    return None


def _folder_of(name: str) -> Path:
    from mentor.models.hub import model_dir

    path = Path(name).expanduser()
    if path.is_dir():
        return path
    return model_dir(name) or path


def _pulled_from(folder: Path) -> Path | None:
    from mentor.models.hub import pulled_gguf

    return pulled_gguf(folder) if (folder / "mentor.json").exists() else None


def copy_tokenizer(writer: Any, source: Path, vocab_size: int, arch: str) -> bool:
    """Copy every ``tokenizer.*`` field of the GGUF ``source``; False (nothing written) when its
    vocabulary or architecture is not this model's."""
    import gguf

    reader = gguf.GGUFReader(str(source))
    fields = reader.fields
    tokens = fields.get("tokenizer.ggml.tokens")
    arch_field = fields.get("general.architecture")
    if tokens is None or len(tokens.data) != vocab_size:
        return False
    if arch_field is not None and arch_field.contents() != arch:
        return False
    for name, item in fields.items():
        if not name.startswith("tokenizer."):
            continue
        main = item.types[0]
        sub = item.types[-1] if main == gguf.GGUFValueType.ARRAY else None
        writer.add_key_value(name, item.contents(), main, sub_type=sub)
    return True


def build_tokenizer(writer: Any, folder: Path, vocab_size: int) -> None:
    """Write a byte-level BPE tokenizer from ``folder``'s ``tokenizer.json`` (llama.cpp's
    ``gpt2`` model with the GPT-2 pre-tokenizer)."""
    import gguf
    from transformers import AutoTokenizer

    path = folder / "tokenizer.json"
    try:
        spec = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ExportError(
            f"{folder}: no tokenizer.json (and no source GGUF to copy one from)"
        ) from None
    model = spec.get("model") or {}
    pre = spec.get("pre_tokenizer") or {}
    if model.get("type") != "BPE" or pre.get("type") != "ByteLevel" or not pre.get("use_regex", 1):
        raise ExportError(
            f"{path}: only byte-level BPE with the GPT-2 split is built here (model "
            f"{model.get('type')!r}, pre_tokenizer {pre.get('type')!r}); pass "
            "--tokenizer-from FILE.gguf to copy the tokenizer of a GGUF with the same vocabulary"
        )
    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    if len(tokenizer) > vocab_size:
        raise ExportError(
            f"{folder}: the tokenizer has {len(tokenizer)} tokens, vocab_size is {vocab_size}"
        )
    vocab = tokenizer.get_vocab()
    by_id = {i: t for t, i in vocab.items()}
    added = tokenizer.get_added_vocab()
    special = set(tokenizer.all_special_tokens)
    tokens: list[str] = []
    types: list[int] = []
    for i in range(vocab_size):
        token = by_id.get(i)
        if token is None:
            tokens.append(f"[PAD{i}]")
            types.append(gguf.TokenType.UNUSED)
        else:
            tokens.append(token)
            if token in special:
                types.append(gguf.TokenType.CONTROL)
            elif token in added:
                types.append(gguf.TokenType.USER_DEFINED)
            else:
                types.append(gguf.TokenType.NORMAL)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("gpt-2")
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    gguf.SpecialVocab(folder, load_merges=True, n_vocab=vocab_size).add_to_gguf(writer)


def chat_template(folder: Path) -> str | None:
    """The folder's chat template (``chat_template.jinja`` or ``tokenizer_config.json``)."""
    jinja = folder / "chat_template.jinja"
    if jinja.exists():
        return jinja.read_text(encoding="utf-8")
    config = folder / "tokenizer_config.json"
    if config.exists():
        template = json.loads(config.read_text(encoding="utf-8")).get("chat_template")
        return template if isinstance(template, str) else None
    return None


# --- the model file ----------------------------------------------------------------------------


@dataclass
class ExportResult:
    """What was written."""

    path: Path
    gguf_type: str
    size_bytes: int
    tensors: dict[str, int] = field(default_factory=dict)
    """ggml type -> number of tensors of that type."""
    exact: int = 0
    """Tensors whose quantized codes came over from mentor's folder unchanged."""
    tokenizer: str = ""
    """Where the tokenizer came from: a GGUF path, or ``tokenizer.json``."""
    modelfile: Path | None = None


def _named_tensors(source: SourceModel, arch: Architecture) -> Iterator[tuple[str, str, Weight]]:
    """(Hugging Face name, GGUF name, weight with llama.cpp's row order) for every tensor kept."""
    for name, weight in source.tensors.items():
        if name.endswith("rotary_emb.inv_freq"):
            continue
        if name == "lm_head.weight" and arch.tied:
            continue  # llama.cpp reads a missing output.weight as the tied embeddings
        heads = arch.heads_for(name)
        if heads is not None:
            weight = (
                permute_rope_rows(weight, heads)
                if isinstance(weight, torch.Tensor)
                else weight.permuted(heads)
            )
        yield name, arch.gguf_name(name), weight


def export_model(
    folder: Path,
    out: Path,
    gguf_type: str,
    *,
    name: str | None = None,
    tokenizer_from: Path | None = None,
    merge: Path | None = None,
    say: Say = lambda _: None,
) -> ExportResult:
    """Write the model in ``folder`` to the GGUF file ``out`` as ``gguf_type``.

    ``merge`` is a LoRA adapter folder added into the floating-point weights first;
    ``tokenizer_from`` a GGUF whose tokenizer fields are copied (default: the one the model was
    pulled from, else built from ``tokenizer.json``)."""
    import gguf

    if gguf_type not in GGUF_TYPES:
        raise ExportError(f"--type {gguf_type!r} is not one of: {', '.join(GGUF_TYPES)}")
    folder = Path(folder)
    source = read_source(folder)
    arch = Architecture.from_config(source.config, folder)
    if merge is not None:
        if source.method is not None:
            raise ExportError(
                f"{folder}: a quantized folder takes no --merge; quantize with --adapter instead"
            )
        _merge_adapter(source, merge)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".part")
    writer = gguf.GGUFWriter(str(tmp), arch.name)
    result = ExportResult(out, gguf_type, 0)
    try:
        writer.add_name(name or folder.name)
        writer.add_file_type(_file_type(gguf_type))
        writer.add_string("mentor.source", str(folder))
        if source.method:
            writer.add_string("mentor.quantized", source.method)
        arch.write(writer)
        gguf_source = tokenizer_from or find_source_gguf(folder, source.base_model)
        if gguf_source is not None and copy_tokenizer(
            writer, gguf_source, arch.vocab_size, arch.name
        ):
            result.tokenizer = str(gguf_source)
        elif tokenizer_from is not None:
            raise ExportError(
                f"{tokenizer_from}: its tokenizer does not fit this model (another vocabulary "
                f"size than {arch.vocab_size} or another architecture than {arch.name})"
            )
        else:
            build_tokenizer(writer, folder, arch.vocab_size)
            result.tokenizer = str(folder / "tokenizer.json")
        template = chat_template(folder)
        if template is not None:  # the folder's template is the one mentor chats with
            writer.kv_data[0].pop(gguf.Keys.Tokenizer.CHAT_TEMPLATE, None)
            writer.add_chat_template(template)
        say(f"writing {len(source.tensors)} tensors as {gguf_type}")
        for hf_name, gguf_name, weight in _named_tensors(source, arch):
            embedding = gguf_name in ("token_embd.weight", "output.weight")
            encoded = encode(weight, gguf_type, embedding=embedding)
            if encoded.ggml_type in ("f32", "f16"):
                writer.add_tensor(gguf_name, encoded.data)
            else:
                writer.add_tensor(gguf_name, encoded.data, raw_dtype=_qtype(encoded.ggml_type))
            result.tensors[encoded.ggml_type] = result.tensors.get(encoded.ggml_type, 0) + 1
            result.exact += encoded.exact
            del hf_name
        _write(writer)
    finally:
        writer.close()
    tmp.replace(out)
    result.size_bytes = out.stat().st_size
    return result


def _write(writer: Any) -> None:
    # the writer draws its own progress bar on stderr; the command line shows mentor's
    with contextlib.redirect_stderr(io.StringIO()):
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()


def _merge_adapter(source: SourceModel, adapter: Path) -> None:
    for module, (a, b, scale) in read_lora(adapter).items():
        key = f"{module}.weight"
        base = source.tensors.get(key)
        if not isinstance(base, torch.Tensor):
            raise ExportError(f"{adapter}: adapts {module}, which the model does not have")
        if base.shape != (b.shape[0], a.shape[1]):
            raise ExportError(
                f"{adapter}: {module} is {tuple(base.shape)}, the adapter makes "
                f"{(b.shape[0], a.shape[1])}"
            )
        source.tensors[key] = base + scale * (b.float() @ a.float())


# --- LoRA adapters -----------------------------------------------------------------------------


def read_lora(folder: Path) -> dict[str, tuple[torch.Tensor, torch.Tensor, float]]:
    """module path -> (A (r, d_in), B (d_out, r), scaling) of a PEFT-format adapter folder."""
    from safetensors.torch import load_file

    from mentor.train.adapters import PEFT_PREFIX, WEIGHTS_FILE, AdapterError, read_info

    try:
        info = read_info(Path(folder))
    except AdapterError as exc:
        raise ExportError(str(exc)) from None
    state = load_file(str(Path(folder) / WEIGHTS_FILE))
    pairs: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in state.items():
        stem = key.removeprefix(PEFT_PREFIX)
        for part in ("lora_A", "lora_B"):
            head, sep, _ = stem.partition(f".{part}.")
            if sep:
                pairs.setdefault(head, {})[part] = value
    scale = info.config.scaling
    found: dict[str, tuple[torch.Tensor, torch.Tensor, float]] = {}
    for module, both in sorted(pairs.items()):
        if set(both) != {"lora_A", "lora_B"}:
            raise ExportError(f"{folder}: {module} has only {', '.join(both)}")
        found[module] = (both["lora_A"], both["lora_B"], scale)
    if not found:
        raise ExportError(f"{folder}: no lora_A/lora_B tensors")
    return found


def export_lora(
    adapter: Path,
    base_folder: Path,
    out: Path,
    gguf_type: str = "f16",
    *,
    say: Say = lambda _: None,
) -> ExportResult:
    """Write the LoRA adapter in ``adapter`` as a GGUF LoRA for llama.cpp (``--lora FILE``),
    as llama.cpp's ``convert_lora_to_gguf.py`` lays it out: ``general.type = adapter``,
    ``adapter.type = lora``, ``adapter.lora.alpha``, and for each adapted weight ``W`` the
    tensors ``<W's GGUF name>.lora_a`` (r, d_in) and ``.lora_b`` (d_out, r).

    ``base_folder`` is the model the adapter was trained on (its config gives the architecture
    and the q/k row order). llama.cpp scales the update by ``alpha / r``; a rank-stabilised
    adapter (``alpha / sqrt(r)``) is written with the alpha that gives the same scale."""
    import gguf

    if gguf_type not in ADAPTER_TYPES:
        raise ExportError(
            f"--type {gguf_type!r}: an adapter is written as {' or '.join(ADAPTER_TYPES)}"
        )
    base_folder = Path(base_folder)
    arch = Architecture.from_config(_read_config(base_folder), base_folder)
    lora = read_lora(adapter)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".part")
    writer = gguf.GGUFWriter(str(tmp), arch.name)
    result = ExportResult(out, gguf_type, 0, tokenizer="")
    dtype = np.float16 if gguf_type == "f16" else np.float32
    try:
        writer.add_type(gguf.GGUFType.ADAPTER)
        writer.add_string(gguf.Keys.Adapter.TYPE, "lora")
        rank = next(iter(lora.values()))[0].shape[0]
        scaling = next(iter(lora.values()))[2]
        writer.add_float32(gguf.Keys.Adapter.LORA_ALPHA, float(scaling * rank))
        writer.add_name(Path(adapter).name)
        writer.add_string("mentor.base_model", str(base_folder))
        say(f"writing {2 * len(lora)} LoRA tensors")
        for module, (a, b, scale) in lora.items():
            if not math.isclose(scale, scaling):
                raise ExportError(f"{adapter}: {module} has another scale than the others")
            name = arch.gguf_name(f"{module}.weight")
            heads = arch.heads_for(f"{module}.weight")
            if heads is not None:
                b = permute_rope_rows(b, heads)  # the rows of B are W's output rows
            writer.add_tensor(name + ".lora_a", a.float().numpy().astype(dtype))
            writer.add_tensor(name + ".lora_b", b.float().numpy().astype(dtype))
        result.tensors[gguf_type] = 2 * len(lora)
        _write(writer)
    finally:
        writer.close()
    tmp.replace(out)
    result.size_bytes = out.stat().st_size
    return result


# --- Ollama ------------------------------------------------------------------------------------

CHATML_GO = (
    "{{- range .Messages }}<|im_start|>{{ .Role }}\n{{ .Content }}<|im_end|>\n{{ end }}"
    "<|im_start|>assistant\n"
)
LLAMA3_GO = (
    "{{- range .Messages }}<|start_header_id|>{{ .Role }}<|end_header_id|>\n\n"
    "{{ .Content }}<|eot_id|>{{ end }}<|start_header_id|>assistant<|end_header_id|>\n\n"
)


def modelfile_text(gguf_file: str, template: str | None, stops: list[str]) -> str:
    """An Ollama ``Modelfile`` for ``gguf_file``: Ollama's Go template for the model's Jinja
    chat template (ChatML or Llama 3; another is left to the template in the GGUF, which Ollama
    reads) and its end-of-turn tokens as stop words."""
    lines = [f"FROM ./{gguf_file}"]
    go = None
    if template and "<|im_start|>" in template:
        go = CHATML_GO
    elif template and "<|start_header_id|>" in template:
        go = LLAMA3_GO
    if go is not None:
        lines.append(f'TEMPLATE """{go}"""')
    elif template:
        lines.append("# chat template: not ChatML nor Llama 3; Ollama uses the GGUF's own")
    lines += [f'PARAMETER stop "{stop}"' for stop in stops]
    return "\n".join(lines) + "\n"


def write_modelfile(result: ExportResult, folder: Path) -> Path:
    """Write ``Modelfile`` next to the exported model file, for ``ollama create NAME``."""
    template = chat_template(folder)
    stops: list[str] = []
    generation = folder / "generation_config.json"
    if generation.exists():
        from transformers import AutoTokenizer

        eos = json.loads(generation.read_text(encoding="utf-8")).get("eos_token_id")
        ids = [eos] if isinstance(eos, int) else list(eos or [])
        tokenizer = AutoTokenizer.from_pretrained(str(folder))
        stops = [str(t) for t in tokenizer.convert_ids_to_tokens(ids) if t]
    text = modelfile_text(result.path.name, template, stops)
    path = result.path.with_name("Modelfile")
    path.write_text(text, encoding="utf-8")
    return path
