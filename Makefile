# kerub-tui: `make run` opens the console, `make test` runs the whole suite, `make bench` the benchmarks.
# Each installs what is missing first: system packages (apt-get, as root), .venv, the Python packages.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
BASE_PACKAGES := tools/packages-base.txt
LAB_PACKAGES := tests/lab/packages.txt tools/packages-test.txt
ARGS ?=

.PHONY: run demo test bench system-base system-lab clean

run: $(VENV)/.stamp-run
	$(PY) -m kerub_tui $(ARGS)

# The console on a simulated fleet in its own data dir: a tour without any hosts.
demo: $(VENV)/.stamp-run
	$(PY) -m kerub_tui --demo $(ARGS)

test: system-lab $(VENV)/.stamp-test
	$(PY) -m pytest $(ARGS)

bench: system-lab $(VENV)/.stamp-bench
	@for b in bench/store.py bench/planner.py bench/ssh.py bench/console.py bench/fleet.py; do \
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
$(VENV)/.stamp-run: pyproject.toml $(VENV)/bin/python | system-base
	$(PY) -m pip install -q -e .
	@touch $@

$(VENV)/.stamp-test: pyproject.toml $(VENV)/bin/python
	$(PY) -m pip install -q -e '.[test]'
	@touch $@ $(VENV)/.stamp-run

$(VENV)/.stamp-bench: pyproject.toml $(VENV)/bin/python
	$(PY) -m pip install -q -e '.[test,bench]'
	@touch $@ $(VENV)/.stamp-test $(VENV)/.stamp-run

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis
