"""``coursekit bundle``: what an instructor hands learners who work on their own machines.

One folder (and the same as a zip) that holds the releases, an installable coursekit wheel, the locked
requirements to install it with, the built book if there is one, and a START-HERE page. Never the sources in
``solutions/``: the bundle is made from the releases in ``exercises/`` and refuses any file that still carries
nbgrader's solution or hidden-test markers.

    attention-course-0.1.0/
        START-HERE.md              install, start, check, hand in, update
        course.json                course id, version, the assignments in course order, each release file's SHA-256
        requirements.txt           the learner lock plus this bundle's wheel, every file pinned by hash
        wheels/coursekit-0.1.0-py3-none-any.whl
        releases/<assignment>/     what learners copy into work/ (`coursekit start`)
        book/                      the book, built (index.html), when one was built

An update is a new bundle unpacked over the old one: it replaces releases/, the wheel and the book, and holds
no work/ folder, so learners' work is never touched.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import zipfile
from datetime import datetime, timezone
from pathlib import Path

from coursekit.autograder.nbgrader_io import CourseError
from coursekit.autograder.workspace import BUNDLE_MARKER, course_id_from_config, course_order, sha256_file

# Text nbgrader leaves only in sources: a release holding any of it would give answers or hidden tests away.
SOURCE_MARKERS = ("BEGIN SOLUTION", "END SOLUTION", "BEGIN HIDDEN TESTS", "END HIDDEN TESTS")
TORCH_PIN = "torch==2.13.0"


class BundleError(CourseError):
    """The bundle cannot be made as asked; the message says why."""


def build_wheel(course: Path, out_dir: Path) -> Path:
    """Build coursekit's wheel from the package source alone (pyproject.toml, README.md, coursekit/)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="coursekit-wheel-") as scratch:
        source = Path(scratch) / "src"
        source.mkdir()
        for name in ("pyproject.toml", "README.md"):
            shutil.copy(course / name, source / name)
        shutil.copytree(course / "coursekit", source / "coursekit",
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        # No build isolation: the course environment holds the setuptools the lock pins, and needs no network.
        proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
                               "--wheel-dir", str(out_dir), str(source)], capture_output=True, text=True)
        if proc.returncode != 0:
            raise BundleError(f"building coursekit's wheel failed:\n{proc.stdout}\n{proc.stderr}")
    wheels = sorted(out_dir.glob("coursekit-*.whl"))
    if len(wheels) != 1:
        raise BundleError(f"expected one coursekit wheel in {out_dir}, found {[w.name for w in wheels]}")
    with zipfile.ZipFile(wheels[0]) as wheel:
        stray = [n for n in wheel.namelist() if not n.startswith(("coursekit/", "coursekit-"))]
    if stray:
        raise BundleError(f"the wheel holds files outside the package: {stray[:5]}")
    return wheels[0]


def _copy_releases(course: Path, target: Path) -> dict[str, dict[str, str]]:
    releases = course / "exercises"
    assignments = sorted(p.name for p in releases.iterdir() if p.is_dir() and any(p.glob("*.ipynb"))) \
        if releases.is_dir() else []
    if not assignments:
        raise BundleError(f"no releases in {releases}: run `make release` first")
    files: dict[str, dict[str, str]] = {}
    for assignment in assignments:
        for path in sorted(p for p in (releases / assignment).rglob("*") if p.is_file()):
            relative = path.relative_to(releases / assignment)
            if any(part.startswith(".") or part == "__pycache__" for part in relative.parts):
                continue
            text = path.read_bytes().decode("utf-8", errors="replace")
            found = [m for m in SOURCE_MARKERS if m in text]
            if found:
                raise BundleError(f"{path.relative_to(course)} holds '{found[0]}': it is a source, not a release. "
                                  "Regenerate the releases with `make release`.")
            destination = target / assignment / relative
            destination.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(path, destination)
            files.setdefault(assignment, {})[relative.as_posix()] = sha256_file(path)
    return files


def _learner_requirements(course: Path, wheel: Path) -> str:
    lock = course / "requirements-learner.txt"
    if not lock.exists():
        raise BundleError(f"{lock} is missing: run `make lock`")
    return (lock.read_text().rstrip() + "\n\n# This bundle's own coursekit, pinned by hash like everything above\n"
            f"./wheels/{wheel.name} \\\n    --hash=sha256:{sha256_file(wheel)}\n")


