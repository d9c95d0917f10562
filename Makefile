# kerub-tui: `make run` opens the console, `make test` runs the whole suite, `make check` the lint and
# type gates (ruff, mypy), `make bench` the benchmarks.
# Each installs what is missing first: system packages (apt-get, as root), .venv, the Python packages
# at the exact versions of constraints.txt.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
BASE_PACKAGES := tools/packages-base.txt
LAB_PACKAGES := tests/lab/packages.txt tools/packages-test.txt
CONSTRAINTS := constraints.txt
PIP_INSTALL := $(PY) -m pip install -q -c $(CONSTRAINTS)
ARGS ?=

.PHONY: run demo test check bench system-base system-lab clean

run: $(VENV)/.stamp-run
	$(PY) -m kerub_tui $(ARGS)

# The console on a simulated fleet in its own data dir: a tour without any hosts.
demo: $(VENV)/.stamp-run
	$(PY) -m kerub_tui --demo $(ARGS)

# The suite on every core (pytest-xdist): a test file stays on one worker, so its module fixtures are
# set up once; each worker that needs the lab takes a lab slot of its own (tests/lab). TEST_WORKERS=0
# runs it in one process. One worker more than the cores: much of the suite waits on processes, SSH and
# guests (with a worker per core the cores were 85% busy); on 2 cores 3 workers took 12.4 min, 2 took 15.2.
TEST_WORKERS ?= $(shell echo $$(( $$(nproc) + 1 )))
test: system-lab $(VENV)/.stamp-test
	$(PY) -m pytest -n $(TEST_WORKERS) --dist loadfile $(ARGS)

# The gates CI runs before the tests: lint (ruff, rule set in pyproject.toml) and types (mypy, strict on
# core/ and planner/). ARGS go to neither: run `$(VENV)/bin/ruff check --fix` yourself to apply fixes.
check: $(VENV)/.stamp-check
	$(VENV)/bin/ruff check kerub_tui tests bench
	$(VENV)/bin/mypy

bench: system-lab $(VENV)/.stamp-bench
	@for b in bench/store.py bench/planner.py bench/ssh.py bench/console.py bench/fleet.py bench/images.py bench/cli.py bench/history.py; do \
		if [ -f $$b ]; then echo "== $$b"; $(PY) $$b || exit $$?; fi; \
	done

system-base:
	@sh tools/ensure-system-packages $(BASE_PACKAGES)

system-lab:
	@sh tools/ensure-system-packages $(BASE_PACKAGES) $(wildcard $(LAB_PACKAGES))

$(VENV)/bin/python:
	@$(MAKE) --no-print-directory system-base
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

# Re-install only when the project's metadata changed (the package itself is installed editable).
$(VENV)/.stamp-run: pyproject.toml $(CONSTRAINTS) $(VENV)/bin/python | system-base
	$(PIP_INSTALL) -e .
	@touch $@

$(VENV)/.stamp-test: pyproject.toml $(CONSTRAINTS) $(VENV)/bin/python
	$(PIP_INSTALL) -e '.[test]'
	@touch $@ $(VENV)/.stamp-run

$(VENV)/.stamp-check: pyproject.toml $(CONSTRAINTS) $(VENV)/bin/python
	$(PIP_INSTALL) -e '.[test,check]'
	@touch $@ $(VENV)/.stamp-test $(VENV)/.stamp-run

$(VENV)/.stamp-bench: pyproject.toml $(CONSTRAINTS) $(VENV)/bin/python
	$(PIP_INSTALL) -e '.[test,bench]'
	@touch $@ $(VENV)/.stamp-test $(VENV)/.stamp-run

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis
