# The README's two commands:  `make demo` (set up + segment a real volume) and `make test`.
# Both create or reuse .venv and install idempotently (a stamp tracks pyproject.toml).
PY      ?= python3
VENV    ?= .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.medseg-installed
DEMO_OUT ?= demo_out

.PHONY: setup demo test test-fast lint format bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip setuptools wheel
	# standard PyPI torch + torchvision (CUDA build; runs on CPU too)
	$(BIN)/python -m pip install --quiet "torch>=2.5" "torchvision>=0.20"
	# sam2 is an sdist whose build imports torch: build it against the torch above, no CUDA ops
	$(BIN)/python -c "import sam2" 2>/dev/null || SAM2_BUILD_CUDA=0 $(BIN)/python -m pip install \
		--quiet --no-build-isolation "sam2==1.1.0"
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

demo: setup
	$(BIN)/medseg demo -o $(DEMO_OUT) --overwrite

test: setup
	$(BIN)/python -m pytest -m "not gpu" $(PYTEST_ARGS)

test-fast: setup
	$(BIN)/python -m pytest -m "not slow and not gpu and not browser and not load" $(PYTEST_ARGS)

lint: setup
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

format: setup
	$(BIN)/ruff format . && $(BIN)/ruff check --fix .

bench: setup
	$(BIN)/python bench/litemedsam.py

clean:
	rm -rf $(DEMO_OUT) build *.egg-info
