"""Autograding through real nbgrader: run it on a course directory and read back what it decided.

The course directory is the repository root (where ``nbgrader_config.py`` lives): sources in
``solutions/``, releases in ``exercises/``, submissions in ``submitted/<student>/<assignment>/``.
nbgrader does the grading; this module runs it and reads the gradebook and the autograded
notebooks into plain records, one per student and notebook, with each test cell's score and the
message it failed with.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class CellResult:
    """One graded cell: a test cell scored by the autograder, or a written answer awaiting a human."""

    grade_id: str
    score: float | None  # None while a manually graded cell waits for its grader
    max_score: float
    error: str = ""  # the last line of the test's error output, e.g. the diagnosis of a failed check


@dataclass(frozen=True)
class NotebookResult:
    student: str
    assignment: str
    notebook: str
    score: float  # automatic points earned
    max_score: float  # automatic points available
    needs_manual_grade: bool
    cells: dict[str, CellResult] = field(default_factory=dict)


def nbgrader_env() -> dict[str, str]:
    """The environment for nbgrader: the running interpreter's scripts (``alembic``, ``jupyter``) on PATH."""
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    return env


def run_nbgrader(course_dir: Path, *args: str, timeout: float | None = None) -> subprocess.CompletedProcess:
    """Run ``nbgrader ARGS`` in ``course_dir`` and return the finished process (output captured).

    Raises:
        RuntimeError: with nbgrader's own output when it exits non-zero.
    """
    nbgrader = Path(sys.executable).parent / "nbgrader"
    command = [str(nbgrader) if nbgrader.exists() else "nbgrader", *args]
    proc = subprocess.run(command, cwd=course_dir, env=nbgrader_env(), capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"`nbgrader {' '.join(args)}` failed (exit {proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def _last_error_line(cell: dict) -> str:
    for output in cell.get("outputs", []):
        if output.get("output_type") == "error":
            return f"{output.get('ename', 'Error')}: {output.get('evalue', '')}".strip()
    return ""


def read_results(course_dir: Path, assignment: str, students: list[str] | None = None) -> list[NotebookResult]:
    """Scores from the gradebook, with each failing test's message from the autograded notebook."""
    from nbgrader.api import Gradebook, MissingEntry

    course_dir = Path(course_dir)
    results = []
    with Gradebook(f"sqlite:///{course_dir / 'gradebook.db'}") as gradebook:
        names = students if students is not None else sorted(s.id for s in gradebook.students)
        for student in names:
            try:
                submission = gradebook.find_submission(assignment, student)
            except MissingEntry:
                continue
            for notebook in submission.notebooks:
                path = course_dir / "autograded" / student / assignment / f"{notebook.name}.ipynb"
                executed = {c.get("metadata", {}).get("nbgrader", {}).get("grade_id"): c
                            for c in json.loads(path.read_text()).get("cells", [])} if path.exists() else {}
                cells, auto = {}, []
                for grade in notebook.grades:
                    cell = CellResult(
                        grade_id=grade.name,
                        score=None if grade.needs_manual_grade else grade.score,
                        max_score=grade.max_score,
                        error=_last_error_line(executed.get(grade.name, {})),
                    )
                    cells[grade.name] = cell
                    if grade.cell.cell_type == "code":  # test cells; markdown answers are graded by hand
                        auto.append(cell)
                results.append(NotebookResult(
                    student=student, assignment=assignment, notebook=notebook.name,
                    score=sum(c.score or 0.0 for c in auto), max_score=sum(c.max_score for c in auto),
                    needs_manual_grade=notebook.needs_manual_grade, cells=cells,
                ))
    return results


def autograde(course_dir: Path, assignment: str, *, force: bool = True, timeout: float | None = None) -> list[NotebookResult]:
    """Run ``nbgrader autograde ASSIGNMENT`` over every submission in ``course_dir`` and read the results.

    The assignment must be in the gradebook (``nbgrader generate_assignment`` puts it there).
    """
    run_nbgrader(Path(course_dir), "autograde", assignment, *(["--force"] if force else []), timeout=timeout)
    return read_results(Path(course_dir), assignment)
