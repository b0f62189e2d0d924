# Two commands do everything on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
export TF_CPP_MIN_LOG_LEVEL ?= 2

.PHONY: venv data demo demo-quick test bench clean

$(BIN)/keras-distill: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[test]"
	touch $@

venv: $(BIN)/keras-distill

# Fashion-MNIST from Debian when apt is there (no download at run time).
data:
	@if [ -d /usr/share/datasets/fashion-mnist ]; then :; \
	elif command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
	  apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist >/dev/null; \
	elif command -v sudo >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1; then \
	  sudo apt-get update -qq && sudo apt-get install -y -qq dataset-fashion-mnist >/dev/null; \
	else echo "note: no apt; Fashion-MNIST will come from the Keras cache or a download"; fi

demo: venv data
	$(BIN)/keras-distill

demo-quick: venv data
	$(BIN)/keras-distill --quick

test: venv data
	$(BIN)/python -m pytest -n 2 -q

bench: venv data
	$(BIN)/python bench/kd_vs_scratch.py

clean:
	rm -rf $(VENV) runs .pytest_cache
