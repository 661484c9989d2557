# The two commands of the README: `make serve` and `make test`. Everything else is set-up they share.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# Serving needs the package alone (the browser libraries are vendored in web/vendor: no npm);
# the tests also need the [test] extras and the npm packages of tests/js. One stamp for each, the
# test one on top of the serve one, so `make serve` after `make test` installs nothing.
SERVE_INSTALLED := $(VENV)/.installed-serve
TEST_INSTALLED := $(VENV)/.installed-test
TEST_NPM := tests/js/node_modules/.installed

.PHONY: setup serve test bench bench-vs-node screenshots vendor

setup: $(TEST_INSTALLED) $(TEST_NPM)

$(SERVE_INSTALLED): pyproject.toml setup.py
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "Python 3.11+ is needed, found " + sys.version.split()[0]'
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e .
	touch $@

$(TEST_INSTALLED): $(SERVE_INSTALLED)
	$(PY) -m pip install --quiet -e '.[test]'
	touch $@

%/node_modules/.installed: %/package.json %/package-lock.json
	@command -v npm >/dev/null || { echo "npm is needed for the npm packages of $* (apt-get install -y nodejs npm)"; exit 1; }
	npm ci --prefix $* --no-audit --no-fund --loglevel=error
	touch $@

# The server with its embedded defaults: SQLite in ./data, the simulated cluster, demo logins.
serve: $(SERVE_INSTALLED)
	JOBMON_DEMO=$${JOBMON_DEMO:-true} $(PY) -m server serve --host $${HOST:-127.0.0.1} --port $${PORT:-8000}

# The whole test suite (PostgreSQL, Redis and Chromium tests skip when those are missing, unless CI=true).
test: setup
	$(PY) -m pytest

# The README's screenshots (docs/*.png), taken by the browser tests.
screenshots: setup
	JOBMON_SCREENSHOTS=docs $(PY) -m pytest tests/test_browser.py tests/test_browser_pipelines.py

# Benchmarks print their figures; run on demand, e.g. `make bench BENCH=core`.
bench: setup
	$(PY) tests/bench/bench_$${BENCH:-core}.py

# Job Monitor's live delivery side by side with a Node.js socket.io server (socket.io from npm, for this only).
bench-vs-node: setup tests/bench/node/node_modules/.installed
	$(PY) tests/bench/bench_vs_node.py

# The browser libraries in web/vendor, copied again from npm (web/package.json pins their versions).
vendor: web/node_modules/.installed
	web/vendor/update.sh
