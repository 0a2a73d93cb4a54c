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
import re
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
    """Run ``nbgrader autograde ASSIGNMENT`` over every submission in ``course_dir`` and read the results.

    The assignment must be in the gradebook (``nbgrader generate_assignment`` puts it there).
    """
    run_nbgrader(Path(course_dir), "autograde", assignment, *(["--force"] if force else []), timeout=timeout)
    return read_results(Path(course_dir), assignment)


# ---------------------------------------------------------------------------------------------------
# `coursekit grade`: every submission of an assignment, in parallel, trustworthy, idempotent
# ---------------------------------------------------------------------------------------------------

GRADE_COLUMNS = ("student", "assignment", "notebook", "score", "max_score", "status", "codes", "detail")
_CODE = re.compile(r"^(?:[A-Za-z_][\w.]*: )?\[(?P<code>[a-z][a-z0-9-]*(?:\.[a-z0-9-]+)+)\] ")


def failure_code(message: str) -> str:
    """The stable code a check's failure starts with (``CheckFailed: [sdpa.unscaled] ...``), or "".

    The format is the grading checks' (a code in brackets at the start of the message); once
    ``coursekit.grading.failure_code`` exists, this defers to it.
    """
    found = _CODE.match(message.strip())
    return found["code"] if found else ""


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
    codes: str = ""  # the failing tests' diagnosis codes, space-separated, for grouping mistakes


@dataclass(frozen=True)
class GradeSettings:
    workers: int = 1
    force: bool = False
    memory_mb: int = 4096
    cell_timeout_s: float = 120.0
    notebook_timeout_s: float = 600.0
    progress: bool = True


def _sha256(paths: list[Path]) -> str:
    import hashlib

    digest = hashlib.sha256()
    for path in sorted(paths):
        digest.update(path.name.encode())
        digest.update(path.read_bytes() if path.is_file() else b"<missing>")
    return digest.hexdigest()


def _load_config(course: Path, settings: GradeSettings, staging: Path):
    """The course's nbgrader_config.py, with the trusted execution step in place of nbgrader's Execute."""
    from nbconvert.preprocessors import ClearMetadataPreprocessor
    from nbgrader.preprocessors import AssignLatePenalties, CheckCellMetadata, IgnorePattern, LimitOutput, SaveAutoGrades
    from traitlets.config import Config
    from traitlets.config.loader import PyFileConfigLoader

    from coursekit.trusted import TrustedExecute

    config = Config()
    config.merge(PyFileConfigLoader("nbgrader_config.py", path=str(course)).load_config())
    config.CourseDirectory.root = str(course)
    config.CourseDirectory.submitted_directory = str(staging)
    config.Autograde.autograde_preprocessors = [TrustedExecute, IgnorePattern, ClearMetadataPreprocessor,
                                                LimitOutput, SaveAutoGrades, AssignLatePenalties, CheckCellMetadata]
    config.OverwriteCells.add_missing_cells = True
    config.TrustedExecute.memory_mb = settings.memory_mb
    config.TrustedExecute.cell_timeout_s = settings.cell_timeout_s
    config.TrustedExecute.notebook_timeout_s = settings.notebook_timeout_s
    return config


def _grade_one_student(course: Path, assignment: str, student: str, staging: Path, settings: GradeSettings,
                       problems: dict[str, str]) -> list[GradeRow]:
    """Autograde one student's staged submission with nbgrader and the trusted executor; write feedback."""
    import logging
    import warnings

    from nbgrader.apps import NbGraderAPI
    from nbgrader.coursedir import CourseDirectory

    warnings.filterwarnings("ignore", module="nbgrader")  # SQLAlchemy session warnings nbgrader always emits
    config = _load_config(course, settings, staging)
    api = NbGraderAPI(coursedir=CourseDirectory(config=config), config=config)
    api.log.setLevel(logging.ERROR)
    outcome = api.autograde(assignment, student, force=True, create=True)
    expected = sorted(p.stem for p in (course / "solutions" / assignment).glob("*.ipynb"))
    if not outcome.get("success"):
        error = (outcome.get("error") or outcome.get("log") or "nbgrader failed").strip().splitlines()
        return [GradeRow(student, assignment, nb, None, 0.0, "failed",
                         problems.get(nb) or f"nbgrader could not grade it: {error[-1][:300]}") for nb in expected]
    scored = {r.notebook: r for r in read_results(course, assignment, [student])}
    rows = []
    for name in expected:
        result = scored.get(name)
        max_score = result.max_score if result else 0.0
        if name in problems:
            rows.append(GradeRow(student, assignment, name, None, max_score, "failed", problems[name]))
            continue
        graded = course / "autograded" / student / assignment / f"{name}.ipynb"
        status = json.loads(graded.read_text()).get("metadata", {}).get("coursekit", {}) if graded.exists() else {}
        if status.get("status") == "failed":
            rows.append(GradeRow(student, assignment, name, None, max_score, "failed", status.get("detail", "")))
        else:
            failing = [f"{g}: {c.error}" for g, c in sorted(result.cells.items()) if c.error] if result else []
            manual = ["written answers await a human grader"] if result and result.needs_manual_grade else []
            detail = "; ".join(["; ".join(failing)[:500] or "all tests passed", *manual])
            codes = sorted({failure_code(c.error) for c in result.cells.values() if c.error} - {""}) if result else []
            rows.append(GradeRow(student, assignment, name, result.score if result else 0.0, max_score, "graded", detail,
                                 " ".join(codes)))
    return rows


