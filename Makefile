# Two commands on a fresh machine:  `make demo` (a real CPU sweep)  and  `make test` (the suite).
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
STAMP   = $(VENV)/.installed-$(shell cat pyproject.toml requirements/base.lock | sha1sum | cut -c1-12)
DEMO_STORAGE ?= sqlite:///regsweep.db
DEMO_NAME    ?= quick-$(shell date +%Y%m%d-%H%M%S)

.PHONY: venv demo test test-fast bench bench-full lint lock clean

# Not --quiet: the first install takes about 90 s (TensorFlow), and a silent terminal reads as hung.
# The packages the images share with the venv (optuna, sqlalchemy, ...) are held at the versions of
# requirements/base.lock (its pins without hashes, as constraints): the suite tests what the scheduler
# and dashboard containers run, and a new release on PyPI cannot change a fresh clone's results.
$(STAMP): pyproject.toml requirements/base.lock
	@echo "Installing regsweep and its worker dependencies (TensorFlow) into $(VENV): about 90 s on a first run"
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	sed -e '/--hash=/d' -e 's/ *\\$$//' -e 's/ *#.*//' -e '/^ *$$/d' requirements/base.lock > $(VENV)/constraints.txt
	$(BIN)/python -m pip install --progress-bar on -c $(VENV)/constraints.txt -e ".[worker,dev]"
	rm -f $(VENV)/.installed-* && touch $@

venv: $(STAMP)

# A real sweep: 8 trials of the quick preset, 2 local workers, embedded SQLite, bundled digits.
demo: $(STAMP)
	$(BIN)/sweep run sweep/presets/quick.toml --workers 2 --storage $(DEMO_STORAGE) --name $(DEMO_NAME)

# The whole suite, against the real PostgreSQL at 127.0.0.1:5432.
test: $(STAMP)
	$(BIN)/python -m pytest -q -ra

test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -ra -m "not slow"

bench: $(STAMP)
	$(BIN)/python -m bench.run_all

bench-full: $(STAMP)
	$(BIN)/python -m bench.run_all --full

# Lint and type check (ruff, mypy: settings in pyproject.toml), then the Dockerfile.
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/hadolint Dockerfile.gpu

# Regenerate requirements/{base,cpu,gpu}.lock (what Dockerfile.gpu installs) from pyproject.toml.
lock: $(STAMP)
	UV=$(BIN)/uv bash requirements/lock.sh

clean:
	rm -rf $(VENV) regsweep.db regsweep-logs regsweep-artifacts .pytest_cache
