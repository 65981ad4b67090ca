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

.PHONY: serve test lint typecheck pytest bench demo-media system-deps venv-deps web browser-deps clean

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

bench: system-deps $(VENV)/.test-installed
	$(PY) bench/cipher.py
	$(PY) bench/protect.py
	$(PY) bench/sample_aes.py

demo-media: system-deps $(VENV)/.runtime-installed
	$(VENV)/bin/origin media demo --out media/demo

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache
