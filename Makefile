# The course's two entry points: `make book` (build the book) and `make test` (run every test).
# Both create .venv and install everything on first use; later runs reuse it.
VENV ?= .venv
PYTHON ?= python3
BIN := $(abspath $(VENV))/bin
export PATH := $(BIN):$(PATH)

# torch is installed on its own, exactly this release, from the index that fits the machine. Empty: the default
# index (PyPI: CPU on macOS and Windows, CUDA on Linux). A Linux laptop without an NVIDIA GPU takes PyTorch's
# CPU-only build instead of several GB of CUDA packages:
#     make setup TORCH_INDEX=https://download.pytorch.org/whl/cpu
TORCH_VERSION := 2.13.0
TORCH_INDEX ?=
# Packages that come with a CUDA build of torch: never in the lock, always from torch's own install step.
TORCH_RUNTIME := torch triton cuda-bindings cuda-pathfinder cuda-toolkit nvidia-cublas nvidia-cuda-cupti \
	nvidia-cuda-nvrtc nvidia-cuda-runtime nvidia-cudnn-cu13 nvidia-cufft nvidia-cufile nvidia-curand \
	nvidia-cusolver nvidia-cusparse nvidia-cusparselt-cu13 nvidia-nccl-cu13 nvidia-nvjitlink nvidia-nvshmem-cu13 nvidia-nvtx
UV_VERSION := 0.13.8

.PHONY: setup book test release lock clean hub-setup hub-trial

setup: $(VENV)/.installed

$(VENV)/.installed: requirements.txt pyproject.toml
	@$(PYTHON) -c 'import sys; v = sys.version_info; sys.exit(0 if v >= (3, 11) else f"The course needs Python 3.11 or newer; {sys.executable} is {v.major}.{v.minor}. Run make with PYTHON=python3.12 (or another), see the README.")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade "pip>=24"
	$(BIN)/python -m pip install --quiet torch==$(TORCH_VERSION) $(if $(TORCH_INDEX),--no-deps --index-url $(TORCH_INDEX))
	$(BIN)/python -m pip install --quiet --require-hashes -r requirements.txt
	$(BIN)/python -m pip install --quiet --no-deps -e .
	$(BIN)/python -m pip check
	touch $@

book: setup
	$(BIN)/jupyter-book build -W -n --keep-going .

test: setup
	$(BIN)/python -m pytest

# Regenerate every learner release in exercises/ from its source in solutions/.
release: setup
	for a in $$(ls solutions); do $(BIN)/nbgrader generate_assignment $$a --force || exit 1; done

# Re-lock after changing a dependency in pyproject.toml (asks the package index). requirements.txt locks the whole
# course environment (extra `course`); requirements-learner.txt the same versions for what a learner's bundle
# installs (extra `learner`). Versions already locked are kept unless a new requirement needs another.
LOCK := .lock-venv/bin/uv pip compile pyproject.toml --universal --python-version 3.11 --generate-hashes --no-header \
	--quiet $(addprefix --no-emit-package ,$(TORCH_RUNTIME))
lock:
	test -x .lock-venv/bin/uv || { $(PYTHON) -m venv .lock-venv && .lock-venv/bin/python -m pip install --quiet uv==$(UV_VERSION); }
	for lock in requirements.txt requirements-learner.txt; do sed -n '/^[^#]/q;p' $$lock > .lock-venv/$$lock.header; done
	cp requirements.txt .lock-venv/requirements.txt
	$(LOCK) --extra course -o .lock-venv/requirements.txt
	$(LOCK) --extra learner --constraints .lock-venv/requirements.txt -o .lock-venv/requirements-learner.txt
	for lock in requirements.txt requirements-learner.txt; do cat .lock-venv/$$lock.header .lock-venv/$$lock \
		| grep -v '^    #   -c .lock-venv/' > $$lock; done

clean:
	rm -rf _build

# The course hub (hub/README.md), as root: install its environment into /opt/coursehub, or try it on loopback.
hub-setup:
	hub/course-hub setup

hub-trial:
	hub/course-hub trial
