# The two commands of the README: `make serve` and `make test`. Everything else is set-up they share.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
INSTALLED := $(VENV)/.installed
NPM_DIRS := $(wildcard web/package.json tests/js/package.json)
NPM_STAMPS := $(NPM_DIRS:package.json=node_modules/.installed)

.PHONY: setup serve test bench screenshots

setup: $(INSTALLED) $(NPM_STAMPS)

$(INSTALLED): pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "Python 3.11+ is needed, found " + sys.version.split()[0]'
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $@

%/node_modules/.installed: %/package.json %/package-lock.json
	@command -v npm >/dev/null || { echo "npm is needed for the browser packages (apt-get install -y nodejs npm)"; exit 1; }
	npm ci --prefix $* --no-audit --no-fund --loglevel=error
	touch $@

# The server with its embedded defaults: SQLite in ./data, the simulated cluster, demo logins.
serve: setup
	JOBMON_DEMO=$${JOBMON_DEMO:-true} $(PY) -m server serve --host $${HOST:-127.0.0.1} --port $${PORT:-8000}

# The whole test suite (PostgreSQL, Redis and Chromium tests skip when those are missing, unless CI=true).
test: setup
	$(PY) -m pytest

# The README's screenshots (docs/*.png), taken by the browser tests.
screenshots: setup
	JOBMON_SCREENSHOTS=docs $(PY) -m pytest tests/test_browser.py

# Benchmarks print their figures; run on demand, e.g. `make bench BENCH=core`.
bench: setup
	$(PY) tests/bench/bench_$${BENCH:-core}.py
