# Two commands for a fresh machine: `make demo` and `make test`.
# Each creates .venv and installs the project into it on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
LOCK := requirements.lock
UV_VERSION := 0.13.9
CHROMIUM := /usr/bin/chromium

.PHONY: demo test lint dev bench bench-nfc bench-nfc-pay soak clean lock postgresql

# Every dependency at the version and hashes in $(LOCK) (runtime + test extras, Python 3.11; pip and
# setuptools too): pip refuses any file whose hash differs. Then the project itself, without deps.
$(STAMP): pyproject.toml $(LOCK)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --require-hashes -r $(LOCK)
	$(BIN)/pip install --quiet --no-deps --no-build-isolation -e .
	touch $(STAMP)

# Rewrite $(LOCK) after changing pyproject.toml's dependencies: pins that still fit are kept;
# `make lock UPGRADE=1` moves every pin to the newest allowed release. uv runs from a throwaway
# venv, never from .venv; commit the lock, and `make` installs from it.
lock:
	tools=$$(mktemp -d) && $(PYTHON) -m venv $$tools && $$tools/bin/pip install --quiet 'uv==$(UV_VERSION)' \
	&& printf 'setuptools>=69\npip>=24\n' | $$tools/bin/uv pip compile pyproject.toml - --extra test \
	   --universal --python-version 3.11 --generate-hashes --custom-compile-command 'make lock' \
	   --output-file $(LOCK) $(if $(UPGRADE),--upgrade); status=$$?; rm -rf $$tools; exit $$status

demo: $(STAMP)
	$(BIN)/mpp demo

dev: $(STAMP)
	$(BIN)/mpp dev

# The browser tests (tests/browser) drive Debian's Chromium, never a browser Playwright downloads
# (`playwright install` fetches a build outside the distribution's signed packages). A fresh machine
# may have no package lists yet: install from the ones there are, else update them and try again.
# sudo only when not root (CI runs as root, where sudo may not exist).
$(CHROMIUM):
	sudo=$$([ "$$(id -u)" -eq 0 ] || echo sudo); \
	export DEBIAN_FRONTEND=noninteractive; \
	$$sudo apt-get install -y --no-install-recommends chromium \
	|| { $$sudo apt-get update && $$sudo apt-get install -y --no-install-recommends chromium; }

# The tests start PostgreSQL servers of their own (tests/postgres.py) from Debian's postgresql package:
# the same server production runs, no download beyond the distribution's signed packages.
postgresql:
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || { \
	sudo=$$([ "$$(id -u)" -eq 0 ] || echo sudo); \
	export DEBIAN_FRONTEND=noninteractive; \
	$$sudo apt-get install -y --no-install-recommends postgresql \
	|| { $$sudo apt-get update && $$sudo apt-get install -y --no-install-recommends postgresql; }; }

# Everything on SQLite (the persistence tests in tests/wallet and the production topology on PostgreSQL
# too), then the API tests and the end-to-end demo again with the records on PostgreSQL.
test: lint $(CHROMIUM) postgresql
	$(BIN)/pytest
	$(BIN)/pytest --database=postgresql tests/api tests/e2e/test_demo_stack.py

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy alipayplus wallet workflows activities api workers devstack sandbox bench hce_device
	$(BIN)/lint-imports

bench: $(STAMP)
	$(BIN)/python -m bench.easy_pay

bench-nfc: $(STAMP)
	$(BIN)/python -m bench.nfc_activation

bench-nfc-pay: $(STAMP)
	$(BIN)/python -m bench.nfc_payments

soak: $(STAMP)
	$(BIN)/python -m bench.soak

clean:
	rm -rf $(VENV) var
