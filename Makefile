# zMesh developer entry points.  `make run` and `make test` work from a bare machine.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

# Find a CPython >= 3.12: PATH first, then pyenv's installs (not selected by default here).
PYTHON ?= $(shell for p in python3.14 python3.13 python3.12 python3 \
	$$(ls -d $${PYENV_ROOT:-$$HOME/.pyenv}/versions/3.1[2-9]*/bin/python3 2>/dev/null | sort -rV); do \
	  if command -v $$p >/dev/null 2>&1 && $$p -c 'import sys; sys.exit(sys.version_info < (3, 12))' 2>/dev/null; then \
	    command -v $$p; break; fi; done)

SYSDEPS := $(VENV)/.sysdeps

.PHONY: help venv sysdeps run demo test lint typecheck contracts pytest bench vectors clean
.PHONY: web

help:  ## list the targets
	@grep -E '^[a-z]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

$(STAMP): pyproject.toml
	@if [ -z "$(PYTHON)" ]; then \
	  echo "error: zMesh needs CPython >= 3.12 and none was found on PATH or under pyenv." >&2; \
	  echo "       Install one, or run: make PYTHON=/path/to/python3.12 ..." >&2; exit 1; fi
	@echo "Creating $(VENV) with $(PYTHON)"
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	@touch $(STAMP)

venv: $(STAMP)  ## create the virtualenv and install zmesh with its test extras

# System tools the tests drive: curl (SOCKS5 tests), Debian's chromium (browser tests),
# Debian's firefox-esr (the push service's Firefox test),
# node and npm (the Pyodide bundle and the core tests in Pyodide).  Installed only when missing.
$(SYSDEPS): $(STAMP)
	@missing=""; \
	command -v curl >/dev/null 2>&1 || missing="$$missing curl"; \
	[ -x /usr/bin/chromium ] || missing="$$missing chromium"; \
	[ -x /usr/bin/firefox-esr ] || missing="$$missing firefox-esr"; \
	command -v node >/dev/null 2>&1 || missing="$$missing nodejs"; \
	command -v npm >/dev/null 2>&1 || missing="$$missing npm"; \
	if [ -n "$$missing" ]; then \
	  echo "Installing system packages:$$missing"; \
	  if [ "$$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi; \
	  $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq $$missing; \
	fi
	@touch $(SYSDEPS)

sysdeps: $(SYSDEPS)  ## install missing system tools (curl, chromium, firefox-esr, node, npm)

run: $(SYSDEPS) web  ## run the main job: a local mesh (4 relays, an exit, a SOCKS5 proxy, the join page)
	$(VENV)/bin/zmesh up

demo: $(STAMP)  ## an in-process simulated mesh with a verified 5 MB transfer
	$(VENV)/bin/zmesh demo

lint: $(STAMP)  ## ruff
	$(VENV)/bin/ruff check zmesh tests bench scripts
	$(VENV)/bin/ruff format --check zmesh
	$(VENV)/bin/ruff check build_wasm.py hatch_build.py

typecheck: $(STAMP)  ## mypy --strict
	$(VENV)/bin/mypy --strict zmesh

contracts: $(STAMP)  ## import-linter: the sans-I/O and layering contracts
	$(VENV)/bin/lint-imports

# The browser node's files (needs Node.js and npm): Pyodide, the zmesh wheel and its lock,
# the JS bundles, and the pinned wheels the Pyodide test run unpacks (build/pyodide-wheels).
web: $(SYSDEPS)  ## build web/dist (Pyodide + zmesh wheel + crypto bundle) and the Pyodide test wheels
	$(PY) build_wasm.py --test-wheels

pytest: $(SYSDEPS) web  ## the test suite (parallel)
	$(PY) -bb -m pytest -n auto

test: lint typecheck contracts pytest  ## everything CI runs

bench: $(SYSDEPS) web  ## the benchmarks, each with a same-run baseline and ratio (vs_tor installs tor)
	$(PY) bench/setup_hop.py
	$(PY) bench/cell_forward.py
	$(PY) bench/attacks.py
	$(PY) bench/signing.py
	$(PY) bench/stream_reassembly.py
	$(PY) bench/dial_on_demand.py
	$(PY) bench/legs.py
	$(PY) bench/heal.py
	$(PY) bench/heal_sim.py
	$(PY) bench/dht_puzzle.py
	$(PY) bench/dht_lookup.py
	$(PY) bench/webrtc_raw.py
	$(PY) bench/vs_tor.py --install
	$(PY) bench/browser.py

vectors: $(STAMP)  ## regenerate tests/vectors from the fixed seed
	$(PY) scripts/gen_vectors.py

clean:  ## remove the venv, caches, the browser bundle and build outputs
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis web/dist build
