# Shipshape — every day-to-day command. `make` (or `make help`) lists them.
#
# Only Python 3.11+ is needed on the host: uv is used from PATH, or installed from PyPI
# into .tools/ on first use. Docker is needed only for the container targets.

SHELL := /bin/bash
.SHELLFLAGS := -o errexit -o nounset -o pipefail -c
.DEFAULT_GOAL := help
MAKEFLAGS += --no-print-directory

PYTHON ?= python3
UV ?= $(or $(shell command -v uv 2>/dev/null),$(CURDIR)/.tools/bin/uv)
RUN := $(UV) run --frozen
HOST ?= 127.0.0.1
PORT ?= 8000
PYTEST_ARGS ?=

.PHONY: help
help: ## List the targets
	@awk 'BEGIN {FS = ":.*## "; printf "Usage: make TARGET\n\n"} \
	     /^[a-zA-Z0-9_-]+:.*## / {printf "  \033[36m%-18s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

# --- local development (no Docker) ---------------------------------------------------

$(CURDIR)/.tools/bin/uv:
	@echo "uv not found on PATH: installing it from PyPI into .tools/"
	$(PYTHON) -m venv .tools
	.tools/bin/pip install --quiet uv

.venv/.synced: pyproject.toml uv.lock | $(UV)
	$(UV) sync --frozen
	@touch $@

.PHONY: venv
venv: .venv/.synced ## Create .venv with the locked dependencies (uv sync)

.PHONY: run
run: venv ## Run the service on 127.0.0.1:8000 with SQLite (no Docker); RELOAD=1 for live reload
	$(RUN) python -m app migrate
	$(RUN) python -m app create-superuser
	$(RUN) python -m app serve --host $(HOST) --port $(PORT) $(if $(RELOAD),--reload,)

.PHONY: test
test: venv ## Run every test tier (Docker tiers skip with a reason when Docker is missing)
	$(RUN) pytest $(PYTEST_ARGS)

.PHONY: test-fast
test-fast: venv ## Run only the fast tier (no Docker)
	$(RUN) pytest -m "not integration and not container and not stack" $(PYTEST_ARGS)

.PHONY: lint
lint: venv ## Lint and type-check: ruff, ruff format --check, mypy
	$(RUN) ruff check .
	$(RUN) ruff format --check .
	$(RUN) mypy

.PHONY: format
format: venv ## Format the code and apply safe lint fixes
	$(RUN) ruff format .
	$(RUN) ruff check --fix .

.PHONY: lock-deps
lock-deps: | $(UV) ## Re-resolve uv.lock and export requirements.lock.txt (what images install)
	$(UV) lock
	$(UV) export --frozen --no-dev --no-hashes --no-emit-project --no-header \
	    --output-file requirements.lock.txt >/dev/null
	@sed -i '1i # Exported from uv.lock by `make lock-deps`: do not edit by hand.' requirements.lock.txt
	@echo "requirements.lock.txt: $$(grep -c '==' requirements.lock.txt) pinned packages"

.PHONY: docs
docs: venv ## Regenerate the README's configuration table from the settings class
	$(RUN) python -m app.core.config_docs --write

.PHONY: check-config
check-config: venv ## Validate the environment and print the resolved (redacted) configuration
	$(RUN) python -m app check-config

.PHONY: env
env: ## Create .env.dev, .env.staging and .env.prod from the examples (never overwrites)
	@for name in dev staging prod; do \
	    if [ -e .env.$$name ]; then echo ".env.$$name exists: kept"; \
	    else cp .env.$$name.example .env.$$name && echo ".env.$$name created: edit it"; fi; \
	done

.PHONY: clean
clean: ## Remove caches and the local SQLite database (keeps .venv)
	rm -rf .pytest_cache .mypy_cache .ruff_cache data/
	find . -name __pycache__ -type d -prune -not -path './.venv/*' -exec rm -rf {} +