def _repair(submitted: dict, release: dict) -> dict:
    """Give every cell the nbgrader metadata of the release cell with the same grade_id.

    Edited flags or points would otherwise fail the whole submission ("inconsistent checksums");
    nbgrader itself then restores the test cells' source from the gradebook.
    """
    import copy

    reference = {c["metadata"]["nbgrader"]["grade_id"]: c for c in release["cells"] if "nbgrader" in c.get("metadata", {})}
    for cell in submitted.get("cells", []):
        meta = cell.setdefault("metadata", {})
        grade_id = meta.get("nbgrader", {}).get("grade_id") if isinstance(meta.get("nbgrader"), dict) else None
        if grade_id in reference:
            meta["nbgrader"] = copy.deepcopy(reference[grade_id]["metadata"]["nbgrader"])
            if cell.get("cell_type") != reference[grade_id]["cell_type"] and not meta["nbgrader"].get("solution"):
                cell.clear()
                cell.update(copy.deepcopy(reference[grade_id]))
        elif "nbgrader" in meta:
            del meta["nbgrader"]  # a cell nbgrader does not know: plain learner code
    _restore_deleted(submitted, release)
    return submitted


def _restore_deleted(submitted: dict, release: dict) -> None:
    """Put back release cells the learner deleted, each after the release cell that precedes it.

    nbgrader's own ``add_missing_cells`` fails when that preceding cell is a locked markdown cell.
    """
    import copy

    def grade_id(cell: dict) -> str | None:
        return cell.get("metadata", {}).get("nbgrader", {}).get("grade_id")

    present = {grade_id(c) for c in submitted["cells"]} - {None}
    previous = None
    for cell in release["cells"]:
        gid = grade_id(cell)
        if gid is None:
            continue
        if gid not in present:
            ids = [grade_id(c) for c in submitted["cells"]]
            at = ids.index(previous) + 1 if previous in ids else 0
            submitted["cells"].insert(at, copy.deepcopy(cell))
            present.add(gid)
        previous = gid


def _ensure_assignment(course: Path, assignment: str, reports: Path) -> Path:
    """Make sure the gradebook holds the current source of the assignment; return a folder with its release.

    The release is generated into reports/, never over exercises/, so grading cannot alter the course.
    """
    release = reports / ".release"
    marker = reports / ".source.sha256"
    source_hash = _sha256(list((course / "solutions" / assignment).glob("*.ipynb")))
    if not (marker.exists() and marker.read_text() == source_hash and (release / assignment).exists()):
        run_nbgrader(course, "generate_assignment", assignment, "--force",
                     f"--CourseDirectory.release_directory={release}")
        marker.write_text(source_hash)
    return release / assignment


def _stage(course: Path, assignment: str, student: str, release: Path, staging: Path) -> dict[str, str]:
    """Copy one student's notebooks into the staging area, repaired; return {notebook: why it failed}."""
    import shutil

    import nbformat

    problems: dict[str, str] = {}
    source = course / "submitted" / student / assignment
    target = staging / student / assignment
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir(parents=True)
    for path in source.iterdir():
        if path.is_file() and path.suffix != ".ipynb":
            shutil.copy(path, target / path.name)  # data files the notebook reads
    for release_nb in sorted(release.glob("*.ipynb")):
        path = source / release_nb.name
        if not path.exists():
            problems[release_nb.stem] = f"missing notebook: no {release_nb.name} in submitted/{student}/{assignment}/"
            continue
        try:
            submitted = json.loads(path.read_text())
            nbformat.validate(nbformat.from_dict(submitted))
        except (ValueError, UnicodeDecodeError, nbformat.ValidationError) as err:
            problems[release_nb.stem] = f"unreadable notebook ({type(err).__name__}: {str(err).splitlines()[0][:200]})"
            continue
        repaired = _repair(submitted, json.loads(release_nb.read_text()))
        (target / release_nb.name).write_text(json.dumps(repaired))
    return problems


def _write_csv(path: Path, rows: list[GradeRow]) -> None:
    import csv

    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(GRADE_COLUMNS)
        for row in rows:
            writer.writerow([row.student, row.assignment, row.notebook, "" if row.score is None else f"{row.score:g}",
                             f"{row.max_score:g}", row.status, row.codes, row.detail])


