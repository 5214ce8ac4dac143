# Every target creates .venv and installs what it needs, so each one works on a fresh clone.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: sandbox test bench lint format clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

sandbox: $(STAMP)
	$(BIN)/idm-upgrade sandbox

# pytest exits 5 when no test ran; that is a failure here, not a pass.
test: $(STAMP)
	$(BIN)/python -m pytest

bench: $(STAMP)
	@if ls bench/*.py >/dev/null 2>&1; then $(BIN)/python -m bench; \
	else echo "make bench: no benchmarks are built yet (see issue 9)"; exit 1; fi

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
