# Every target creates .venv and installs what it needs, so each one works on a fresh clone.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# The sandbox needs only the bot and its stand-ins; the full install (the test extra) satisfies it too.
SANDBOX_STAMP := $(VENV)/.installed-sandbox

.PHONY: sandbox test bench lint format clean vcsim reliability

# govmomi's vCenter simulator for the tests, from Debian's packages (never fetched from the network).
GOPATH_DEBIAN := /usr/share/gocode
GOVMOMI := $(GOPATH_DEBIAN)/src/github.com/vmware/govmomi
VCSIM := tests/vcsim/vcsim

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP) $(SANDBOX_STAMP)

$(SANDBOX_STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[sandbox]'
	touch $(SANDBOX_STAMP)

sandbox: $(SANDBOX_STAMP)
	$(BIN)/idm-upgrade sandbox

vcsim: $(VCSIM)

$(VCSIM): tests/vcsim/main.go
	@if ! command -v go >/dev/null 2>&1 || [ ! -d $(GOVMOMI)/simulator ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    apt-get update -qq && apt-get install -y -qq golang-go golang-github-vmware-govmomi-dev; \
	  else \
	    echo "make vcsim: the vCenter simulator needs Go and govmomi's sources; run as root:" >&2; \
	    echo "  apt-get install -y golang-go golang-github-vmware-govmomi-dev" >&2; exit 1; fi; fi
	cd tests/vcsim && GOPATH=$(GOPATH_DEBIAN) GO111MODULE=off GOFLAGS= \
	  GOCACHE="$${GOCACHE:-/tmp/idm-upgrade-go-cache}" go build -o vcsim .

# pytest exits 5 when no test ran; that is a failure here, not a pass.
test: $(STAMP) vcsim
	$(BIN)/python -m pytest

# The whole reliability suite: 30 random kill points through Slack and every other category (< 20 min).
reliability: $(STAMP) vcsim
	RELIABILITY_KILL_POINTS=30 $(BIN)/python -m pytest tests/reliability -v
	$(BIN)/python -m tests.reliability.report

bench: $(STAMP)
	$(BIN)/python -m bench

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
	rm -f $(VCSIM)
