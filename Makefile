# timbre: `make demo` (set up, then run the main job) and `make test` (set up, then the test suite).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DEBIAN_PACKAGES := libfluidsynth3 fluid-soundfont-gm musescore-general-soundfont-small opl3-soundfont chromium timgm6mb-soundfont
OUT ?= out
# What ruff lints and formats; mypy checks the package (its files are set in pyproject.toml).
CHECKED := timbre tests benchmarks examples

.PHONY: all install system-packages demo check test test-fast benchmarks clean

all: test

# FluidSynth renders the training notes and reference audio; installed when running as root.
system-packages:
	@missing=""; for package in $(DEBIAN_PACKAGES); do \
		dpkg -s $$package >/dev/null 2>&1 || missing="$$missing $$package"; \
	done; \
	if [ -n "$$missing" ]; then \
		if [ "$$(id -u)" = 0 ]; then \
			echo "installing Debian packages:$$missing"; \
			apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
		else \
			echo "missing Debian packages:$$missing (run: sudo apt-get install --no-install-recommends$$missing)"; exit 1; \
		fi; \
	fi

$(STAMP): pyproject.toml setup.py timbre/generation/fastgen.c
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $(STAMP)

install: system-packages $(STAMP)

demo: install
	$(VENV)/bin/timbre demo --out $(OUT)

# Lint, format and type checks: fast, so they run before every test run.
check: install
	$(VENV)/bin/ruff check $(CHECKED)
	$(VENV)/bin/ruff format --check $(CHECKED)
	$(VENV)/bin/mypy

# Two pytest workers (pytest-xdist): each test runs on one torch thread (tests/conftest.py), so a
# single process leaves the second core of a 2-core CI machine idle. --dist loadscope keeps each
# module on one worker, so its module-scoped fixtures are built once. TEST_WORKERS=0 runs serially.
TEST_WORKERS ?= 2

test: install check
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadscope

test-fast: install
	$(PY) -m pytest -q -m "not slow"

benchmarks: install
	$(PY) benchmarks/decode_speed.py
	$(PY) benchmarks/parallel_speed.py

clean:
	rm -rf $(VENV) $(OUT) .pytest_cache .mypy_cache .ruff_cache
