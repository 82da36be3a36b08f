# Set-up and the two everyday jobs. Every target creates .venv on first use, so each works on a fresh clone.
VENV    ?= .venv
PYTHON  ?= python3
PY      := $(VENV)/bin/python
STAMP   := $(VENV)/.edgekit-installed
# torch goes in first, pinned, from the CPU build: a resolver left to itself picks a multi-GB CUDA wheel.
# Elsewhere: make TORCH_PIP_ARGS="--index-url https://download.pytorch.org/whl/cpu" test
TORCH_VERSION  ?= 2.13.0
TORCH_PIP_ARGS ?=
PYTEST_ARGS    ?=
# One pytest worker per core; a test file stays on one worker (its module fixtures are made once), and the
# session's shared exports are made once across workers (tests/conftest.py). TEST_WORKERS=0 runs in one process.
TEST_WORKERS   ?= auto

.PHONY: setup export test bench docs clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet torch==$(TORCH_VERSION) $(TORCH_PIP_ARGS)
	$(PY) -m pip install --quiet -e '.[test,docs,executorch]'
	@# Debian's kotlinc compiles the app snippets in tests/test_snippets.py; without root or apt-get, that test skips
	@command -v kotlinc >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends kotlin \
		>/dev/null; } || echo "make setup: kotlinc not installed (apt-get install kotlin); the Kotlin compile test will skip"
	touch $(STAMP)

export: $(STAMP)
	$(VENV)/bin/edgekit export mobilenet_v2 --int8

test: $(STAMP)
	$(PY) -m pytest -n $(TEST_WORKERS) --dist loadfile $(PYTEST_ARGS)

# The measurement scripts; each writes benchmarks/results/<name>.md and .json (about 15 minutes in all).
bench: $(STAMP)
	$(PY) benchmarks/tflite_import_accuracy.py
	$(PY) benchmarks/export_benchmark.py
	$(PY) benchmarks/int8_benchmark.py
	$(PY) benchmarks/host_latency.py
	$(PY) benchmarks/cpu_true_int8.py
	$(PY) benchmarks/arm_emulation.py

# The documentation site (docs/, mkdocs.yml) into site/; --strict fails on a broken link or a page left out.
docs: $(STAMP)
	$(PY) -m mkdocs build --strict --site-dir site

clean:
	rm -rf $(VENV) exports build site *.egg-info
