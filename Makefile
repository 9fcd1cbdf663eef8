# galaxy-da: the two set-up commands are `make demo` and `make test` (the quick suite).
# `make test-slow` runs the end-to-end tests marked `slow` (CI runs both).
# `make cluster-test` (root) runs the multi-host tests on simulated hosts (cluster/testbed).
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp
DEMO_DATA ?= data/synth
PYTEST_ARGS ?=
# Two test processes (pytest-xdist), each file's tests in one of them (its module fixtures and order kept): on 2 cores
# the quick suite takes 3.5 minutes instead of 4.75, the slow one 14 instead of 18.5 (BENCHMARKS.md, "CI's time").
# PARALLEL= runs them in one process.
PARALLEL ?= -n 2 --dist loadfile

.PHONY: install demo test test-slow ui ui-deps ui-check cluster-deps cluster-test clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test,cluster]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/galaxy-da demo --data $(DEMO_DATA)

# The Ray auth token (~/.ray/auth_token) is made once here, before any test starts Ray: two test
# processes (pytest-xdist workers) starting a first local Ray at once would both try to write it.
RAY_TOKEN := $(VENV)/bin/ray get-auth-token --generate >/dev/null 2>&1 || true

# The quick suite: every test but the end-to-end ones marked `slow` and the multi-host ones (minutes).
test: $(STAMP)
	$(RAY_TOKEN)
	$(VENV)/bin/pytest -m "not slow and not cluster" $(PARALLEL) $(PYTEST_ARGS)

# The end-to-end tests marked `slow`: study smokes, whole sweeps, interrupts (14 to 25 minutes on 2 cores).
test-slow: $(STAMP)
	$(RAY_TOKEN)
	$(VENV)/bin/pytest -m "slow and not cluster" $(PARALLEL) $(PYTEST_ARGS)

# Debian packages the test bed needs (as root): namespaces and mounts, sshd, PostgreSQL.
cluster-deps:
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
	  iproute2 util-linux procps openssh-server openssh-client rsync postgresql >/dev/null

cluster-test: $(STAMP)
	GALAXY_DA_CLUSTER_TEST=require $(VENV)/bin/pytest -m cluster tests/test_multihost.py $(PYTEST_ARGS)

# The MLflow UI on the project's store (mlflow/mlflow.db); PORT=5001 make ui for another port.
# The link opens MLflow's "Model training" mode (a bare link opens GenAI); a sweep prints its own view's link.
ui: $(STAMP)
	@echo "MLflow UI of mlflow/mlflow.db: http://127.0.0.1:$${PORT:-5000}/#/experiments?workflowType=machine_learning  (Ctrl-C stops it)"
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" mlflow/serve.sh

# Debian's Chromium (as root), for the MLflow UI check in headless Chromium; Playwright (test extra) drives it.
ui-deps:
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null

# The MLflow UI check with screenshots (bench/results/ui/): a 3-trial smoke sweep, its view opened in Chromium.
ui-check: $(STAMP)
	$(PY) bench/ui_screenshots.py

# Removes the venv, the demo's data, the smoke sweeps' data (data/smoke, data/smoke-<targets>), the MLflow
# store and ray_results/: the sweep state there names the store's parent runs, and a same-named sweep would
# refuse to start ("a sweep named ... exists; resume it") after the store was gone.
clean:
	rm -rf $(VENV) data/synth data/synth.partial data/smoke data/smoke.partial data/smoke-* \
	  mlflow/mlflow.db mlflow/artifacts ray_results
