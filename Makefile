# The two quick-start commands: `make demo` and `make test`. Each builds .venv on first use.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test venv clean bench-smoke

demo: $(STAMP)
	$(PY) -m lib_pinning demo --out runs/demo

# Two workers, each taking whole test files (module-scoped fixtures are built once): 5 min 30 s in one process
# on 2 cores, about 3 min 20 s in two.
test: $(STAMP)
	$(PY) -m pytest -q -n 2 --dist loadfile

venv: $(STAMP)

# torch/torchvision are pinned as a pair (PyPI's torchvision does not import beside the CPU-only torch file);
# setuptools<81 because k-diffusion's clip-anytorch imports pkg_resources.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip 'setuptools>=77,<81' wheel
	$(PY) -m pip install -q torch==2.14.1 torchvision==0.29.1
	$(PY) -m pip install -q --no-build-isolation -e '.[test]'
	# numba compiles and caches umap-learn's dependencies on their first import (~30 s): once here, not in a test run
	$(PY) -W ignore -c "import umap"
	touch $@

# bench/gpu.sh's steps at tiny sizes on the CPU: the GPU script is proven to run before GPU time is spent on it.
bench-smoke: $(VENV)/.bench
	PYTHON=$(PY) bash bench/gpu.sh --cpu-smoke $$(mktemp -d)

$(VENV)/.bench: $(STAMP)
	$(PY) -m pip install -q --no-build-isolation -e '.[bench]'
	touch $@

clean:
	rm -rf runs .pytest_cache
