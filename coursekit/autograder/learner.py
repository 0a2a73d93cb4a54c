"""A learner's side of the course: start an assignment, see how far you are, hand your work in.

    coursekit start [ASSIGNMENT ...]          copy releases into work/ (never over your own work)
    coursekit check                           progress across every notebook in work/
    coursekit handin ASSIGNMENT --student ID  pack work/ASSIGNMENT into handin/<...>.zip for the instructor
    points_so_far()                           the closing cell of each graded notebook: its tests, totalled

A hand-in is a zip holding ``handin.json`` (who, what, when, each file's SHA-256) and the assignment's
files under ``<assignment>/``; the instructor's ``coursekit collect`` turns it into a submission in
nbgrader's own exchange format, so it is graded exactly like one sent with ``nbgrader submit``.
"""

from __future__ import annotations

import io
import json
import shutil
import zipfile
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

from coursekit.autograder.nbgrader_io import CourseError
from coursekit.autograder.workspace import NAME, Workspace, find_workspace, sha256_file

HANDIN_MANIFEST = "handin.json"
HANDIN_FORMAT = 1
MAX_HANDIN_BYTES = 50 * 2**20  # a notebook with a few plots is well under 5 MB
# nbgrader's exchange timestamp format (nbgrader.exchange.abc.Exchange.timestamp_format), in UTC
TIMESTAMP_FORMAT = "%Y-%m-%d %H:%M:%S.%f %Z"
_STARTED = ".started.json"  # in work/: the release each work copy was made from
_PROGRESS = ".progress.json"  # in work/: cached check results, keyed by each notebook's content


class LearnerError(CourseError):
    """Something the learner can fix; the message says what."""


def require_workspace(start: Path | str = ".") -> Workspace:
    workspace = find_workspace(start)
    if workspace is None:
        raise LearnerError(f"{Path(start).resolve()} is not inside a course: run this in the folder you unpacked the "
                           "course into (it holds course.json), or in the course repository.")
    return workspace


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


# ---------------------------------------------------------------------------------------------------
# start: copies that updates never overwrite
# ---------------------------------------------------------------------------------------------------

def start(workspace: Workspace, assignments: list[str] | None = None) -> list[str]:
    """Copy each assignment's release into ``work/<assignment>/``, keeping every file that is already there.

    Returns one line per assignment saying what happened. A release that changed since the learner's copy
    was made is reported, never merged into their work.
    """
    known = workspace.assignments()
    wanted = assignments or known
    unknown = [a for a in wanted if a not in known]
    if unknown:
        raise LearnerError(f"no assignment {', '.join(unknown)} in {workspace.releases}; "
                           f"the course has: {', '.join(known) or 'none'}")
    started_path = workspace.work / _STARTED
    started = _read_json(started_path)
    lines = []
    for assignment in wanted:
        release, work = workspace.release(assignment), workspace.work_folder(assignment)
        copied, kept, updated = [], [], []
        for source in sorted(p for p in release.rglob("*") if p.is_file() and ".ipynb_checkpoints" not in p.parts):
            relative = source.relative_to(release).as_posix()
            target = work / relative
            digest = sha256_file(source)
            if target.exists():
                kept.append(relative)
                if started.get(assignment, {}).get(relative, digest) != digest:
                    updated.append(relative)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
            target.chmod(0o644)
            started.setdefault(assignment, {})[relative] = digest
            copied.append(relative)
        where = work.relative_to(workspace.root).as_posix()
        if copied:
            lines.append(f"{assignment}: copied {', '.join(copied)} into {where}/" +
                         (f" (kept your {', '.join(kept)})" if kept else ""))
        else:
            lines.append(f"{assignment}: already started; your files in {where}/ are kept as they are")
        for relative in updated:
            lines.append(f"  note: the release of {relative} changed since you started. Your copy is kept; the new "
                         f"release is {(release / relative).relative_to(workspace.root).as_posix()}")
    started_path.parent.mkdir(parents=True, exist_ok=True)
    started_path.write_text(json.dumps(started, indent=1, sort_keys=True))
    return lines


