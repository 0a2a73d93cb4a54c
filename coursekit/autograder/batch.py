"""``coursekit grade``: every submission of an assignment, isolated, in parallel, idempotent, safe to kill.

One run is an ordered list of steps over plain data:

1. refuse unless the OS sandbox can be made here (:func:`coursekit.autograder.isolation.probe`), or the
   instructor asked for ``--no-isolation``;
2. take the assignment's lock (a second run waits), and put the current source in the gradebook;
3. plan: a submission whose files, the source and the isolation are unchanged since the manifest recorded
   it keeps its rows; the others are staged (:mod:`coursekit.autograder.staging`);
4. grade each staged submission in a worker process: autograde with the trusted execution step, write
   feedback, turn the results into rows (:func:`grade_student`);
5. after each student, record the rows in the manifest (atomically: a run killed at any moment loses at most
   the students in flight, and the next run grades just those); at the end, write ``grades.csv``.

Workers die with the run (``PR_SET_PDEATHSIG``), and each sandbox with its worker, so a run killed by
Ctrl-C or ``kill -9`` leaves nothing behind.
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import threading
from dataclasses import dataclass
from pathlib import Path

from coursekit.autograder import isolation as iso
from coursekit.autograder.files import RunLock, atomic_write
from coursekit.autograder.nbgrader_io import (Pipeline, autograde_student, check_assignment, find_course,
                                              read_results, write_feedback)
from coursekit.autograder.reports import GradeRow, failed_rows, student_rows, write_grades
from coursekit.autograder.staging import ensure_assignment, fingerprint, stage

PR_SET_PDEATHSIG = 1


@dataclass(frozen=True)
class GradeSettings:
    workers: int = 1
    force: bool = False
    memory_mb: int = 4096
    max_processes: int = 256
    cell_timeout_s: float = 120.0
    notebook_timeout_s: float = 600.0
    progress: bool = True
    isolated: bool = True  # False only for --no-isolation


class Interrupted(Exception):
    """The run was stopped (Ctrl-C or SIGTERM); what was graded is kept in the manifest."""

    def __init__(self, done: int, total: int) -> None:
        super().__init__(f"interrupted after grading {done} of {total} submissions; their results are saved, "
                         "and running the same command again grades the rest")


def _die_with_parent(parent: int, isolation: iso.Isolation) -> None:
    """Pool worker start-up: die when the run dies, leave Ctrl-C to the run, reuse its isolation probe."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:  # the run died before the line above
        os._exit(1)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if isolation.isolated:
        iso.remember(isolation)


def grade_student(pipeline: Pipeline, assignment: str, student: str, notebooks: list[str],
                  problems: dict[str, str]) -> list[GradeRow]:
    """Steps for one staged submission: autograde (sandbox + scoring), feedback, rows."""
    label = "bwrap" if pipeline.isolated else "none"
    failure = autograde_student(pipeline, assignment, student)
    if failure:
        return [GradeRow(student, assignment, nb, None, 0.0, "failed", problems.get(nb) or failure, label)
                for nb in notebooks]
    write_feedback(pipeline, assignment, student)
    results = read_results(pipeline.course, assignment, [student])
    return student_rows(pipeline.course, assignment, student, notebooks, results, problems, label)


def _reusable(previous: dict | None, fingerprint_now: str, settings: GradeSettings) -> bool:
    if settings.force or not previous or previous["fingerprint"] != fingerprint_now:
        return False
    # A result earned outside the sandbox could be faked: an isolated run grades it again (rows recorded before
    # coursekit had a sandbox carry no isolation at all).
    return not settings.isolated or all(r.get("isolation") == "bwrap" for r in previous["rows"])


