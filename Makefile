# Two commands do everything on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
export TF_CPP_MIN_LOG_LEVEL ?= 2

.PHONY: venv data demo demo-quick test test-tf test-jax bench clean

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

# The whole suite on Keras 3's TensorFlow backend, then the backend-neutral
# part (distillers, terms, losses, taps, their docstrings) on JAX.
JAX_TESTS := tests/test_distiller.py tests/test_teacher_cache.py \
	tests/test_features.py tests/test_taps.py tests/test_losses.py \
	tests/test_feature_losses.py tests/test_backends.py tests/test_readme.py \
	tests/test_reliability_fit.py tests/test_reliability_terms.py tests/test_views.py tests/test_views_fit.py \
	tests/test_modern_logit_losses.py tests/test_disk_cache.py \
	keras_distill/terms keras_distill/losses keras_distill/objective.py \
	keras_distill/cache.py keras_distill/disk_cache.py keras_distill/distiller.py keras_distill/core.py \
	keras_distill/feature_distiller.py keras_distill/pairs.py keras_distill/taps.py \
	keras_distill/ensemble.py keras_distill/nan_guard.py keras_distill/views.py keras_distill/view_cache.py keras_distill/_model_io.py \
	keras_distill/_fit_checks.py keras_distill/_probes.py keras_distill/_arrays.py

test: test-tf test-jax

test-tf: venv data
	KERAS_BACKEND=tensorflow $(BIN)/python -m pytest -n 2 --dist worksteal -q

test-jax: venv data
	KERAS_BACKEND=jax $(BIN)/python -m pytest -n 2 --dist worksteal -q $(JAX_TESTS)

bench: venv data
	$(BIN)/python bench/kd_vs_scratch.py

clean:
	rm -rf $(VENV) runs .pytest_cache