# ---------------------------------------------------------------------------------------------------
# progress: every notebook at a glance
# ---------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class NotebookProgress:
    assignment: str
    notebook: str  # path relative to the course root
    state: str  # "not started", "untouched", "checked", "unreadable"
    earned: float = 0.0
    total: float = 0.0
    passed: int = 0
    tests: int = 0
    unanswered: int = 0
    tampered: int = 0
    note: str = ""

    @property
    def ok(self) -> bool:
        return self.state == "checked" and self.passed == self.tests and not self.tampered


def _release_points(release_notebook: Path) -> tuple[float, int]:
    """Automatic points and number of tests in a release, read from its nbgrader metadata."""
    cells = _read_json(release_notebook).get("cells", [])
    tests = [c["metadata"]["nbgrader"] for c in cells if c.get("cell_type") == "code"
             and c.get("metadata", {}).get("nbgrader", {}).get("grade")]
    return sum(float(t.get("points", 0)) for t in tests), len(tests)


def progress(workspace: Workspace, *, show_bar: bool = True) -> list[NotebookProgress]:
    """Check every notebook in ``work/`` (a notebook unchanged since the last check is not run again)."""
    import coursekit
    from coursekit.autograder.selfcheck import run_checks

    cache_path = workspace.work / _PROGRESS
    cache = _read_json(cache_path)
    plan = []
    for assignment in workspace.assignments():
        for release_nb in sorted(workspace.release(assignment).glob("*.ipynb")):
            plan.append((assignment, release_nb, workspace.work_folder(assignment) / release_nb.name))
    todo = [item for item in plan if item[2].exists() and sha256_file(item[2]) != sha256_file(item[1])
            and f"{coursekit.__version__}:{sha256_file(item[2])}" not in cache]
    bar = None
    if todo and show_bar:
        from tqdm.auto import tqdm
        bar = tqdm(total=len(todo), desc="checking your notebooks", unit="notebook")
    results = []
    for assignment, release_nb, work_nb in plan:
        name = work_nb.relative_to(workspace.root).as_posix()
        total, tests = _release_points(release_nb)
        if not work_nb.exists():
            results.append(NotebookProgress(assignment, name, "not started", total=total, tests=tests))
            continue
        digest = sha256_file(work_nb)
        if digest == sha256_file(release_nb):
            results.append(NotebookProgress(assignment, name, "untouched", total=total, tests=tests))
            continue
        key = f"{coursekit.__version__}:{digest}"
        if key not in cache:
            try:
                report = run_checks(work_nb)
                cache[key] = asdict(NotebookProgress(
                    assignment, name, "checked", earned=sum(t.points for t in report.tests if t.passed),
                    total=sum(t.points for t in report.tests), passed=sum(t.passed for t in report.tests),
                    tests=len(report.tests), unanswered=len(report.unanswered), tampered=len(report.tampered)))
            except Exception as err:  # noqa: BLE001 (a damaged notebook is reported in the table, not raised)
                cache[key] = asdict(NotebookProgress(assignment, name, "unreadable", total=total, tests=tests,
                                                     note=f"{type(err).__name__}: {str(err).splitlines()[0][:120]}"))
            if bar is not None:
                bar.update(1)
        results.append(NotebookProgress(**{**cache[key], "assignment": assignment, "notebook": name}))
    if bar is not None:
        bar.close()
    keep = {f"{coursekit.__version__}:{sha256_file(w)}" for _, _, w in plan if w.exists()}
    cache_path.parent.mkdir(parents=True, exist_ok=True)
    cache_path.write_text(json.dumps({k: v for k, v in cache.items() if k in keep}, indent=1))
    return results