def grade_assignment(course_dir: Path, assignment: str, settings: GradeSettings = GradeSettings()) -> list[GradeRow]:
    """Grade every submission in ``submitted/<student>/<assignment>/`` and write ``reports/<assignment>/``.

    Returns the rows of ``grades.csv``. Submissions whose files, and the assignment's source, have not
    changed since the last run keep their previous result unless ``settings.force`` is set.
    """
    from concurrent.futures import ProcessPoolExecutor, as_completed
    from multiprocessing import get_context

    from tqdm.auto import tqdm

    course = Path(course_dir).resolve()
    if not (course / "nbgrader_config.py").exists():
        raise FileNotFoundError(f"{course} has no nbgrader_config.py: run `coursekit grade` at the course's root")
    if not list((course / "solutions" / assignment).glob("*.ipynb")):
        known = sorted(p.name for p in (course / "solutions").iterdir() if p.is_dir()) if (course / "solutions").exists() else []
        raise FileNotFoundError(f"no assignment '{assignment}' in solutions/; known assignments: {', '.join(known) or 'none'}")
    reports = course / "reports" / assignment
    reports.mkdir(parents=True, exist_ok=True)
    release = _ensure_assignment(course, assignment, reports)
    staging = reports / ".staging"
    source_hash = (reports / ".source.sha256").read_text()
    manifest_path = reports / "manifest.json"
    manifest = json.loads(manifest_path.read_text()) if manifest_path.exists() else {}

    submitted = course / "submitted"
    students = sorted(p.name for p in submitted.iterdir() if (p / assignment).is_dir()) if submitted.exists() else []
    rows: list[GradeRow] = []
    todo: dict[str, dict[str, str]] = {}
    fingerprints = {}
    for student in students:
        files = [p for p in (submitted / student / assignment).iterdir() if p.is_file()]
        fingerprints[student] = _sha256(files) + source_hash
        previous = manifest.get(student)
        if not settings.force and previous and previous["fingerprint"] == fingerprints[student]:
            rows.extend(GradeRow(**r) for r in previous["rows"])
        else:
            todo[student] = _stage(course, assignment, student, release, staging)

    if todo:
        context = get_context("spawn")  # each worker starts clean: no state shared with the others
        with ProcessPoolExecutor(max_workers=max(1, settings.workers), mp_context=context) as pool:
            futures = {pool.submit(_grade_one_student, course, assignment, s, staging, settings, problems): s
                       for s, problems in todo.items()}
            for future in tqdm(as_completed(futures), total=len(futures), desc=f"grading {assignment}",
                               unit="student", disable=not settings.progress):
                student = futures[future]
                try:
                    student_rows = future.result()
                except Exception as err:  # a crash while grading one student never stops the batch
                    student_rows = [GradeRow(student, assignment, nb.stem, None, 0.0, "failed",
                                             f"grader error: {type(err).__name__}: {err}"[:300])
                                    for nb in sorted(release.glob("*.ipynb"))]
                rows.extend(student_rows)
                manifest[student] = {"fingerprint": fingerprints[student], "rows": [r.__dict__ for r in student_rows]}
                manifest_path.write_text(json.dumps(manifest, indent=1))  # progress survives an interruption

    rows.sort(key=lambda r: (r.student, r.notebook))
    _write_csv(reports / "grades.csv", rows)
    return rows


def format_summary(rows: list[GradeRow], regraded: int | None = None) -> str:
    """A table for the terminal: one line per student and notebook, then the totals."""
    width = max([len(r.student) for r in rows] + [7])
    lines = [f"{'student':<{width}}  {'notebook':<12} {'score':>9}  {'status':<7} detail"]
    for r in rows:
        score = "-" if r.score is None else f"{r.score:g}/{r.max_score:g}"
        lines.append(f"{r.student:<{width}}  {r.notebook:<12} {score:>9}  {r.status:<7} {r.detail[:90]}")
    failed = sum(r.status == "failed" for r in rows)
    lines.append(f"{len(rows)} notebooks: {len(rows) - failed} graded, {failed} failed")
    return "\n".join(lines)


def export_gradebook(course_dir: Path, output: Path) -> list[dict[str, str]]:
    """One row per student, one column per assignment (automatic plus manual points): the CSV an LMS imports.

    A submission that ``coursekit grade`` could not grade is left blank with a note, never shown as 0.
    """
    import csv

    from nbgrader.api import Gradebook, MissingEntry

    course = Path(course_dir).resolve()
    with Gradebook(course_db_url(course)) as gradebook:
        assignments = sorted(a.name for a in gradebook.assignments)
        maxima = {a: gradebook.find_assignment(a).max_score for a in assignments}
        failed = {}
        for a in assignments:
            report = course / "reports" / a / "grades.csv"
            if report.exists():
                with report.open() as handle:
                    failed.update({(r["student"], a): r["detail"] for r in csv.DictReader(handle) if r["status"] == "failed"})
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
            row["total"] = f"{total:g}"
            row["notes"] = "; ".join(notes)
            rows.append(row)
    output.parent.mkdir(parents=True, exist_ok=True)
    with output.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["student_id", *assignments, "total", "notes"])
        writer.writeheader()
        writer.writerow({"student_id": "Points possible", **{a: f"{maxima[a]:g}" for a in assignments},
                         "total": f"{sum(maxima.values()):g}", "notes": ""})
        writer.writerows(rows)
    return rows
