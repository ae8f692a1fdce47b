# Two commands matter: `make run` and `make test`. Both build .venv first when it is
# missing or older than the lock.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# Airflow's home, metadata DB and logs stay inside the repo, never in ~/airflow.
export AIRFLOW_HOME := $(CURDIR)/.airflow
export AIRFLOW__CORE__DAGS_FOLDER := $(CURDIR)/dags
export AIRFLOW__CORE__PLUGINS_FOLDER := $(CURDIR)/plugins
export AIRFLOW__CORE__LOAD_EXAMPLES := False
export PYTHONPATH := $(CURDIR)/plugins:$(CURDIR)/include

.PHONY: install run test lock sim bench query clean status ui

install: $(STAMP)

$(STAMP): requirements-dev.lock
	@command -v $(PYTHON) >/dev/null || { echo "need $(PYTHON) on PATH"; exit 1; }
	rm -rf $(VENV)
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check "uv==$$(sed -n 's/^uv==//p' requirements-dev.lock)"
	# Precompiled bytecode: every Airflow subprocess would otherwise compile its imports
	# anew where PYTHONDONTWRITEBYTECODE is set (10-20 s per process on 2 cores).
	$(VENV)/bin/uv pip sync -q --compile-bytecode --python $(PY) requirements-dev.lock
	touch $(STAMP)

run: $(STAMP)
	$(PY) include/local_run.py

# The operator's view (docs/OPERATORS.md): `make status` prints budget, backfills and lake
# (STATUS_ARGS="--json" for the document); `make ui` serves the Airflow UI over the lake
# of `make run` against the simulator (UI_ARGS="--port 8081 --paused" ...).
status: $(STAMP)
	$(PY) -m mde_pipeline.airflow.status.cli $(STATUS_ARGS)

ui: $(STAMP)
	$(PY) include/local_ui.py $(UI_ARGS)

# Two workers: most slow tests wait on rate windows or on Airflow's own processes, not
# on the CPU. PYTEST_WORKERS=0 runs everything in one process.
PYTEST_WORKERS ?= 2
test: $(STAMP)
	$(VENV)/bin/pytest -n $(PYTEST_WORKERS) --maxschedchunk 1 --durations=30

# Regenerate both locks after editing requirements*.txt.
lock:
	uv pip compile requirements.txt --python-version 3.11 --python-platform x86_64-manylinux_2_28 -q -o requirements.lock
	uv pip compile requirements-dev.txt --python-version 3.11 --python-platform x86_64-manylinux_2_28 -q -o requirements-dev.lock

# The simulator on its own (see README): python -m mde_simulator --help
sim: $(STAMP)
	$(PY) -m mde_simulator $(SIM_ARGS)

bench: $(STAMP)
	$(PY) -m bench $(BENCH_ARGS)

# DuckDB on the lake with the analysts' views (docs/ANALYSTS.md): make query SQL="..."
# Without SQL: an interactive shell. LAKE=... overrides Variable mde_lake_root.
# SQL and LAKE reach the recipe as environment variables, so quotes in them are safe.
query: $(STAMP)
	$(PY) -m mde_pipeline.airflow.query_cli $(if $(LAKE),--lake "$$LAKE") --sql "$$SQL"

clean:
	rm -rf $(VENV) .airflow .sim .sim-ui lake
