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

.PHONY: install run test lock constraints image-check sim bench query clean status ui retention dist

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
	$(PY) include/local_run.py $(RUN_ARGS)

# The operator's view (docs/OPERATORS.md): `make status` prints budget, backfills and lake
# (STATUS_ARGS="--json" for the document); `make ui` serves the Airflow UI over the lake
# of `make run` against the simulator (UI_ARGS="--port 8081 --paused" ...).
status: $(STAMP)
	$(PY) -m mde_pipeline.airflow.status.cli $(STATUS_ARGS)

ui: $(STAMP)
	$(PY) include/local_ui.py $(UI_ARGS)

# Retention (Variable mde_lake_retention_days): what would go, one line per day; nothing is
# removed unless RETENTION_ARGS="--apply" (docs/OPERATORS.md, "Retention").
retention: $(STAMP)
	$(PY) -m mde_pipeline.airflow.lake_retention $(RETENTION_ARGS)

# Three workers on this 2-core machine: most slow tests wait on rate windows, the
# scheduler's loops or Airflow's process start-ups, not on the CPU (a fresh clone, same
# load from elsewhere: 2 workers 18:45, 3 workers 15:33; both green). PYTEST_WORKERS=0
# runs everything in one process.
# The image rehearsal (make image-check) is part of it: tests/deploy/test_deploy_image_build.py.
# The tests ignore every MDE_* and AIRFLOW_* variable of the caller, the exports above
# included (tests/conftest.py removes them before anything reads them and gives the
# session a temporary AIRFLOW_HOME): `make test` runs exactly what a bare pytest runs.
PYTEST_WORKERS ?= 3
test: $(STAMP)
	$(VENV)/bin/pytest -n $(PYTEST_WORKERS) --maxschedchunk 1 --durations=30

# ---- Constraints and locks --------------------------------------------------------------
# The image (Dockerfile) is apache/airflow:$(AIRFLOW_VERSION)-python$(AIRFLOW_PYTHON). Its package set is
# reconstructed in $(CONSTRAINTS) (`make constraints`): the official image's default
# extras of Airflow, resolved with only the releases up to Airflow's release date. Both
# locks are compiled against it, so the tests run every package at the version the image
# ships, and the Dockerfile's install step only adds packages (`make image-check`).
# Next Airflow release: change the four values below (the extras and pip version are
# the ARG AIRFLOW_EXTRAS / AIRFLOW_PIP_VERSION defaults of that release's Dockerfile in
# apache/airflow; the date is the PyPI upload date of apache-airflow==<version>) and the
# FROM line of the Dockerfile, then `make lock image-check`.
AIRFLOW_VERSION := 3.3.2
AIRFLOW_PYTHON := 3.11
AIRFLOW_RELEASE_DATE := 2026-09-17
AIRFLOW_IMAGE_PIP := 26.1.2
AIRFLOW_IMAGE_EXTRAS := aiobotocore,amazon,async,celery,cncf-kubernetes,common-io,common-messaging,docker,elasticsearch,fab,ftp,git,google,google-auth,graphviz,grpc,hashicorp,http,ldap,microsoft-azure,mysql,odbc,openlineage,opensearch,pandas,postgres,redis,sendgrid,sftp,slack,snowflake,ssh,statsd,uv
CONSTRAINTS := constraints/airflow-$(AIRFLOW_VERSION)-python$(AIRFLOW_PYTHON).txt
PLATFORM := x86_64-manylinux_2_28
# The venv's uv (pinned by requirements-dev.lock) when there is one.
UV ?= $(if $(wildcard $(VENV)/bin/uv),$(VENV)/bin/uv,uv)

# Rebuild the image's constraints (needs PyPI; the result only changes when the values
# above do, or when PyPI yanks a release).
constraints:
	@mkdir -p $(dir $(CONSTRAINTS))
	{ \
	  echo "# Constraints of apache/airflow:$(AIRFLOW_VERSION)-python$(AIRFLOW_PYTHON), reconstructed: the packages (and"; \
	  echo "# versions) the official image ships, which ./Dockerfile builds on. Airflow's own"; \
	  echo "# constraints-$(AIRFLOW_VERSION)/constraints-$(AIRFLOW_PYTHON).txt is out of reach from these machines (PyPI only),"; \
	  echo "# so this file is made the way the image is: resolve"; \
	  echo "#   apache-airflow[<the image's default extras>]==$(AIRFLOW_VERSION) pip==$(AIRFLOW_IMAGE_PIP)"; \
	  echo "# for Python $(AIRFLOW_PYTHON) on $(PLATFORM), with only what PyPI held on Airflow's release"; \
	  echo "# date (uv --exclude-newer $(AIRFLOW_RELEASE_DATE): uploads of that day included)."; \
	  echo "# Extras: the ARG AIRFLOW_EXTRAS default of apache/airflow's Dockerfile (the newest one readable"; \
	  echo "# here is the 3.3.0 release's); pip: its ARG AIRFLOW_PIP_VERSION."; \
	  echo "#   extras: $(AIRFLOW_IMAGE_EXTRAS)"; \
	  echo "# Made by \`make constraints\` (run by \`make lock\`); the values live at the top of the Makefile."; \
	  echo "# For the next Airflow release: set AIRFLOW_VERSION, AIRFLOW_RELEASE_DATE, AIRFLOW_IMAGE_EXTRAS"; \
	  echo "# and AIRFLOW_IMAGE_PIP there and the Dockerfile's FROM, run \`make lock image-check\`, commit."; \
	  echo "# Do not edit by hand."; \
	  echo "#"; \
	  printf '%s\n' "apache-airflow[$(AIRFLOW_IMAGE_EXTRAS)]==$(AIRFLOW_VERSION)" "pip==$(AIRFLOW_IMAGE_PIP)" \
	  | $(UV) pip compile - --python-version $(AIRFLOW_PYTHON) --python-platform $(PLATFORM) \
	      --exclude-newer $(AIRFLOW_RELEASE_DATE) --custom-compile-command "make constraints" --quiet; \
	} > $(CONSTRAINTS).new
	mv $(CONSTRAINTS).new $(CONSTRAINTS)

# Regenerate the constraints and both locks (after editing requirements*.txt, or for a new
# Airflow release). A project requirement that conflicts with the image fails here: relax
# it rather than fight the image.
lock: constraints
	$(UV) pip compile requirements.txt -c $(CONSTRAINTS) --python-version $(AIRFLOW_PYTHON) --python-platform $(PLATFORM) -q -o requirements.lock
	$(UV) pip compile requirements-dev.txt -c $(CONSTRAINTS) --python-version $(AIRFLOW_PYTHON) --python-platform $(PLATFORM) -q -o requirements-dev.lock

# The simulator on its own (see README): make sim SIM_ARGS=--help
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
	rm -rf $(VENV) .airflow .sim .sim-ui lake dist build

# The wheel (pyproject.toml): dist/mde_alert_ips-<version>-py3-none-any.whl, the only file
# in dist/ (the Dockerfile installs dist/*.whl). uv fetches the build backend (setuptools)
# from the package index, like pip would.
dist: $(STAMP)
	rm -rf dist build
	$(VENV)/bin/uv build --wheel --quiet --out-dir dist --python $(PY)
	rm -rf build plugins/*.egg-info
	@ls dist/*.whl

# Rehearse the Dockerfile's pip steps (the lock, then the wheel of `make dist`) on the
# image's package set (no Docker engine needed; include/deploy/image_check.py says what is
# and is not rehearsed). The venv stays in .image-venv/ (git-ignored) and is re-synced at
# every run.
image-check: dist
	$(PY) include/deploy/image_check.py
