# The two commands a newcomer needs: `make run` and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: install run test migrate lint format lock clean docs

$(STAMP): requirements.lock shared/pyproject.toml services/crm-service/pyproject.toml services/cem-service/pyproject.toml
	@test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade "pip>=24"
	$(BIN)/python -m pip install -q -r requirements.lock
	$(BIN)/python -m pip install -q --no-deps -e shared -e services/crm-service -e services/cem-service
	@touch $(STAMP)

install: $(STAMP) ## venv + pinned dependencies + the three local packages

run: install ## broker + embedded PostgreSQL + both services; prints the URLs and a dev API key
	$(BIN)/python scripts/dev_run.py

test: install ## every test, against real PostgreSQL and a real broker
	bash scripts/ensure_test_deps.sh
	$(BIN)/python -m pytest $(PYTEST_ARGS)

.PHONY: demo
demo: install ## fill a running `make run` stack with ~500 customers and 90 days of history (again: adds nothing)
	$(BIN)/crm seed-demo $(DEMO_ARGS)

.PHONY: bench
bench: install ## SPEC §6 targets next to their baselines, one table + var/bench/results.json (not part of `make test`)
	$(BIN)/python -m scripts.bench

migrate: install ## apply both services' migrations to the databases in CRM_/CEM_DATABASE_URL
	$(BIN)/crm migrate
	$(BIN)/cem migrate

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports pyproject.toml --no-cache

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

lock: ## re-pin requirements.lock from requirements.in, and each image's services/<name>/requirements.lock at the same versions
	$(BIN)/python -m pip install -q uv
	$(BIN)/uv pip compile requirements.in --python-version 3.11 -o requirements.lock --no-header
	@# an image's lock: what the kit and that service declare (read from their pyproject files), and what that needs
	for s in crm-service cem-service; do \
	  printf './shared\n./services/%s\n' $$s | $(BIN)/uv pip compile - --python-version 3.11 -c requirements.lock \
	    --no-emit-package cxkit --no-emit-package $$s -o services/$$s/requirements.lock --no-header; \
	done

docs: install ## regenerate README.md's configuration table from the settings classes
	$(BIN)/python scripts/settings_table.py --write

clean:
	rm -rf $(VENV) var
