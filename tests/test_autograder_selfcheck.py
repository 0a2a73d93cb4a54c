"""`coursekit check`: a learner's self-check exits non-zero on failing or tampered tests, never edits the file."""

import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT
from tests.helpers import SDPA_SUBMISSIONS

pytestmark = pytest.mark.slow
COURSEKIT = str(Path(sys.executable).parent / "coursekit")


@pytest.fixture
def course(tmp_path) -> Path:
    """A learner's copy of the course: the release, plus a working copy of the notebook to fill in."""
    shutil.copy(ROOT / "nbgrader_config.py", tmp_path)
    shutil.copytree(ROOT / "exercises", tmp_path / "exercises")
    (tmp_path / "work" / "sdpa").mkdir(parents=True)
    shutil.copy(tmp_path / "exercises" / "sdpa" / "sdpa.ipynb", tmp_path / "work" / "sdpa" / "sdpa.ipynb")
    return tmp_path


def edit(path: Path, grade_id: str, source: str | None) -> None:
    nb = json.loads(path.read_text())
    if source is None:
        nb["cells"] = [c for c in nb["cells"] if c["metadata"].get("nbgrader", {}).get("grade_id") != grade_id]
    else:
        next(c for c in nb["cells"] if c["metadata"].get("nbgrader", {}).get("grade_id") == grade_id)["source"] = source
    path.write_text(json.dumps(nb))


def check(path: Path) -> subprocess.CompletedProcess:
    return subprocess.run([COURSEKIT, "check", str(path)], capture_output=True, text=True, timeout=600)


def test_blank_release_fails_and_file_is_untouched(course):
    notebook = course / "work" / "sdpa" / "sdpa.ipynb"
    before = hashlib.sha256(notebook.read_bytes()).hexdigest()
    proc = check(notebook)
    assert proc.returncode == 1
    assert "Automatic points: 0/10" in proc.stdout and "not written yet" in proc.stdout
    assert "WARNING" not in proc.stderr, proc.stderr  # e.g. ipykernel's about unencrypted kernel channels
    assert hashlib.sha256(notebook.read_bytes()).hexdigest() == before


def test_solved_notebook_passes(course):
    notebook = course / "work" / "sdpa" / "sdpa.ipynb"
    edit(notebook, "sdpa-answer", SDPA_SUBMISSIONS["reference"])
    proc = check(notebook)
    assert proc.returncode == 0, proc.stdout
    assert "Automatic points: 10/10" in proc.stdout and "written-answer" in proc.stdout


def test_partial_answer_reports_the_diagnosis(course):
    notebook = course / "work" / "sdpa" / "sdpa.ipynb"
    edit(notebook, "sdpa-answer", SDPA_SUBMISSIONS["unscaled"])
    proc = check(notebook)
    assert proc.returncode == 1
    assert "Automatic points: 5/10" in proc.stdout and "[sdpa.unscaled]" in proc.stdout


@pytest.mark.parametrize("tamper", ["edited", "deleted"])
def test_tampered_test_cells_fail_the_check(course, tamper):
    notebook = course / "work" / "sdpa" / "sdpa.ipynb"
    edit(notebook, "sdpa-answer", SDPA_SUBMISSIONS["unscaled"])
    edit(notebook, "test-values", "assert True" if tamper == "edited" else None)
    proc = check(notebook)
    assert proc.returncode == 1
    assert f"cell 'test-values' was {'changed' if tamper == 'edited' else 'deleted'}" in proc.stdout


def test_damaged_file_gets_a_clear_message(tmp_path):
    broken = tmp_path / "sdpa.ipynb"
    broken.write_text("{ this is not json")
    proc = check(broken)
    assert proc.returncode == 2 and "could not be read as a notebook" in proc.stdout
