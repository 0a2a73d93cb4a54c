"""`coursekit grade` against a cohort of honest, broken and hostile submissions: each gets the score and
status it deserves, the whole batch completes, submitted/ is never modified, and re-runs are idempotent."""

import csv
import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from coursekit.autograder.batch import GradeSettings, grade_assignment
from tests.conftest import ROOT
from tests.test_notebooks import SDPA_SUBMISSIONS

pytestmark = pytest.mark.slow
REFERENCE, UNSCALED = SDPA_SUBMISSIONS["reference"], SDPA_SUBMISSIONS["unscaled"]
SETTINGS = GradeSettings(workers=2, memory_mb=2048, cell_timeout_s=20, notebook_timeout_s=120, progress=False)

PATCH_CHECKS = """
import numpy, torch, coursekit.attention, coursekit.grading
torch.allclose = lambda *a, **k: True
torch.testing.assert_close = lambda *a, **k: None
numpy.allclose = lambda *a, **k: True
numpy.testing.assert_allclose = lambda *a, **k: None
coursekit.attention.scaled_dot_product_attention = scaled_dot_product_attention
for name in dir(coursekit.grading):
    if name.startswith("check_"):
        setattr(coursekit.grading, name, lambda *a, **k: None)
grading = coursekit.grading
"""


def release() -> dict:
    return json.loads((ROOT / "exercises" / "sdpa" / "sdpa.ipynb").read_text())


def cell(nb: dict, grade_id: str) -> dict:
    return next(c for c in nb["cells"] if c["metadata"].get("nbgrader", {}).get("grade_id") == grade_id)


def answered(code: str) -> dict:
    nb = release()
    cell(nb, "sdpa-answer")["source"] = code
    return nb


def cohort() -> dict[str, dict | str | None]:
    """student -> notebook (dict), raw file text (str), or None for a missing notebook."""
    subs: dict[str, dict | str | None] = {"reference": answered(REFERENCE), "blank": release(),
                                          "unscaled": answered(UNSCALED)}
    subs["hides-tracebacks"] = answered(UNSCALED + "\nget_ipython().showtraceback = lambda *a, **k: None\n"
                                        "get_ipython()._showtraceback = lambda *a, **k: None\n")
    subs["patches-checks"] = answered(UNSCALED + "\n" + PATCH_CHECKS)
    subs["exits-kernel"] = answered(REFERENCE + "\nimport os\nos._exit(0)\n")
    subs["loops-forever"] = answered(REFERENCE + "\nwhile True:\n    pass\n")
    subs["ignores-interrupts"] = answered(REFERENCE + "\nimport time\nwhile True:\n    try:\n        time.sleep(0.1)\n"
                                          "    except BaseException:\n        pass\n")
    subs["hogs-memory"] = answered(REFERENCE + "\nhog = bytearray(64 * 2**30)\n")
    nb = answered(REFERENCE)
    nb["cells"].remove(cell(nb, "test-values"))
    subs["deletes-test"] = nb
    nb = answered(UNSCALED)
    cell(nb, "test-values")["source"] = "pass"
    subs["edits-test"] = nb
    nb = answered(REFERENCE)
    cell(nb, "test-values")["metadata"]["nbgrader"].update(points=100, grade=False, locked=False)
    subs["edits-metadata"] = nb
    subs["corrupt"] = '{"cells": [ this is not json'
    subs["missing"] = None
    return subs


EXPECTED = {  # student: (score or None when failed, status, words the detail must contain)
    "reference": (10, "graded", "all tests passed"),
    "blank": (0, "graded", "NotImplementedError"),
    "unscaled": (5, "graded", "did not scale"),
    "hides-tracebacks": (5, "graded", "did not scale"),
    "patches-checks": (5, "graded", "did not scale"),
    "exits-kernel": (None, "failed", "exited"),
    "loops-forever": (None, "failed", "timed out"),
    "ignores-interrupts": (None, "failed", "timed out"),
    "hogs-memory": (None, "failed", "memory"),
    "deletes-test": (10, "graded", "all tests passed"),
    "edits-test": (5, "graded", "did not scale"),
    "edits-metadata": (10, "graded", "all tests passed"),
    "corrupt": (None, "failed", "unreadable"),
    "missing": (None, "failed", "missing notebook"),
}


