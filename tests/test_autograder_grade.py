"""`coursekit grade` against a hostile cohort: honest, broken and hostile submissions each get the score and
status they deserve, the whole batch completes, and nothing a submission does reaches the grader: the course's
files, the real coursekit package, every other student's files and grades, grades.csv and the feedback are as
they should be, no process of a submission outlives grading, and no connection reaches the host's loopback.
Re-runs are idempotent."""

import csv
import json
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import coursekit
from coursekit.autograder.batch import GradeSettings, grade_assignment
from coursekit.autograder.nbgrader_io import CourseError
from tests import hostile_cohort as hc

pytestmark = pytest.mark.slow
SETTINGS = GradeSettings(workers=2, memory_mb=2048, cell_timeout_s=20, notebook_timeout_s=120, progress=False)
PACKAGE = Path(coursekit.__file__).resolve().parent


def cohort(targets: hc.Targets) -> dict[str, dict | str | None]:
    """student -> notebook (dict), raw file text (str), or None for a missing notebook."""
    subs: dict[str, dict | str | None] = {"reference": hc.answered(hc.REFERENCE), "blank": hc.release(),
                                          "unscaled": hc.answered(hc.UNSCALED)}
    subs["hides-tracebacks"] = hc.answered(hc.UNSCALED + "\nget_ipython().showtraceback = lambda *a, **k: None\n"
                                           "get_ipython()._showtraceback = lambda *a, **k: None\n")
    subs["patches-checks"] = hc.answered(hc.UNSCALED + "\n" + hc.PATCH_CHECKS)
    subs["exits-kernel"] = hc.answered(hc.REFERENCE + "\nimport os\nos._exit(0)\n")
    subs["loops-forever"] = hc.answered(hc.REFERENCE + "\nwhile True:\n    pass\n")
    subs["ignores-interrupts"] = hc.answered(hc.REFERENCE + "\nimport time\nwhile True:\n    try:\n        time.sleep(0.1)\n"
                                             "    except BaseException:\n        pass\n")
    subs["hogs-memory"] = hc.answered(hc.REFERENCE + "\nhog = bytearray(64 * 2**30)\n")
    nb = hc.answered(hc.REFERENCE)
    nb["cells"].remove(hc.cell(nb, "test-values"))
    subs["deletes-test"] = nb
    nb = hc.answered(hc.UNSCALED)
    hc.cell(nb, "test-values")["source"] = "pass"
    subs["edits-test"] = nb
    nb = hc.answered(hc.REFERENCE)
    hc.cell(nb, "test-values")["metadata"]["nbgrader"].update(points=100, grade=False, locked=False)
    subs["edits-metadata"] = nb
    subs["corrupt"] = '{"cells": [ this is not json'
    subs["missing"] = None
    return {**subs, **hc.attack_notebooks(targets)}


EXPECTED = {  # student: (score or None when failed, status, words the detail must contain)
    "reference": (10, "graded", "all tests passed"),
    "blank": (0, "graded", "NotImplementedError"),
    "unscaled": (5, "graded", "[sdpa.unscaled]"),
    "hides-tracebacks": (5, "graded", "[sdpa.unscaled]"),
    "patches-checks": (5, "graded", "[sdpa.unscaled]"),
    "exits-kernel": (None, "failed", "exited"),
    "loops-forever": (None, "failed", "timed out"),
    "ignores-interrupts": (None, "failed", "timed out"),
    "hogs-memory": (None, "failed", "memory"),
    "deletes-test": (10, "graded", "all tests passed"),
    "edits-test": (5, "graded", "[sdpa.unscaled]"),
    "edits-metadata": (10, "graded", "all tests passed"),
    "corrupt": (None, "failed", "unreadable"),
    "missing": (None, "failed", "missing notebook"),
    **hc.EXPECTED,
}


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    course = tmp_path_factory.mktemp("cohort")
    secret = tmp_path_factory.mktemp("instructor") / "secret.txt"
    listeners = hc.Listeners()
    targets = hc.Targets(course, secret, listeners.port, listeners.abstract)
    secret.write_text(targets.secret_text)
    hc.make_course(course, cohort(targets))
    hc.plant_link(course, targets)
    before = {"submitted": hc.fingerprint(course / "submitted"), "solutions": hc.fingerprint(course / "solutions"),
              "coursekit": hc.fingerprint(PACKAGE), "config": hc.fingerprint(course)["nbgrader_config.py"]}
    try:
        rows = {r.student: r for r in grade_assignment(course, "sdpa", SETTINGS)}
        after_grading = {"processes": hc.host_processes_with(targets.marker),
                         "grades": (course / "reports" / "sdpa" / "grades.csv").read_text(),
                         "connections": listeners.connections()}
    finally:
        listeners.close()
    yield course, rows, before, after_grading, targets


