"""What grading reports: the rows of ``reports/<assignment>/grades.csv``, the terminal summary, the LMS export.

A row says what one student's notebook earned and why, or why it could not be graded (``status`` is
``failed`` and the score is empty, never a fake zero). ``isolation`` says how the submission ran:
``bwrap`` (the OS sandbox) or ``none`` (``--no-isolation``), so a grade earned outside the sandbox stays
marked as such.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from pathlib import Path

from coursekit.autograder.files import atomic_write
from coursekit.autograder.nbgrader_io import NotebookResult, course_db_url

GRADE_COLUMNS = ("student", "assignment", "notebook", "score", "max_score", "status", "detail", "isolation")


@dataclass(frozen=True)
class GradeRow:
    """One line of ``reports/<assignment>/grades.csv``."""

    student: str
    assignment: str
    notebook: str
    score: float | None  # None when the submission could not be graded
    max_score: float
    status: str  # "graded" or "failed"
    detail: str = ""
    isolation: str = "bwrap"  # "bwrap" or "none"


def failed_rows(student: str, assignment: str, notebooks: list[str], why: str, isolation: str) -> list[GradeRow]:
    return [GradeRow(student, assignment, nb, None, 0.0, "failed", why, isolation) for nb in notebooks]


def student_rows(course: Path, assignment: str, student: str, notebooks: list[str], results: list[NotebookResult],
                 problems: dict[str, str], isolation: str) -> list[GradeRow]:
    """The rows for one student: from nbgrader's results, the trusted step's status, and staging's problems."""
    scored = {r.notebook: r for r in results}
    rows = []
    for name in notebooks:
        result = scored.get(name)
        max_score = result.max_score if result else 0.0
        if name in problems:
            rows.append(GradeRow(student, assignment, name, None, max_score, "failed", problems[name], isolation))
            continue
        graded = course / "autograded" / student / assignment / f"{name}.ipynb"
        status = json.loads(graded.read_text()).get("metadata", {}).get("coursekit", {}) if graded.exists() else {}
        if status.get("status") == "failed":
            rows.append(GradeRow(student, assignment, name, None, max_score, "failed", status.get("detail", ""), isolation))
            continue
        failing = [f"{g}: {c.error}" for g, c in sorted(result.cells.items()) if c.error] if result else []
        manual = ["written answers await a human grader"] if result and result.needs_manual_grade else []
        detail = "; ".join(["; ".join(failing)[:500] or "all tests passed", *manual])
        rows.append(GradeRow(student, assignment, name, result.score if result else 0.0, max_score, "graded", detail,
                             isolation))
    return rows


def write_grades(path: Path, rows: list[GradeRow]) -> None:
    """``grades.csv``, written atomically."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(GRADE_COLUMNS)
    for row in rows:
        writer.writerow([row.student, row.assignment, row.notebook, "" if row.score is None else f"{row.score:g}",
                         f"{row.max_score:g}", row.status, row.detail, row.isolation])
    atomic_write(path, buffer.getvalue())


def format_summary(rows: list[GradeRow]) -> str:
    """A table for the terminal: one line per student and notebook, then the totals."""
    width = max([len(r.student) for r in rows] + [7])
    lines = [f"{'student':<{width}}  {'notebook':<12} {'score':>9}  {'status':<7} detail"]
    for r in rows:
        score = "-" if r.score is None else f"{r.score:g}/{r.max_score:g}"
        lines.append(f"{r.student:<{width}}  {r.notebook:<12} {score:>9}  {r.status:<7} {r.detail[:90]}")
    failed = sum(r.status == "failed" for r in rows)
    lines.append(f"{len(rows)} notebooks: {len(rows) - failed} graded, {failed} failed")
    unisolated = sum(r.isolation != "bwrap" and r.status == "graded" for r in rows)
    if unisolated:
        lines.append(f"{unisolated} graded WITHOUT isolation (isolation=none in grades.csv): their code could have "
                     "faked its result; grade them again without --no-isolation before trusting them")
    return "\n".join(lines)


def export_gradebook(course: Path, output: Path) -> list[dict[str, str]]:
    """One row per student, one column per assignment (automatic plus manual points): the CSV an LMS imports.

    A submission that ``coursekit grade`` could not grade is left blank with a note, never shown as 0; one
    graded without isolation carries a note that says so.
    """
    from nbgrader.api import Gradebook, MissingEntry

    with Gradebook(course_db_url(course)) as gradebook:
        assignments = sorted(a.name for a in gradebook.assignments)
        maxima = {a: gradebook.find_assignment(a).max_score for a in assignments}
        failed, unisolated = {}, set()
        for a in assignments:
            report = course / "reports" / a / "grades.csv"
            if report.exists():
                with report.open() as handle:
                    for r in csv.DictReader(handle):
                        if r["status"] == "failed":
                            failed[r["student"], a] = r["detail"]
                        elif r.get("isolation") != "bwrap":  # "none", or a report from before the sandbox
                            unisolated.add((r["student"], a))
        rows = []
        # Students whose every notebook failed never reach nbgrader's gradebook; the reports still name them.
        students = {s.id for s in gradebook.students} | {student for student, _ in failed}
        for student in sorted(students):
            row, total, notes = {"student_id": student}, 0.0, []
            for a in assignments:
                if (student, a) in failed:
                    row[a], _ = "", notes.append(f"{a}: not graded ({failed[student, a]})")
                    continue
                try:
                    score = gradebook.find_submission(a, student).score
                except MissingEntry:
                    row[a], _ = "", notes.append(f"{a}: no submission")
                    continue
                row[a] = f"{score:g}"
                total += score
                if (student, a) in unisolated:
                    notes.append(f"{a}: graded without isolation")
            row["total"] = f"{total:g}"
            row["notes"] = "; ".join(notes)
            rows.append(row)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=["student_id", *assignments, "total", "notes"])
    writer.writeheader()
    writer.writerow({"student_id": "Points possible", **{a: f"{maxima[a]:g}" for a in assignments},
                     "total": f"{sum(maxima.values()):g}", "notes": ""})
    writer.writerows(rows)
    atomic_write(output, buffer.getvalue())
    return rows
