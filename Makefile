# The two commands: `make run` (set up and start a dev server) and `make test` (the whole suite).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 8000
NODE_DIR := tests/protocol/node
WEB_DIR := server/web

.PHONY: run test check lint format pytest install node-deps system-deps bench clean web web-check deps-bounds

$(BIN)/python:
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "Tandem needs Python 3.11+"'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# Reinstall only when the project metadata or the pins change.
$(VENV)/.installed: pyproject.toml constraints.txt | $(BIN)/python
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev]'
	@touch $@

install: $(VENV)/.installed

$(NODE_DIR)/node_modules/.installed: $(NODE_DIR)/package.json $(NODE_DIR)/package-lock.json
	cd $(NODE_DIR) && npm ci --no-audit --no-fund --loglevel=error
	@touch $@

node-deps: $(NODE_DIR)/node_modules/.installed

$(WEB_DIR)/node_modules/.installed: $(WEB_DIR)/package.json $(WEB_DIR)/package-lock.json
	cd $(WEB_DIR) && npm ci --no-audit --no-fund --loglevel=error
	@touch $@

# The browser bundles in server/static are built from server/web and committed: `make web`
# rebuilds them; `make web-check` runs the provider's tests and checks they match a fresh build.
web: $(WEB_DIR)/node_modules/.installed
	cd $(WEB_DIR) && npm run build

web-check: $(WEB_DIR)/node_modules/.installed
	cd $(WEB_DIR) && npm test && npm run check

# The tests run the repository's nginx config with the machine's nginx (Debian: nginx-light)
# and the browser tests Debian's Chromium.
system-deps:
	@command -v nginx >/dev/null 2>&1 || test -x /usr/sbin/nginx || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    export DEBIAN_FRONTEND=noninteractive; \
	    apt-get install -y -q --no-install-recommends nginx-light >/dev/null 2>&1 || \
	    { apt-get update -q >/dev/null && apt-get install -y -q --no-install-recommends nginx-light >/dev/null; }; \
	  else echo "the tests need nginx: apt-get install nginx-light" >&2; exit 1; fi; }
	@# The browser tests drive Debian's Chromium with Playwright (which never downloads one).
	@test -x /usr/bin/chromium || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    export DEBIAN_FRONTEND=noninteractive; \
	    apt-get install -y -q --no-install-recommends chromium >/dev/null 2>&1 || \
	    { apt-get update -q >/dev/null && apt-get install -y -q --no-install-recommends chromium >/dev/null; }; \
	  else echo "the browser tests need Chromium: apt-get install chromium" >&2; exit 1; fi; }

run: install
	$(BIN)/tandem migrate
	@echo
	@echo "  Tandem is starting on http://$(HOST):$(PORT)  (OpenAPI docs: http://$(HOST):$(PORT)/docs)"
	@echo "  Get a development token:   $(BIN)/tandem token --sub alice --channel 'room:*'"
	@echo "  Publish from a shell:       $(BIN)/tandem publish room:lobby chat.message '{\"text\": \"hi\"}'"
	@echo
	$(BIN)/tandem serve --host $(HOST) --port $(PORT)

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

pytest: install node-deps system-deps
	$(BIN)/pytest $(PYTEST_ARGS)

test: lint web-check pytest

# The lowest and the highest releases pyproject.toml admits, each in a throwaway venv (needs
# PyPI). pytest runs the same script (tests/deps), so `make test` covers it.
deps-bounds: install
	$(BIN)/python .ci/deps_bounds.py

bench: install
	$(BIN)/tandem bench

clean:
	rm -rf $(VENV) $(NODE_DIR)/node_modules $(WEB_DIR)/node_modules .mypy_cache .pytest_cache .ruff_cache tandem.db tandem.db.migrate-lock
