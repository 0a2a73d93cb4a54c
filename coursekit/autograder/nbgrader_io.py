"""nbgrader in, nbgrader out: the course directory, running nbgrader, and reading back what it decided.

The course directory is where ``nbgrader_config.py`` lives (this repository's root): sources in
``solutions/``, releases in ``exercises/``, submissions in ``submitted/<student>/<assignment>/``.
nbgrader keeps the gradebook, restores test cells and writes feedback; :func:`autograde_student` runs its
autograde pipeline with the trusted execution step (:mod:`coursekit.autograder.execute`) in place of its
kernel, and :func:`read_results` reads the gradebook and the autograded notebooks into plain records.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path


class CourseError(Exception):
    """A problem with the course directory or the command's arguments; the message is one line that says what to do."""


class NbgraderFailed(CourseError, RuntimeError):
    """nbgrader itself failed; the message names the command and nbgrader's last error, ``output`` holds the rest."""

    def __init__(self, args: tuple[str, ...], code: int, output: str) -> None:
        errors = [line.strip() for line in output.splitlines() if "ERROR" in line or "Error" in line] or \
                 [line.strip() for line in output.splitlines() if line.strip()] or ["no output"]
        super().__init__(f"`nbgrader {' '.join(args)}` failed (exit {code}): {errors[-1][:300]}; run it at the "
                         "course root to see its whole output")
        self.output = output


def find_course(folder: Path) -> Path:
    """``folder`` resolved, if it is a course directory (has ``nbgrader_config.py``).

    Raises:
        CourseError: it is not; the message names the course root when a parent folder is one.
    """
    folder = Path(folder).resolve()
    if (folder / "nbgrader_config.py").is_file():
        return folder
    parent = next((p for p in folder.parents if (p / "nbgrader_config.py").is_file()), None)
    hint = f"the course root is {parent}: run it there" if parent else "run it at the course's root"
    raise CourseError(f"{folder} is not a course directory (it has no nbgrader_config.py); {hint}")