@pytest.mark.parametrize("student", list(EXPECTED))
def test_each_submission_gets_what_it_deserves(graded, student):
    _, rows, _, _, _ = graded
    score, status, words = EXPECTED[student]
    row = rows[student]
    assert (row.score, row.status) == (score, status), row.detail
    assert words in row.detail, row.detail
    assert row.max_score in (10, 0) and (row.max_score == 10 or status == "failed")
    assert row.isolation == "bwrap"


@pytest.mark.parametrize("student", list(hc.OUTCOMES))
def test_each_attack_was_stopped_by_the_sandbox(graded, student):
    course, _, _, _, _ = graded
    printed = hc.outputs(course, student)
    for outcome in hc.OUTCOMES[student]:
        assert printed.count(outcome) >= hc.OUTCOMES[student].count(outcome), printed
    if student == "fork-bomb":
        assert 0 < hc.forks_started(printed) < 256


def test_the_whole_batch_completes_and_the_csv_says_so(graded):
    course, rows, _, _, _ = graded
    assert set(rows) == set(EXPECTED)
    with (course / "reports" / "sdpa" / "grades.csv").open() as handle:
        table = list(csv.DictReader(handle))
    assert {"student", "assignment", "score", "max_score", "status", "detail", "isolation"} <= set(table[0])
    assert len(table) == len(EXPECTED)
    failed = {r["student"]: r for r in table if r["status"] == "failed"}
    assert all(r["score"] == "" for r in failed.values()), "a failed submission must not look like a real zero"


def test_the_course_coursekit_and_every_submission_are_unchanged(graded):
    course, _, before, _, _ = graded
    assert hc.fingerprint(course / "submitted") == before["submitted"]
    assert hc.fingerprint(course / "solutions") == before["solutions"]
    assert hc.fingerprint(PACKAGE) == before["coursekit"], "a submission changed the grader's own code"
    assert hc.fingerprint(course)["nbgrader_config.py"] == before["config"]


def test_no_process_outlives_grading_and_grades_csv_stays_as_written(graded):
    course, _, _, after, targets = graded
    assert after["processes"] == [], "a submission's process was still running when grading returned"
    time.sleep(2)  # the lingering process would have written by now (every 0.25 s)
    assert hc.host_processes_with(targets.marker) == []
    assert (course / "reports" / "sdpa" / "grades.csv").read_text() == after["grades"]


def test_no_connection_reached_the_hosts_loopback(graded):
    _, _, _, after, _ = graded
    assert after["connections"] == 0


def test_feedback_carries_the_diagnosis_and_never_a_hidden_test_or_a_file_from_outside(graded):
    course, _, _, _, targets = graded
    page = (course / "feedback" / "unscaled" / "sdpa" / "sdpa.html").read_text()
    assert "[sdpa.unscaled]" in page, "feedback must carry the diagnosis"
    pages = sorted((course / "feedback").rglob("*.html"))
    assert len(pages) >= len([s for s, (_, status, _) in EXPECTED.items() if status == "graded"])
    for path in pages:
        text = path.read_text()
        for hidden in (*hc.HIDDEN, targets.secret_text):
            assert hidden not in text, f"{path.relative_to(course)} shows {hidden!r}"


