"""A learner's self-check: run a graded notebook from the top and report every test, before handing it in.

Unlike ``nbgrader validate`` (which exits 0 even when tests fail), :func:`main` exits non-zero when any
test fails or a test cell was changed, so it fits in a script or a pre-submit hook. It runs a copy:
the learner's file is never modified.

    coursekit check exercises/sdpa/sdpa.ipynb
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

import nbformat

CELL_TIMEOUT_S = 120


@dataclass(frozen=True)
class TestOutcome:
    grade_id: str
    points: float
    passed: bool
    message: str = ""


@dataclass(frozen=True)
class CheckReport:
    notebook: Path
    tests: list[TestOutcome]
    tampered: list[str]  # one sentence per changed or deleted test cell
    unanswered: list[str]  # grade ids of written answers still holding the stub

    @property
    def ok(self) -> bool:
        return not self.tampered and all(t.passed for t in self.tests)


def _nbgrader(cell) -> dict:
    return cell.get("metadata", {}).get("nbgrader", {})


def _pristine_release(notebook: Path) -> nbformat.NotebookNode | None:
    """The release this notebook came from: exercises/<assignment>/<name> of the course, as committed.

    When the learner works in the release file itself, the committed version comes from git.
    """
    for folder in notebook.resolve().parents:
        if (folder / "nbgrader_config.py").exists():
            release = folder / "exercises" / notebook.parent.name / notebook.name
            if release.exists() and release.resolve() != notebook.resolve():
                return nbformat.read(release, as_version=4)
            relative = release.relative_to(folder).as_posix()
            shown = subprocess.run(["git", "show", f"HEAD:{relative}"], cwd=folder, capture_output=True, text=True)
            return nbformat.reads(shown.stdout, as_version=4) if shown.returncode == 0 else None
    return None


def find_tampering(nb: nbformat.NotebookNode, release: nbformat.NotebookNode | None) -> list[str]:
    """Test cells that were edited (checksum or source differs) or deleted."""
    from nbgrader.utils import compute_checksum, is_grade, is_locked

    problems = []
    cells = {_nbgrader(c).get("grade_id"): c for c in nb.cells if _nbgrader(c)}
    for cell in nb.cells:
        meta = _nbgrader(cell)
        if meta and (is_grade(cell) or is_locked(cell)) and not meta.get("solution") and "checksum" in meta:
            if compute_checksum(cell) != meta["checksum"]:
                problems.append(f"cell '{meta.get('grade_id')}' was changed; undo your edits to it (or copy it back from the release)")
    for cell in release.cells if release is not None else []:
        meta = _nbgrader(cell)
        grade_id = meta.get("grade_id")
        if meta and (meta.get("grade") or meta.get("locked")) and not meta.get("solution"):
            if grade_id not in cells:
                problems.append(f"cell '{grade_id}' was deleted; copy it back from the release")
            elif cells[grade_id].source != cell.source and not any(grade_id in p for p in problems):
                problems.append(f"cell '{grade_id}' was changed; undo your edits to it (or copy it back from the release)")
    return problems


def run_checks(notebook: Path) -> CheckReport:
    """Execute a copy of ``notebook`` in its own folder and collect the outcome of every test cell."""
    import zmq
    from nbclient import NotebookClient
    from traitlets.config import Config

    notebook = Path(notebook)
    nb = nbformat.read(notebook, as_version=4)
    tampered = find_tampering(nb, _pristine_release(notebook))
    # Encrypt the kernel's channels where pyzmq can: ipykernel 7.4 warns on every start over plain TCP, a warning
    # a learner reading their check results could only worry about.
    config = Config({"KernelManager": {"transport_encryption": "auto" if zmq.has("curve") else "disabled"}})
    client = NotebookClient(nb, config=config, timeout=CELL_TIMEOUT_S, kernel_name="python3", allow_errors=True,
                            resources={"metadata": {"path": str(notebook.resolve().parent)}})
    client.execute()
    tests, unanswered = [], []
    for cell in nb.cells:
        meta = _nbgrader(cell)
        if not meta.get("grade"):
            continue
        if meta.get("solution") and cell.cell_type == "markdown":
            if cell.source.strip() in ("", "YOUR ANSWER HERE"):
                unanswered.append(meta["grade_id"])
            continue
        errors = [o for o in cell.get("outputs", []) if o.get("output_type") == "error"]
        message = f"{errors[0].get('ename')}: {errors[0].get('evalue')}" if errors else ""
        if errors and errors[0].get("ename") == "NotImplementedError":
            message = "not written yet: an answer cell above still raises NotImplementedError"
        tests.append(TestOutcome(meta["grade_id"], float(meta.get("points", 0)), not errors, message))
    return CheckReport(notebook, tests, tampered, unanswered)


def format_report(report: CheckReport) -> str:
    lines = [f"Checked {report.notebook} (a copy was run; your file is unchanged)", ""]
    width = max((len(t.grade_id) for t in report.tests), default=10)
    for t in report.tests:
        mark, earned = ("✓", t.points) if t.passed else ("✗", 0.0)
        lines.append(f"  {mark} {t.grade_id:<{width}}  {earned:g}/{t.points:g}")
        if t.message:
            lines.append(f"      {t.message}")
    total = sum(t.points for t in report.tests)
    earned = sum(t.points for t in report.tests if t.passed)
    lines += ["", f"Automatic points: {earned:g}/{total:g}"]
    for problem in report.tampered:
        lines.append(f"  ! {problem}")
    if report.unanswered:
        lines.append(f"Written answers still to write (graded by hand): {', '.join(report.unanswered)}")
    lines.append("All tests pass." if report.ok else "Not there yet: fix what is marked above and run the check again.")
    return "\n".join(lines)


def main(notebook: str) -> int:
    path = Path(notebook)
    if not path.is_file():
        print(f"No notebook at {path}: give the path of your .ipynb file, e.g. exercises/sdpa/sdpa.ipynb")
        return 2
    try:
        report = run_checks(path)
    except (nbformat.reader.NotJSONError, ValueError) as err:
        print(f"{path} could not be read as a notebook ({err}). If it was damaged, start again from the release in exercises/.")
        return 2
    print(format_report(report))
    return 0 if report.ok else 1
