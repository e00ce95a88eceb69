# Two commands for a fresh machine: `make demo` and `make test`.
# Each creates .venv and installs the project into it on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint dev bench bench-nfc bench-nfc-pay soak clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/mpp demo

dev: $(STAMP)
	$(BIN)/mpp dev

test: lint
	$(BIN)/pytest

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy alipayplus workflows activities api workers sandbox bench hce_device

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