def test_a_run_killed_mid_batch_leaves_nothing_running_and_the_rerun_grades_as_an_uninterrupted_run(
        graded, tmp_path):
    _, rows, _, _, _ = graded
    students = ["reference", "unscaled", "blank"]
    hc.make_course(tmp_path, {"reference": hc.answered(hc.REFERENCE), "unscaled": hc.answered(hc.UNSCALED),
                              "blank": hc.release()})
    outcome = hc.supervise(tmp_path, "one-graded", "kill-parent")
    assert outcome["stopped"] and outcome["code"] == -signal.SIGKILL, outcome
    assert outcome["survivors"] == [], "the killed run left processes behind"
    assert 1 <= outcome["graded_when_stopped"] < len(students), "the run must be killed mid-batch"
    json.loads((tmp_path / "reports" / "sdpa" / "manifest.json").read_text())  # written whole, never half

    def same(row):  # what must not depend on the run (fresh seeds of hidden tests aside)
        return row.student, row.notebook, row.score, row.status, re.sub(r"seed=\d+", "seed=N", row.detail), row.isolation

    rerun = grade_assignment(tmp_path, "sdpa", SETTINGS)
    assert sorted(map(same, rerun)) == sorted(same(rows[s]) for s in students)


def test_regrading_is_idempotent_and_only_redoes_what_changed(graded):
    course, rows, _, _, _ = graded
    autograded = course / "autograded"
    stamps = {p: p.stat().st_mtime_ns for p in autograded.rglob("*.ipynb")}
    again = {r.student: r for r in grade_assignment(course, "sdpa", SETTINGS)}
    assert again == rows
    assert {p: p.stat().st_mtime_ns for p in autograded.rglob("*.ipynb")} == stamps, "nothing changed, nothing regraded"

    (course / "submitted" / "unscaled" / "sdpa" / "sdpa.ipynb").write_text(json.dumps(hc.answered(hc.REFERENCE)))
    third = {r.student: r for r in grade_assignment(course, "sdpa", SETTINGS)}
    assert third["unscaled"].score == 10
    changed = [p for p, t in stamps.items() if p.stat().st_mtime_ns != t]
    assert [p.relative_to(autograded).parts[0] for p in changed] == ["unscaled"]


def test_command_line_prints_a_summary_and_says_some_could_not_be_graded(graded):
    course, _, _, _, _ = graded
    proc = subprocess.run([str(Path(sys.executable).parent / "coursekit"), "grade", "sdpa", "--workers", "2"],
                          cwd=course, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 1, proc.stderr  # 1: some submissions could not be graded (their rows say why)
    assert "graded" in proc.stdout and "failed" in proc.stdout and "reports/sdpa/grades.csv" in proc.stdout


def test_unknown_assignment_is_a_clear_error(graded):
    course, _, _, _, _ = graded
    with pytest.raises(CourseError, match="known assignments: .*sdpa"):
        grade_assignment(course, "nope", SETTINGS)


def test_export_for_an_lms_keeps_failures_blank(graded):
    course, _, _, _, _ = graded
    proc = subprocess.run([str(Path(sys.executable).parent / "coursekit"), "export"], cwd=course,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    with (course / "reports" / "gradebook.csv").open() as handle:
        table = {r["student_id"]: r for r in csv.DictReader(handle)}
    assert table["Points possible"]["sdpa"] == "12"  # 10 automatic + 2 for the written answer
    assert table["reference"]["sdpa"] == "10" and table["blank"]["sdpa"] == "0"
    assert table["vandal"]["sdpa"] == "10", "the vandal's own grade, and everyone else's, survive it"
    assert table["corrupt"]["sdpa"] == "" and "not graded" in table["corrupt"]["notes"]
