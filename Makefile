# Set-up and entry points. `make reproduce` and `make test` each work on a fresh machine with Python 3.11.
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
OUT ?= results

.PHONY: reproduce test install lint clean

# torch first, from the pinned CPU wheel, so that pip never resolves torch>=2.2 to a multi-GB CUDA build
$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e ".[dev]"
	touch $@

install: $(BIN)/.installed

reproduce: install
	$(BIN)/memaware reproduce --out $(OUT)

lint: install
	$(BIN)/ruff check src tests benchmarks

test: lint
	$(BIN)/pytest -q

clean:
	rm -rf $(VENV) $(OUT)