def fingerprint(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    course = tmp_path_factory.mktemp("cohort")
    shutil.copy(ROOT / "nbgrader_config.py", course)
    shutil.copytree(ROOT / "solutions", course / "solutions")
    for student, notebook in cohort().items():
        folder = course / "submitted" / student / "sdpa"
        folder.mkdir(parents=True)
        if notebook is None:
            (folder / "notes.txt").write_text("forgot the notebook")
        else:
            (folder / "sdpa.ipynb").write_text(notebook if isinstance(notebook, str) else json.dumps(notebook))
    before = fingerprint(course / "submitted")
    rows = {r.student: r for r in grade_assignment(course, "sdpa", SETTINGS)}
    return course, rows, before


@pytest.mark.parametrize("student", list(EXPECTED))
def test_each_submission_gets_what_it_deserves(graded, student):
    _, rows, _ = graded
    score, status, words = EXPECTED[student]
    row = rows[student]
    assert (row.score, row.status) == (score, status), row.detail
    assert words in row.detail, row.detail
    assert row.max_score in (10, 0) and (row.max_score == 10 or status == "failed")


def test_the_whole_batch_completes_and_the_csv_says_so(graded):
    course, rows, _ = graded
    assert set(rows) == set(EXPECTED)
    with (course / "reports" / "sdpa" / "grades.csv").open() as handle:
        table = list(csv.DictReader(handle))
    assert {"student", "assignment", "score", "max_score", "status", "detail"} <= set(table[0])
    assert len(table) == len(EXPECTED)
    failed = {r["student"]: r for r in table if r["status"] == "failed"}
    assert all(r["score"] == "" for r in failed.values()), "a failed submission must not look like a real zero"


def test_submitted_files_are_never_modified(graded):
    course, _, before = graded
    assert fingerprint(course / "submitted") == before


def test_feedback_never_reveals_hidden_tests(graded):
    course, _, _ = graded
    page = (course / "feedback" / "unscaled" / "sdpa" / "sdpa.html").read_text()
    assert "did not scale the scores" in page, "feedback must carry the diagnosis"
    for hidden in ("# fresh random inputs", "for _ in range(3)", "HIDDEN TESTS"):
        assert hidden not in page


def test_regrading_is_idempotent_and_only_redoes_what_changed(graded):
    course, rows, _ = graded
    autograded = course / "autograded"
    stamps = {p: p.stat().st_mtime_ns for p in autograded.rglob("*.ipynb")}
    again = {r.student: r for r in grade_assignment(course, "sdpa", SETTINGS)}
    assert again == rows
    assert {p: p.stat().st_mtime_ns for p in autograded.rglob("*.ipynb")} == stamps, "nothing changed, nothing regraded"

    (course / "submitted" / "unscaled" / "sdpa" / "sdpa.ipynb").write_text(json.dumps(answered(REFERENCE)))
    third = {r.student: r for r in grade_assignment(course, "sdpa", SETTINGS)}
    assert third["unscaled"].score == 10
    changed = [p for p, t in stamps.items() if p.stat().st_mtime_ns != t]
    assert [p.relative_to(autograded).parts[0] for p in changed] == ["unscaled"]


def test_command_line_prints_a_summary(graded):
    course, _, _ = graded
    proc = subprocess.run([str(Path(sys.executable).parent / "coursekit"), "grade", "sdpa", "--workers", "2"],
                          cwd=course, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert "graded" in proc.stdout and "failed" in proc.stdout and "reports/sdpa/grades.csv" in proc.stdout


def test_unknown_assignment_is_a_clear_error(graded):
    course, _, _ = graded
    with pytest.raises(FileNotFoundError, match="known assignments: .*sdpa"):
        grade_assignment(course, "nope", SETTINGS)


def test_export_for_an_lms_keeps_failures_blank(graded):
    course, _, _ = graded
    proc = subprocess.run([str(Path(sys.executable).parent / "coursekit"), "export"], cwd=course,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    with (course / "reports" / "gradebook.csv").open() as handle:
        table = {r["student_id"]: r for r in csv.DictReader(handle)}
    assert table["Points possible"]["sdpa"] == "12"  # 10 automatic + 2 for the written answer
    assert table["reference"]["sdpa"] == "10" and table["blank"]["sdpa"] == "0"
    assert table["corrupt"]["sdpa"] == "" and "not graded" in table["corrupt"]["notes"]
