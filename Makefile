# Two commands do everything on a fresh Debian machine:
#   make serve   -- venv, install, run the origin on http://127.0.0.1:8080 with media/
#   make test    -- venv, install test deps and Debian tools, lint, type-check, run the suite

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
APT    := DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get

HOST   ?= 127.0.0.1
PORT   ?= 8080

.PHONY: serve test lint typecheck pytest bench demo-media system-deps venv-deps web browser-deps clean fuzz bench-deps soak

# python3-venv is a separate package on Debian; install it only when venv is unusable.
venv-deps:
	@$(PYTHON) -c 'import ensurepip, venv' 2>/dev/null || { \
	  $(APT) update -qq && $(APT) install -y -qq python3-venv; }

$(PY): | venv-deps
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

$(VENV)/.runtime-installed: pyproject.toml | $(PY)
	$(PY) -m pip install -q -e .
	touch $@

$(VENV)/.test-installed: pyproject.toml | $(PY)
	$(PY) -m pip install -q -e '.[test]'
	touch $@ $(VENV)/.runtime-installed

# Debian tools the tests use as real clients and probes.
system-deps:
	@missing=""; \
	command -v ffmpeg >/dev/null || missing="$$missing ffmpeg"; \
	command -v strace >/dev/null || missing="$$missing strace"; \
	command -v openssl >/dev/null || missing="$$missing openssl"; \
	command -v curl >/dev/null || missing="$$missing curl"; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  $(APT) update -qq && $(APT) install -y -qq $$missing; \
	fi

# The test player page's npm packages (Shaka Player); Node.js from Debian when missing.
web: web/node_modules/.installed

web/node_modules/.installed: web/package.json web/package-lock.json
	@command -v npm >/dev/null || { $(APT) update -qq && $(APT) install -y -qq nodejs npm; }
	npm ci --prefix web --no-audit --no-fund --loglevel=error
	touch $@

# Real players in real Chromium (tests/test_browser_players.py): Debian's chromium, and
# playwright-core + Shaka Player + hls.js + dash.js from npm (pinned in tests/browser).
# No browser is ever downloaded: playwright-core drives /usr/bin/chromium.
browser-deps: tests/browser/node_modules/.installed
	@[ -x /usr/bin/chromium ] || { \
	  echo "installing Debian packages: chromium"; \
	  $(APT) update -qq && $(APT) install -y -qq chromium; }

tests/browser/node_modules/.installed: tests/browser/package.json tests/browser/package-lock.json
	@command -v npm >/dev/null || { $(APT) update -qq && $(APT) install -y -qq nodejs npm; }
	npm ci --prefix tests/browser --no-audit --no-fund --loglevel=error
	touch $@

serve: $(VENV)/.runtime-installed web
	$(VENV)/bin/origin serve --host $(HOST) --port $(PORT) --media media

lint: $(VENV)/.test-installed
	$(VENV)/bin/ruff check origin tests bench

typecheck: $(VENV)/.test-installed
	$(VENV)/bin/mypy

pytest: system-deps web browser-deps $(VENV)/.test-installed
	$(PY) -m pytest

test: lint typecheck pytest

# Long fuzz runs (atheris) of every parser of outside input: tests/fuzz/, results in
# tests/fuzz/results.json, crashing inputs in tests/fuzz/artifacts/.  The hypothesis
# side of the same targets runs in make test (tests/test_fuzz_parsers.py).
FUZZ_SECONDS ?= 600
FUZZ_JOBS    ?= 2
FUZZ_NAMES   ?=

$(VENV)/.fuzz-installed: pyproject.toml | $(PY)
	$(PY) -m pip install -q -e '.[test,fuzz]'
	touch $@

fuzz: $(VENV)/.fuzz-installed
	$(PY) tests/fuzz/make_corpus.py $(FUZZ_NAMES)
	$(PY) tests/fuzz/run.py --seconds $(FUZZ_SECONDS) --jobs $(FUZZ_JOBS) $(FUZZ_NAMES)

# The benchmark suite (bench/README.md, results in bench/RESULTS.md): wrk and nginx from
# Debian (nginx-light, else nginx; the bench runs its own nginx as the current user on a
# loopback port), matplotlib and py-spy from PyPI (the [bench] extra). ≤ 15 minutes on 2 cores.
bench-deps: system-deps $(VENV)/.bench-installed
	@missing=""; \
	command -v wrk >/dev/null || missing="$$missing wrk"; \
	command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || missing="$$missing nginx"; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  $(APT) update -qq; \
	  for pkg in $$missing; do \
	    if [ "$$pkg" = nginx ]; then \
	      $(APT) install -y -qq nginx-light || $(APT) install -y -qq nginx; \
	    else \
	      $(APT) install -y -qq $$pkg; \
	    fi; \
	  done; \
	fi

$(VENV)/.bench-installed: pyproject.toml | $(PY)
	$(PY) -m pip install -q -e '.[test,bench]'
	touch $@ $(VENV)/.test-installed $(VENV)/.runtime-installed

bench: bench-deps
	$(PY) bench/run.py

# The soak run (bench/soak.py): mixed traffic at ~70 % of measured capacity against
# origin serve --workers 2 on loopback for SOAK_MINUTES; 5xx, 4xx, p50/p99 and the RSS of
# every process every 10 s; bench/results/soak.json and the "Soak" section of RESULTS.md.
SOAK_MINUTES ?= 10

soak: $(VENV)/.bench-installed
	$(PY) bench/soak.py --minutes $(SOAK_MINUTES)

demo-media: system-deps $(VENV)/.runtime-installed
	$(VENV)/bin/origin media demo --out media/demo

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache
