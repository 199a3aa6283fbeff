# The README's two commands:  `make demo` (set up + segment a real volume) and `make test`.
# Both create or reuse .venv and install idempotently (a stamp tracks pyproject.toml).
PY      ?= python3
VENV    ?= .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.medseg-installed
DEMO_OUT ?= demo_out

.PHONY: setup chromium demo test test-fast lint format bench clean

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

# headless Chromium for the viewer's browser test (Debian package; skipped where it cannot be had)
chromium:
	@command -v chromium >/dev/null 2>&1 || { command -v apt-get >/dev/null 2>&1 \
		&& apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; } \
		|| echo "chromium not installed: the browser test will be skipped"

test: setup chromium
	$(BIN)/python -m pytest -m "not gpu" $(PYTEST_ARGS)

test-fast: setup
	$(BIN)/python -m pytest -m "not slow and not gpu and not browser and not load" $(PYTEST_ARGS)

lint: setup
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

format: setup
	$(BIN)/ruff format . && $(BIN)/ruff check --fix .

# every benchmark, one after another (run them on an otherwise idle machine; tens of minutes)
bench: setup
	for b in litemedsam sliding_window kernels her_seg sam_family viewer restoration; do \
		$(BIN)/python -m bench.$$b || exit 1; done

clean:
	rm -rf $(DEMO_OUT) build *.egg-info
