"""Before grading: the assignment in the gradebook, and each submission staged (copied and repaired).

Grading never reads ``submitted/`` in place and never writes there. :func:`stage` copies one student's
folder into ``reports/<assignment>/.staging/`` (regular files only: a symbolic link could point anywhere on
the grader's disk), checks each notebook parses, and :func:`repair` gives every cell the metadata of its
release cell, so an edited flag or point value cannot fail the whole submission, and a deleted test cell
comes back. nbgrader then restores the test cells' source from the gradebook.
"""

from __future__ import annotations

import copy
import hashlib
import json
import shutil
from pathlib import Path

from coursekit.autograder.files import atomic_write
from coursekit.autograder.nbgrader_io import run_nbgrader


def fingerprint(paths: list[Path]) -> str:
    """A hash of the files' names and contents (what decides whether a submission changed)."""
    digest = hashlib.sha256()
    for path in sorted(paths):
        digest.update(path.name.encode())
        digest.update(path.read_bytes() if path.is_file() and not path.is_symlink() else b"<not a file>")
    return digest.hexdigest()


def ensure_assignment(course: Path, assignment: str, reports: Path) -> tuple[Path, str]:
    """Make sure the gradebook holds the current source of the assignment.

    Returns the folder with its release (generated into ``reports/``, never over ``exercises/``, so
    grading cannot alter the course) and the fingerprint of the source.
    """
    release = reports / ".release"
    marker = reports / ".source.sha256"
    source_hash = fingerprint(list((course / "solutions" / assignment).glob("*.ipynb")))
    if not (marker.exists() and marker.read_text() == source_hash and (release / assignment).exists()):
        run_nbgrader(course, "generate_assignment", assignment, "--force",
                     f"--CourseDirectory.release_directory={release}")
        atomic_write(marker, source_hash)
    return release / assignment, source_hash


def stage(course: Path, assignment: str, student: str, release: Path, staging: Path) -> dict[str, str]:
    """Copy one student's files into ``staging/<student>/<assignment>/``, notebooks repaired.

    Returns ``{notebook: why it cannot be graded}`` for notebooks that are missing or unreadable.
    """
    import nbformat

    problems: dict[str, str] = {}
    source = course / "submitted" / student / assignment
    target = staging / student / assignment
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir(parents=True)
    for path in source.iterdir():
        if path.suffix != ".ipynb" and path.is_file() and not path.is_symlink():
            shutil.copyfile(path, target / path.name)  # data files the notebook reads
    for release_nb in sorted(release.glob("*.ipynb")):
        path = source / release_nb.name
        if path.is_symlink():
            problems[release_nb.stem] = f"unreadable notebook: submitted/{student}/{assignment}/{path.name} is a link, not a file"
            continue
        if not path.exists():
            problems[release_nb.stem] = f"missing notebook: no {release_nb.name} in submitted/{student}/{assignment}/"
            continue
        try:
            submitted = json.loads(path.read_text())
            nbformat.validate(nbformat.from_dict(submitted))
        except (ValueError, UnicodeDecodeError, nbformat.ValidationError) as err:
            problems[release_nb.stem] = f"unreadable notebook ({type(err).__name__}: {str(err).splitlines()[0][:200]})"
            continue
        repaired = repair(submitted, json.loads(release_nb.read_text()))
        (target / release_nb.name).write_text(json.dumps(repaired))
    return problems


def repair(submitted: dict, release: dict) -> dict:
    """Give every cell the nbgrader metadata of the release cell with the same grade_id.

    Edited flags or points would otherwise fail the whole submission ("inconsistent checksums");
    nbgrader itself then restores the test cells' source from the gradebook.
    """
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
    restore_deleted(submitted, release)
    return submitted


def restore_deleted(submitted: dict, release: dict) -> None:
    """Put back release cells the learner deleted, each after the release cell that precedes it.

    nbgrader's own ``add_missing_cells`` fails when that preceding cell is a locked markdown cell.
    """
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