def format_progress(workspace: Workspace, rows: list[NotebookProgress]) -> str:
    width = max([len(r.notebook) for r in rows] + [8])
    lines = [f"Your progress in {workspace.work} (automatic points; written answers are graded by hand)", ""]
    for r in rows:
        if r.state == "not started":
            status = f"not started: coursekit start {r.assignment}"
            points = f"-/{r.total:g}"
        elif r.state == "untouched":
            status, points = "started, nothing written yet", f"0/{r.total:g}"
        elif r.state == "unreadable":
            status, points = f"could not be checked ({r.note})", f"-/{r.total:g}"
        else:
            mark = "✓" if r.ok else "✗"
            status = f"{mark} {r.passed} of {r.tests} tests pass"
            if r.unanswered:
                status += f"; {r.unanswered} written answer{'s' if r.unanswered > 1 else ''} to write"
            if r.tampered:
                status += "; a test cell was changed"
            points = f"{r.earned:g}/{r.total:g}"
        lines.append(f"  {r.notebook:<{width}}  {points:>7}  {status}")
    earned = sum(r.earned for r in rows)
    total = sum(r.total for r in rows)
    done = sum(r.ok for r in rows)
    lines += ["", f"Total: {earned:g}/{total:g} automatic points; {done} of {len(rows)} notebooks pass every test.",
              "Details for one notebook: coursekit check work/<assignment>/<notebook>.ipynb"]
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------------
# handin: one zip the instructor's `coursekit collect` reads
# ---------------------------------------------------------------------------------------------------

def _handin_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and not any(
        part.startswith(".") for part in p.relative_to(folder).parts))


