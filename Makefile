# Two commands do everything on a fresh machine:
#   make demo   create .venv, install, run the end-to-end demo on an embedded workspace
#   make test   create .venv, install, run lint (ruff, mypy) + the whole test suite
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
TORCH  ?= torch==2.13.0
TORCH_INDEX ?=

.PHONY: install demo test lint format clean browser

$(STAMP): pyproject.toml trainer/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# torch first, pinned, so that the trainer's `torch>=2.6` installs nothing more. Where it comes from is
	# up to TORCH_INDEX (README, "Two commands"): empty = pip's own index (PyPI: a CUDA build on Linux x86_64,
	# a CPU/MPS build on macOS); https://download.pytorch.org/whl/cpu = the small CPU-only build.
	$(BIN)/pip install -q $(TORCH) $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
	$(BIN)/pip install -q -e '.[dev,hf,gemini]' -e './trainer[tensorboard,lora]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	PATH="$(CURDIR)/$(BIN):$$PATH" bash examples/demo.sh

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

# Browser tests drive Debian's Chromium through Playwright (its own browser download cannot work offline).
# As root, install it when it is missing; otherwise those tests skip and say why.
browser:
	@command -v chromium >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) ; } || \
	  echo "chromium could not be installed: the browser tests will skip"

test: lint browser
	$(BIN)/pytest

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean:
	rm -rf $(VENV) demo-out .pytest_cache .ruff_cache test-output
