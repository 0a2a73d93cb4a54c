"""Where a learner's course lives on disk: the releases they were given, and the copies they work on.

One interface over the two ways a learner gets the course:

- a learner bundle (made by ``coursekit bundle``): ``course.json`` at its root, the releases in
  ``releases/<assignment>/``, an installable coursekit wheel, no solutions;
- the course repository itself: ``nbgrader_config.py`` at its root, the releases in ``exercises/<assignment>/``.

The course's order of assignments (which ``coursekit check`` lists progress in) is the order of the
introduction's table of graded notebooks (``book/intro.md``); a bundle records it in ``course.json``.

In both, a learner works in ``work/<assignment>/``: copies that no update of the releases ever overwrites
(a new bundle replaces ``releases/``, a ``git pull`` replaces ``exercises/``; neither touches ``work/``).
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path

BUNDLE_MARKER = "course.json"
COURSE_MARKER = "nbgrader_config.py"
WORK = "work"
# nbgrader's exchange names a hand-in "<student>+<assignment>+<time>": no "+" or path separators in either name.
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$")
ORDER_SOURCE = Path("book") / "intro.md"  # its table names each graded notebook's folder, in course order
_RELEASE_FOLDER = re.compile(r"`exercises/([A-Za-z0-9_.-]+)/`")


@dataclass(frozen=True)
class Workspace:
    """A course on a learner's disk: ``root`` holds the releases and the ``work/`` copies."""

    root: Path
    releases: Path
    course_id: str
    order: tuple[str, ...] = ()  # assignments in course order; any others follow, by name

    @property
    def work(self) -> Path:
        return self.root / WORK

    def assignments(self) -> list[str]:
        """Every assignment with a released notebook, in course order."""
        if not self.releases.is_dir():
            return []
        found = [p.name for p in self.releases.iterdir() if p.is_dir() and any(p.glob("*.ipynb"))]
        rank = {name: i for i, name in enumerate(self.order)}
        return sorted(found, key=lambda name: (rank.get(name, len(rank)), name))

    def release(self, assignment: str) -> Path:
        return self.releases / assignment

    def work_folder(self, assignment: str) -> Path:
        return self.work / assignment

    def assignment_of(self, notebook: Path) -> str | None:
        """The assignment a notebook belongs to, when it lies in ``work/<assignment>/`` or a release folder."""
        notebook = Path(notebook).resolve()
        for folder in (self.work.resolve(), self.releases.resolve()):
            if notebook.parent.parent == folder:
                return notebook.parent.name
        return None


def course_id_from_config(config: Path) -> str:
    """The course id that ``nbgrader_config.py`` sets, read without running the file."""
    match = re.search(r"""course_id\s*=\s*["']([^"']+)["']""", config.read_text())
    return match.group(1) if match else ""


def course_order(course_root: Path) -> tuple[str, ...]:
    """The assignments in course order: as the introduction's table of graded notebooks lists them."""
    source = Path(course_root) / ORDER_SOURCE
    if not source.is_file():
        return ()
    return tuple(dict.fromkeys(_RELEASE_FOLDER.findall(source.read_text(encoding="utf-8"))))


def find_workspace(start: Path | str = ".") -> Workspace | None:
    """The course that ``start`` (a notebook, a folder) lies in, or None outside any course."""
    start = Path(start).resolve()
    for folder in [start, *start.parents] if start.is_dir() else start.parents:
        if (folder / BUNDLE_MARKER).is_file():
            try:
                meta = json.loads((folder / BUNDLE_MARKER).read_text())
            except ValueError:
                meta = {}
            order = meta.get("assignments") if isinstance(meta.get("assignments"), list) else []
            return Workspace(folder, folder / "releases", str(meta.get("course_id", "")),
                             tuple(a for a in order if isinstance(a, str)))
        if (folder / COURSE_MARKER).is_file():
            return Workspace(folder, folder / "exercises", course_id_from_config(folder / COURSE_MARKER),
                             course_order(folder))
    return None


def sha256_file(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()