def check_assignment(course: Path, assignment: str) -> None:
    """Raises CourseError unless ``solutions/<assignment>/`` holds a notebook; the message lists the known ones."""
    if not list((course / "solutions" / assignment).glob("*.ipynb")):
        folder = course / "solutions"
        known = sorted(p.name for p in folder.iterdir() if p.is_dir()) if folder.is_dir() else []
        raise CourseError(f"no assignment '{assignment}' in solutions/; known assignments: {', '.join(known) or 'none'}")


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
    """Run ``nbgrader ARGS`` (with this interpreter) in ``course_dir`` and return the finished process.

    Raises:
        NbgraderFailed: when it exits non-zero (a RuntimeError, with nbgrader's whole output in ``output``).
    """
    command = [sys.executable, "-m", "nbgrader", *args]
    proc = subprocess.run(command, cwd=course_dir, env=nbgrader_env(), capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise NbgraderFailed(args, proc.returncode, f"{proc.stdout}\n{proc.stderr}")
    return proc


def _last_error_line(cell: dict) -> str:
    for output in cell.get("outputs", []):
        if output.get("output_type") == "error":
            return f"{output.get('ename', 'Error')}: {output.get('evalue', '')}".strip()
    return ""


def course_db_url(course_dir: Path) -> str:
    """The gradebook's database URL as the course's nbgrader_config.py sets it (SQLite in the root by default)."""
    from nbgrader.coursedir import CourseDirectory
    from traitlets.config.loader import PyFileConfigLoader

    config = PyFileConfigLoader("nbgrader_config.py", path=str(course_dir)).load_config()
    config.CourseDirectory.root = str(Path(course_dir).resolve())
    return CourseDirectory(config=config).db_url


def read_results(course_dir: Path, assignment: str, students: list[str] | None = None) -> list[NotebookResult]:
    """Scores from the gradebook, with each failing test's message from the autograded notebook."""
    from nbgrader.api import Gradebook, MissingEntry

    course_dir = Path(course_dir)
    results = []
    with Gradebook(course_db_url(course_dir)) as gradebook:
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
    """Plain ``nbgrader autograde ASSIGNMENT`` (one kernel, no sandbox) over every submission; read the results.

    The assignment must be in the gradebook (``nbgrader generate_assignment`` puts it there).
    """
    run_nbgrader(Path(course_dir), "autograde", assignment, *(["--force"] if force else []), timeout=timeout)
    return read_results(Path(course_dir), assignment)


# ---------------------------------------------------------------------------------------------------
# coursekit's pipeline: nbgrader's autograde with the trusted execution step
# ---------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Pipeline:
    """Where one student's grading reads and writes, and the limits of the trusted execution step."""

    course: Path
    staging: Path  # submissions as staged (copied and repaired): nbgrader's submitted directory
    feedback: Path  # where nbgrader writes feedback before it is moved into feedback/, file by file
    memory_mb: int = 4096
    max_processes: int = 256
    cell_timeout_s: float = 120.0
    notebook_timeout_s: float = 600.0
    isolated: bool = True


def pipeline_config(pipeline: Pipeline):
    """The course's nbgrader_config.py, with the trusted execution step in place of nbgrader's Execute."""
    from nbconvert.preprocessors import ClearMetadataPreprocessor, CSSHTMLHeaderPreprocessor
    from nbgrader.preprocessors import (AssignLatePenalties, CheckCellMetadata, ClearHiddenTests, GetGrades,
                                        IgnorePattern, LimitOutput, SaveAutoGrades)
    from traitlets.config import Config
    from traitlets.config.loader import PyFileConfigLoader

    from coursekit.autograder.execute import TrustedExecute

    config = Config()
    config.merge(PyFileConfigLoader("nbgrader_config.py", path=str(pipeline.course)).load_config())
    config.CourseDirectory.root = str(pipeline.course)
    config.CourseDirectory.submitted_directory = str(pipeline.staging)
    config.CourseDirectory.feedback_directory = str(pipeline.feedback)
    config.Autograde.autograde_preprocessors = [TrustedExecute, IgnorePattern, ClearMetadataPreprocessor,
                                                LimitOutput, SaveAutoGrades, AssignLatePenalties, CheckCellMetadata]
    config.OverwriteCells.add_missing_cells = True
    config.TrustedExecute.memory_mb = pipeline.memory_mb
    config.TrustedExecute.max_processes = pipeline.max_processes
    config.TrustedExecute.cell_timeout_s = pipeline.cell_timeout_s
    config.TrustedExecute.notebook_timeout_s = pipeline.notebook_timeout_s
    config.TrustedExecute.isolated = pipeline.isolated
    # Feedback shows how each test went, never the hidden tests' source.
    config.GenerateFeedback.preprocessors = [GetGrades, ClearHiddenTests, CSSHTMLHeaderPreprocessor]
    config.ClearHiddenTests.enforce_metadata = False
    return config


def _api(pipeline: Pipeline):
    import logging
    import warnings

    from nbgrader.apps import NbGraderAPI
    from nbgrader.coursedir import CourseDirectory

    warnings.filterwarnings("ignore", module="nbgrader")  # SQLAlchemy session warnings nbgrader always emits
    config = pipeline_config(pipeline)
    api = NbGraderAPI(coursedir=CourseDirectory(config=config), config=config)
    api.log.setLevel(logging.ERROR)
    return api


def autograde_student(pipeline: Pipeline, assignment: str, student: str) -> str | None:
    """Autograde one staged submission into the gradebook and ``autograded/``; None, or why nbgrader failed."""
    outcome = _api(pipeline).autograde(assignment, student, force=True, create=True)
    if outcome.get("success"):
        return None
    error = (outcome.get("error") or outcome.get("log") or "nbgrader failed").strip().splitlines()
    return f"nbgrader could not grade it: {error[-1][:300]}"


def write_feedback(pipeline: Pipeline, assignment: str, student: str) -> None:
    """Generate the student's feedback pages, then move them into ``feedback/<student>/<assignment>/`` one
    rename each, so a reader never finds a page half-written."""
    import shutil

    from coursekit.autograder.files import replace_folder_files

    shutil.rmtree(pipeline.feedback / student, ignore_errors=True)
    _api(pipeline).generate_feedback(assignment, student, force=True)
    fresh = pipeline.feedback / student / assignment
    if fresh.is_dir():
        replace_folder_files(fresh, pipeline.course / "feedback" / student / assignment)
    shutil.rmtree(pipeline.feedback / student, ignore_errors=True)