def _start_here(course_id: str, version: str, assignments: list[str], has_book: bool) -> str:
    first = assignments[0]
    book = ("Open `book/index.html` in a browser: it is the course book, with every chapter's quiz, and works "
            "offline.\n\n" if has_book else "")
    return f"""# {course_id}: your copy of the course (version {version})

{book}## 1. Install (once, 5 to 10 minutes)

You need Python 3.11, 3.12, 3.13 or 3.14. In a terminal, in this folder:

```bash
python3 -m venv .venv
source .venv/bin/activate            # Windows: .venv\\Scripts\\activate
pip install {TORCH_PIN}              # Linux without an NVIDIA GPU: add --index-url https://download.pytorch.org/whl/cpu
pip install --require-hashes -r requirements.txt
```

The second line installs PyTorch. On Linux, PyPI's build brings several GB of NVIDIA libraries; the CPU-only
build from PyTorch's own index is about a tenth of that and is all the course needs. The last line installs
everything else at the exact versions the course was tested with, each file checked against its hash.

## 2. Start an assignment

```bash
coursekit start {first}               # or `coursekit start` for all of them
jupyter lab
```

`coursekit start` copies the release into `work/{first}/`. Work there: `releases/` is replaced when your
instructor sends an update, `work/` never is, and `coursekit start` never overwrites a file you already have.

## 3. Check your work

```bash
coursekit check                       # every notebook in work/: points so far, tests passing
coursekit check work/{first}/{first}.ipynb   # one notebook, every test with its diagnosis
```

## 4. Hand it in

```bash
coursekit handin {first} --student YOUR_ID
```

writes `handin/YOUR_ID-{first}-<time>.zip`. Send that file to your instructor (or upload it where they ask).
Handing in again later is fine: the latest hand-in counts.

## Updates

Unpack a new bundle over this folder (or into a new folder and move your `work/` across). Your `work/` is
kept; run `coursekit start` to pick up new assignments, and it tells you if a release you started has changed.
"""


def make_bundle(course_dir: Path, out_dir: Path, book: Path | None = None) -> Path:
    """Write ``<out_dir>/<name>/`` and ``<out_dir>/<name>.zip``; return the zip."""
    import coursekit

    course = Path(course_dir).resolve()
    if not (course / "nbgrader_config.py").exists():
        raise BundleError(f"{course} has no nbgrader_config.py: run `coursekit bundle` at the course's root")
    course_id = course_id_from_config(course / "nbgrader_config.py") or "course"
    name = f"{course_id}-{coursekit.__version__}"
    out_dir = Path(out_dir).resolve()
    target = out_dir / name
    partial = out_dir / f".{name}.partial"
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    try:
        files = _copy_releases(course, partial / "releases")
        wheel = build_wheel(course, partial / "wheels")
        (partial / "requirements.txt").write_text(_learner_requirements(course, wheel))
        if book is not None:
            if not (book / "index.html").exists():
                raise BundleError(f"{book} holds no built book (index.html); run `make book` or leave out --book")
            shutil.copytree(book, partial / "book", ignore=shutil.ignore_patterns(".doctrees", ".buildinfo",
                                                                                 "reports", "_sources"))
        rank = {name: i for i, name in enumerate(course_order(course))}
        assignments = sorted(files, key=lambda name: (rank.get(name, len(rank)), name))
        (partial / "START-HERE.md").write_text(_start_here(course_id, coursekit.__version__, assignments,
                                                           book is not None))
        (partial / BUNDLE_MARKER).write_text(json.dumps({
            "course_id": course_id, "version": coursekit.__version__, "assignments": assignments,
            "built": datetime.now(timezone.utc).isoformat(timespec="seconds"), "releases": files,
        }, indent=1))
        shutil.rmtree(target, ignore_errors=True)
        partial.replace(target)
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    archive = out_dir / f"{name}.zip"
    with zipfile.ZipFile(archive.with_suffix(".zip.partial"), "w", compression=zipfile.ZIP_DEFLATED) as zipped:
        for path in sorted(p for p in target.rglob("*") if p.is_file()):
            zipped.write(path, f"{name}/{path.relative_to(target).as_posix()}")
    archive.with_suffix(".zip.partial").replace(archive)
    return archive
