"""Turn fetched raw files into a plain, safetensors-only model folder.

GGUF checkpoints are dequantised once by transformers' GGUF reader and written back as an
ordinary Hugging Face folder, so later loads take seconds and the weights train like any others.
Folders are copied without pickled weights: mentor never unpickles a checkpoint.
"""

from __future__ import annotations

import contextlib
import io
import shutil
import zipfile
from pathlib import Path

from mentor.models.sources import Fetched, SourceError

_PICKLES = {".bin", ".pt", ".pth", ".pkl", ".ckpt"}
_JUNK = {"desktop.ini", ".gitattributes", ".DS_Store"}


def materialize(fetched: Fetched, out_dir: Path, *, store_dtype: str, workdir: Path) -> None:
    """Write the model that ``fetched`` describes into ``out_dir`` (an empty folder)."""
    if fetched.format == "gguf":
        convert_gguf(fetched.path, out_dir, store_dtype=store_dtype)
    elif fetched.format == "zip":
        copy_folder(_extract_zip(fetched.path, workdir / "unzipped"), out_dir)
    else:
        copy_folder(fetched.path, out_dir)


def copy_folder(src: Path, out_dir: Path) -> None:
    """Copy a model folder, leaving out pickled weights and OS junk; refuse pickle-only models."""
    files = [p for p in sorted(src.rglob("*")) if p.is_file() and p.name not in _JUNK]
    files = [p for p in files if ".cache" not in p.relative_to(src).parts]
    if not any(p.suffix == ".safetensors" for p in files):
        if any(p.suffix in _PICKLES for p in files):
            raise SourceError(
                f"{src}: the weights are pickled (.bin/.pt) and mentor loads only safetensors; "
                "convert them first, for example with transformers' save_pretrained"
            )
        raise SourceError(f"{src}: no .safetensors weights found")
    for path in files:
        if path.suffix in _PICKLES:
            continue
        target = out_dir / path.relative_to(src)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, target)


def _extract_zip(archive: Path, dest: Path) -> Path:
    """Extract safely (no absolute paths, no ``..``) and return the folder holding the model."""
    with zipfile.ZipFile(archive) as zf:
        for member in zf.infolist():
            parts = Path(member.filename).parts
            if member.filename.startswith("/") or ".." in parts:
                raise SourceError(f"{archive}: unsafe path in archive: {member.filename}")
        zf.extractall(dest)
    configs = sorted(dest.rglob("config.json"), key=lambda p: len(p.parts))
    if not configs:
        raise SourceError(f"{archive}: no config.json inside the archive")
    return configs[0].parent


def convert_gguf(gguf_path: Path, out_dir: Path, *, store_dtype: str) -> None:
    """Dequantise a GGUF causal LM into a safetensors folder with its tokenizer."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder, name = str(gguf_path.parent), gguf_path.name
    dtype = getattr(torch, store_dtype)  # dequantising straight to bf16 halves the peak memory
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    # The GGUF reader draws its own tqdm bar on stderr; the caller shows mentor's progress.
    with contextlib.redirect_stderr(io.StringIO()):
        source = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=dtype)
    config = source.config
    # The GGUF loader leaves a quantizer attached that refuses training and saving, although the
    # tensors are already plain floats: rebuild a clean model around the same tensors.
    if hasattr(config, "quantization_config"):
        delattr(config, "quantization_config")
    config.dtype = store_dtype
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)  # type: ignore[no-untyped-call]
    model.load_state_dict(source.state_dict(), assign=True)
    model.tie_weights()
    model.to(dtype)
    generation = source.generation_config
    generation.eos_token_id = _stop_ids(tokenizer, generation.eos_token_id)
    model.generation_config = generation
    del source
    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)


def _stop_ids(tokenizer: object, eos: int | list[int] | None) -> list[int]:
    """End-of-turn ids for chat: the model's eos plus ChatML/llama end tokens it has."""
    ids = [eos] if isinstance(eos, int) else list(eos or [])
    vocab: dict[str, int] = tokenizer.get_vocab()  # type: ignore[attr-defined]
    for token in ("<|im_end|>", "<|endoftext|>", "<|eot_id|>", "<|end|>"):
        if token in vocab and vocab[token] not in ids:
            ids.append(vocab[token])
    return ids
