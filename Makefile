# hftraining: every target sets up the .venv first when needed.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
# torch to install when none is importable: the CPU build on disk here; GPU users set e.g.
# TORCH_SPEC="torch --index-url https://download.pytorch.org/whl/cu128" (see README).
TORCH_SPEC ?=
PYTEST_ARGS ?=

.PHONY: setup setup-toto demo test lint bench tensorboard clean

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@if [ -n "$(TORCH_SPEC)" ]; then \
	  $(PIP) install -q $(TORCH_SPEC); \
	elif ! $(PY) -c "import torch" 2>/dev/null; then \
	  if command -v nvidia-smi >/dev/null 2>&1; then $(PIP) install -q torch; \
	  else $(PIP) install -q torch==2.13.0 || $(PIP) install -q torch --index-url https://download.pytorch.org/whl/cpu; fi; \
	fi
	$(PIP) install -q -e '.[dev]'
	touch $@

setup: $(VENV)/.installed

# Toto (toto-ts 0.2.0) pins torch 2.7 and many exact versions; its inference path runs on current
# torch, so install it without its dependencies plus what that path imports (the `toto` extra).
setup-toto: $(VENV)/.toto-installed

$(VENV)/.toto-installed: $(VENV)/.installed
	$(PIP) install -q -e '.[dev,toto]'
	$(PIP) install -q --no-deps toto-ts==0.2.0
	touch $@

demo: setup
	$(VENV)/bin/hftrain single --stock DEMO --source synthetic --config configs/default.yaml \
	  --set data.synthetic_bars=5000 --set data.synthetic_edge=2 --set data.forecast_backend=statistical

test: setup-toto
	$(PY) -m pytest -q $(PYTEST_ARGS)

lint: setup
	$(PY) -m ruff check hftraining tests scripts

bench: setup
	$(PY) scripts/bench_train.py
	$(PY) scripts/bench_eval.py
	$(PY) scripts/bench_forecasts.py

tensorboard: setup
	$(VENV)/bin/tensorboard --logdir runs/tensorboard

clean:
	rm -rf runs/bench .pytest_cache
