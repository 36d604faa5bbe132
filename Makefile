# clickwire — two commands on a fresh machine: `make run` and `make test`.
# Every target sets up what it needs first (virtualenv, Python dependencies, Kafka jars).
SHELL := /bin/bash
.SHELLFLAGS := -eo pipefail -c
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell sha256sum pyproject.toml | cut -c1-12)
TEST_ENV := CLICKWIRE_HOME=$(CURDIR)/.clickwire/test CLICKWIRE_STACK_KAFKA_PORT=19092
PYTEST_ARGS ?=

.PHONY: setup system-tools run up test test-unit lint bench down status clean

SYSTEM_TOOLS := chromium wrk nginx

NATIVE_SOURCES := clickwire/avrobin.py clickwire/recordbatch.py services/redirector/rawclick.py  # as clickwire/native.py SOURCES
NATIVE := clickwire/native.stamp

setup: $(STAMP) $(NATIVE) system-tools
	@$(BIN)/clickwire stack fetch

# The click encoder compiled with mypyc (tools/build_native.py; plain Python when there is no C
# compiler). Rebuilt whenever one of its sources changes.
$(NATIVE): $(STAMP) $(NATIVE_SOURCES) tools/build_native.py clickwire/native.py
	@$(BIN)/python tools/build_native.py

# Debian packages the suite and the benchmarks drive: chromium (dashboard e2e test), wrk and nginx
# (redirect benchmark). Installed only when missing; needs root or sudo.
system-tools:
	@missing=""; for t in $(SYSTEM_TOOLS); do command -v $$t >/dev/null || missing="$$missing $$t"; done; \
	if [ -n "$$missing" ]; then \
		echo "==> installing Debian packages:$$missing"; \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing >/dev/null \
			|| { echo "could not install$$missing with apt-get"; exit 1; }; \
	fi

$(STAMP): pyproject.toml
	@echo "==> setting up the virtualenv in $(VENV) and installing dependencies (first run: a few minutes)"
	@command -v java >/dev/null || { echo "java not found: install a JDK 17+ (or use docker-compose.yml)"; exit 1; }
	@command -v mvn >/dev/null || { echo "mvn not found: install Maven (or use docker-compose.yml)"; exit 1; }
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@$(BIN)/python -m pip install --disable-pip-version-check -q --upgrade pip
	@$(BIN)/python -m pip install --disable-pip-version-check --progress-bar on -e '.[test,lint]' \
		| { grep --line-buffered -E '^(Collecting|Successfully)' || true; }
	@$(BIN)/python tools/build_native.py --clean  # compiled anew by the $(NATIVE) rule below
	@$(BIN)/python -c "import clickwire.cli" || { echo "install failed"; exit 1; }
	@rm -f $(VENV)/.installed-* && touch $(STAMP)

## run: the stack, every service and the live demo (Ctrl-C stops it; the broker stays up for the next run)
DEMO_ARGS ?=
run: setup
	@$(BIN)/clickwire demo $(DEMO_ARGS)
	@$(BIN)/clickwire stack status

## up: the stack and every service in the background, no demo
up: setup
	@$(BIN)/clickwire up

status:
	@$(BIN)/clickwire stack status

down:
	@$(BIN)/clickwire stack down

## test: the whole suite against the real broker and ClickHouse engine; stops what it started
# Test homes (brokers and services the tests start) live under .clickwire/test, so whatever happens
# to pytest, `stack down --everywhere` afterwards leaves no process of ours running.
test: setup
	@status=0; $(TEST_ENV) $(BIN)/python -m pytest --basetemp=$(CURDIR)/.clickwire/test/tmp $(PYTEST_ARGS) \
		|| status=$$?; $(TEST_ENV) $(BIN)/clickwire stack down --everywhere >/dev/null 2>&1 || true; exit $$status

test-unit: setup
	@$(BIN)/python -m pytest tests/unit $(PYTEST_ARGS)

lint: setup
	@$(BIN)/ruff check clickwire services tests bench tools
	@$(BIN)/mypy
	@$(BIN)/mypy tools

bench: setup
	@$(BIN)/python -m bench $(BENCH)

clean: down
	rm -rf .clickwire
	$(BIN)/python tools/build_native.py --clean
