# galaxy-da: the two set-up commands are `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp
DEMO_DATA ?= data/synth
PYTEST_ARGS ?=

.PHONY: install demo test test-fast ui clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/galaxy-da demo --data $(DEMO_DATA)

test: $(STAMP)
	$(VENV)/bin/pytest $(PYTEST_ARGS)

test-fast: $(STAMP)
	$(VENV)/bin/pytest -m "not slow" $(PYTEST_ARGS)

# The MLflow UI on the project's store (mlflow/mlflow.db); PORT=5001 make ui for another port.
ui: $(STAMP)
	@echo "MLflow UI of mlflow/mlflow.db: http://127.0.0.1:$${PORT:-5000}  (Ctrl-C stops it)"
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" mlflow/serve.sh

clean:
	rm -rf $(VENV) data/synth data/synth.partial mlflow/mlflow.db mlflow/artifacts
