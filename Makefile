# Set-up commands of fresco-v2v. Both create .venv on first use and install what they need.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# The torch build installed when the venv has none. Users with a GPU: `make test TORCH_SPEC="torch --index-url ..."`
# or install torch into .venv yourself first; an installed torch is never replaced.
TORCH_SPEC ?= torch==2.13.0
STAMP := $(VENV)/.fresco-installed

.PHONY: test demo ui lint bench clean-venv

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install $(TORCH_SPEC)
	$(PY) -m pip install -e ".[dev,ui,cluster]"
	touch $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q

demo: $(STAMP)
	$(VENV)/bin/fresco demo

ui: $(STAMP)
	$(VENV)/bin/fresco ui

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks

bench: $(STAMP)
	$(PY) benchmarks/correspondence.py

clean-venv:
	rm -rf $(VENV)