def handin(workspace: Workspace, assignment: str, student: str, out_dir: Path | None = None,
           now: datetime | None = None) -> tuple[Path, list[str]]:
    """Pack ``work/<assignment>/`` into ``handin/<student>-<assignment>-<time>.zip``; return it and any warnings."""
    import nbformat

    if not NAME.match(student):
        raise LearnerError(f"'{student}' cannot be a student id: use letters, digits and . _ @ - only "
                           "(the id your instructor gave you, e.g. your university login)")
    if assignment not in workspace.assignments():
        raise LearnerError(f"no assignment '{assignment}' in this course; it has: {', '.join(workspace.assignments())}")
    folder = workspace.work_folder(assignment)
    if not folder.is_dir():
        raise LearnerError(f"nothing to hand in: {folder} does not exist. Start with `coursekit start {assignment}`.")
    warnings, files = [], _handin_files(folder)
    for release_nb in sorted(workspace.release(assignment).glob("*.ipynb")):
        mine = folder / release_nb.name
        if not mine.exists():
            raise LearnerError(f"{mine} is missing: the assignment needs it. Restore it with "
                               f"`coursekit start {assignment}` (your other files are kept).")
        try:
            nbformat.validate(nbformat.read(mine, as_version=4))
        except Exception as err:  # noqa: BLE001 (any damage: tell the learner before the instructor finds out)
            raise LearnerError(f"{mine} is not a valid notebook ({type(err).__name__}); open it in JupyterLab and "
                               "save it again, or start over from the release.") from err
        if sha256_file(mine) == sha256_file(release_nb):
            warnings.append(f"{mine.name} is the release, unchanged: did you save your work?")
    size = sum(p.stat().st_size for p in files)
    if size > MAX_HANDIN_BYTES:
        raise LearnerError(f"{folder} holds {size / 2**20:.0f} MB; a hand-in may hold {MAX_HANDIN_BYTES / 2**20:.0f} MB. "
                           "Remove data files or model checkpoints you wrote there.")
    now = (now or datetime.now(timezone.utc)).astimezone(timezone.utc)
    manifest = {
        "format": HANDIN_FORMAT, "course_id": workspace.course_id, "assignment": assignment, "student": student,
        "timestamp": now.strftime(TIMESTAMP_FORMAT),
        "files": {p.relative_to(folder).as_posix(): sha256_file(p) for p in files},
    }
    out_dir = Path(out_dir) if out_dir else workspace.root / "handin"
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / f"{student}-{assignment}-{now.strftime('%Y%m%dT%H%M%SZ')}.zip"
    partial = target.with_suffix(".zip.partial")
    with zipfile.ZipFile(partial, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(HANDIN_MANIFEST, json.dumps(manifest, indent=1))
        for path in files:
            archive.write(path, f"{assignment}/{path.relative_to(folder).as_posix()}")
    partial.replace(target)  # a hand-in is either complete or absent
    return target, warnings


# ---------------------------------------------------------------------------------------------------
# points_so_far: the closing cell of every graded notebook
# ---------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class PointsSoFar:
    """The visible tests of one notebook, run now in the learner's kernel; shown as a table in JupyterLab."""

    notebook: str
    tests: tuple[tuple[str, float, bool, str], ...]  # (grade id, points, passed, first line of why not)
    written: int  # written answers, graded by hand

    @property
    def earned(self) -> float:
        return sum(points for _, points, passed, _ in self.tests if passed)

    @property
    def total(self) -> float:
        return sum(points for _, points, _, _ in self.tests)

    def _summary(self) -> str:
        note = (f"; {self.written} written answer{'s' if self.written != 1 else ''} graded by hand"
                if self.written else "")
        return f"Points so far: {self.earned:g} of {self.total:g} from the tests above{note}."

    def __repr__(self) -> str:
        lines = [f"{'✓' if passed else '✗'} {grade_id}  {points if passed else 0:g}/{points:g}"
                 + (f"  {why}" if why else "") for grade_id, points, passed, why in self.tests]
        return "\n".join([*lines, self._summary()])

    def _repr_html_(self) -> str:
        import html

        rows = "".join(
            f"<tr><td>{'✓' if passed else '✗'}</td><td><code>{html.escape(grade_id)}</code></td>"
            f"<td style='text-align:right'>{points if passed else 0:g} / {points:g}</td><td>{html.escape(why)}</td></tr>"
            for grade_id, points, passed, why in self.tests)
        return (f"<table><thead><tr><th></th><th>Test</th><th>Points</th><th>Why not yet</th></tr></thead>"
                f"<tbody>{rows}</tbody></table><p><b>{html.escape(self._summary())}</b> When you hand it in, the "
                "tests run again on fresh inputs, with hidden tests besides.</p>")


def _this_notebook(namespace: dict) -> Path | None:
    """The notebook this kernel runs: JupyterLab tells the kernel (``__session__``); else the one notebook here."""
    session = namespace.get("__session__")
    if isinstance(session, str) and session.endswith(".ipynb") and (Path.cwd() / Path(session).name).is_file():
        return Path.cwd() / Path(session).name
    here = sorted(Path.cwd().glob("*.ipynb"))
    return here[0] if len(here) == 1 else None


def points_so_far() -> PointsSoFar | str:
    """Run this notebook's visible test cells again, now, in your kernel, and total their points.

    The closing cell of every graded notebook calls this. It reads the test cells from the saved notebook, so
    it counts the tests as the file holds them; your answers come from the kernel, as you last ran them.
    """
    import os
    from contextlib import redirect_stderr, redirect_stdout

    if os.environ.get("COURSEKIT_GRADING"):
        return "(While grading, the grader runs the tests itself.)"
    try:
        from IPython import get_ipython
    except ImportError:
        get_ipython = lambda: None  # noqa: E731
    shell = get_ipython()
    if shell is None:
        return "Run this cell in Jupyter; in a terminal, `coursekit check NOTEBOOK` shows your points."
    path = _this_notebook(shell.user_ns)
    if path is None:
        return "Could not tell which notebook this is; `coursekit check NOTEBOOK` shows your points."
    cells = _read_json(path).get("cells", [])
    tests, written = [], 0
    for cell in cells:
        meta = cell.get("metadata", {}).get("nbgrader", {})
        if not meta.get("grade"):
            continue
        if meta.get("solution"):
            written += cell.get("cell_type") == "markdown"
            continue
        source = "".join(cell.get("source", ""))
        try:
            with redirect_stdout(io.StringIO()), redirect_stderr(io.StringIO()):
                exec(compile(shell.transform_cell(source), f"<test {meta.get('grade_id')}>", "exec"),  # noqa: S102
                     shell.user_ns)
            tests.append((meta.get("grade_id", "?"), float(meta.get("points", 0)), True, ""))
        except Exception as err:  # noqa: BLE001 (a failing test is what this cell reports)
            why = "not written yet" if isinstance(err, NotImplementedError) else \
                f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"[:200]
            tests.append((meta.get("grade_id", "?"), float(meta.get("points", 0)), False, why))
    return PointsSoFar(path.name, tuple(tests), written)