def grade_assignment(course_dir: Path, assignment: str, settings: GradeSettings = GradeSettings()) -> list[GradeRow]:
    """Grade every submission in ``submitted/<student>/<assignment>/`` and write ``reports/<assignment>/``.

    Returns the rows of ``grades.csv``. Submissions whose files, and the assignment's source, have not
    changed since the last run keep their previous result unless ``settings.force`` is set.

    Raises:
        CourseError: not a course directory, or no such assignment.
        IsolationUnavailable: the sandbox cannot be made here (and ``settings.isolated``).
        Interrupted: Ctrl-C or SIGTERM; the students graded so far are kept.
    """
    course = find_course(course_dir)
    check_assignment(course, assignment)
    isolation = iso.probe() if settings.isolated else iso.NO_ISOLATION
    reports = course / "reports" / assignment
    with RunLock(reports / ".lock", f"coursekit grade {assignment}"):
        release, source_hash = ensure_assignment(course, assignment, reports)
        notebooks = sorted(p.stem for p in release.glob("*.ipynb"))
        manifest_path = reports / "manifest.json"
        manifest = json.loads(manifest_path.read_text()) if manifest_path.exists() else {}
        pipeline = Pipeline(course=course, staging=reports / ".staging", feedback=reports / ".feedback",
                            memory_mb=settings.memory_mb, max_processes=settings.max_processes,
                            cell_timeout_s=settings.cell_timeout_s,
                            notebook_timeout_s=settings.notebook_timeout_s, isolated=isolation.isolated)

        submitted = course / "submitted"
        students = sorted(p.name for p in submitted.iterdir() if (p / assignment).is_dir()) if submitted.exists() else []
        rows: list[GradeRow] = []
        todo: dict[str, dict[str, str]] = {}
        fingerprints = {}
        for student in students:
            fingerprints[student] = fingerprint(list((submitted / student / assignment).iterdir())) + source_hash
            previous = manifest.get(student)
            if _reusable(previous, fingerprints[student], settings):
                rows.extend(GradeRow(**{"isolation": "none", **r}) for r in previous["rows"])
            else:
                todo[student] = stage(course, assignment, student, release, pipeline.staging)

        def record(student: str, student_rows: list[GradeRow]) -> None:
            rows.extend(student_rows)
            manifest[student] = {"fingerprint": fingerprints[student], "rows": [r.__dict__ for r in student_rows]}
            atomic_write(manifest_path, json.dumps(manifest, indent=1))  # progress survives an interruption

        if todo:
            _run_pool(pipeline, assignment, notebooks, todo, settings, isolation, record)
        rows.sort(key=lambda r: (r.student, r.notebook))
        write_grades(reports / "grades.csv", rows)
    return rows


def _run_pool(pipeline: Pipeline, assignment: str, notebooks: list[str], todo: dict[str, dict[str, str]],
              settings: GradeSettings, isolation: iso.Isolation, record) -> None:
    from concurrent.futures import ProcessPoolExecutor, as_completed
    from multiprocessing import get_context

    from tqdm.auto import tqdm

    context = get_context("spawn")  # each worker starts clean: no state shared with the others
    pool = ProcessPoolExecutor(max_workers=max(1, settings.workers), mp_context=context,
                               initializer=_die_with_parent, initargs=(os.getpid(), isolation))
    done = 0
    main = threading.current_thread() is threading.main_thread()
    previous_term = signal.signal(signal.SIGTERM, _raise_interrupt) if main else None
    try:
        futures = {pool.submit(grade_student, pipeline, assignment, s, notebooks, problems): s
                   for s, problems in todo.items()}
        for future in tqdm(as_completed(futures), total=len(futures), desc=f"grading {assignment}",
                           unit="student", disable=not settings.progress):
            student = futures[future]
            try:
                result = future.result()
            except Exception as err:  # a crash while grading one student never stops the batch
                result = failed_rows(student, assignment, notebooks,
                                     f"grader error: {type(err).__name__}: {err}"[:300], isolation.label)
            record(student, result)
            done += 1
    except KeyboardInterrupt:
        for process in list(getattr(pool, "_processes", {}).values()):  # their sandboxes die with them
            process.kill()
        pool.shutdown(wait=False, cancel_futures=True)
        raise Interrupted(done, len(todo)) from None
    finally:
        if main:
            signal.signal(signal.SIGTERM, previous_term)
    pool.shutdown(wait=True)


def _raise_interrupt(signum, frame) -> None:
    raise KeyboardInterrupt
