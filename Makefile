# `make demo`: set up (first time) and train a VAE on the embedded sprites data (~5 min on 2 CPU cores).
# `make test`: set up (first time) and run the fast tier of the tests (not marked slow; docs/testing.md).
# `make test-full`: every test, the slow tier included (what CI runs, .ci/run).
# `make lint`: ruff's lint rules and formatting check (configured in pyproject.toml); changes nothing.
# `make bench`: the benchmarks of docs/benchmarks.md.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# two pytest-xdist workers; tests/conftest.py says which tests run one at a time
PYTEST_ARGS ?= -n 2 --dist loadgroup

.PHONY: demo test test-full lint bench venv clean

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[test]"
	touch $@

demo: venv
	WANDB_SILENT=true $(BIN)/vae fit --config configs/base.yaml --config configs/sprites/vae.yaml \
		--config configs/demo.yaml
	@echo "Pictures: runs/demo/images/version_*/ ; checkpoints: runs/demo/checkpoints/version_*/"

test: venv
	$(BIN)/python -m pytest -m "not slow" $(PYTEST_ARGS)

test-full: venv
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

bench: venv  # docs/benchmarks.md (~25 min on 2 cores)
	$(BIN)/python -m bench $(BENCH_ARGS)

clean:
	rm -rf runs .pytest_cache
