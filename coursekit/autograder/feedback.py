"""Feedback pages a learner can open anywhere, offline: made by nbgrader itself, set up in ``nbgrader_config.py``.

``nbgrader generate_feedback`` (and the formgrader's *Generate Feedback*) turn each autograded notebook into
an HTML page. Out of the box that page shows the hidden tests' source and loads MathJax 2 from a CDN, so
formulas stay raw TeX offline. The course's ``nbgrader_config.py`` applies :func:`configure` so that every
nbgrader command makes the same page instead:

- hidden tests are cleared (``ClearHiddenTests``) before anything is written;
- math in Markdown cells is converted to MathML (:class:`MathToMathML`), which browsers draw natively: no
  script and no network request, in any browser a learner opens the page with;
- the page template is nbgrader's own feedback template, less its MathJax script.

Feedback is generated after the written answers are graded by hand (``coursekit feedback``, or the formgrader),
so the page carries the hand-graded points and comments as well as the automatic ones.
"""

from __future__ import annotations

import re
from pathlib import Path

from nbconvert.preprocessors import Preprocessor
from traitlets import Bool

TEMPLATE = "coursekit_feedback"
TEMPLATES = Path(__file__).parent / "feedback_templates"
PREPROCESSORS = [
    "nbgrader.preprocessors.GetGrades",
    "nbgrader.preprocessors.ClearHiddenTests",
    "coursekit.autograder.feedback.MathToMathML",
    "nbconvert.preprocessors.CSSHTMLHeaderPreprocessor",
]

# Code is left alone: fenced blocks, then inline code spans; then display math before inline math.
_CODE = re.compile(r"(^```.*?^```[ \t]*$|^~~~.*?^~~~[ \t]*$|`[^`\n]+`)", flags=re.S | re.M)
_MATH = re.compile(
    r"(?P<display>\$\$(?P<d1>.+?)\$\$|\\\[(?P<d2>.+?)\\\]|\\begin\{(?P<env>equation\*?|align\*?|gather\*?)\}"
    r"(?P<d3>.*?)\\end\{(?P=env)\})"
    r"|(?P<inline>(?<![\\$\w])\$(?=\S)(?P<i1>[^$\n]+?)(?<=\S)\$(?!\w)|\\\((?P<i2>.+?)\\\))",
    flags=re.S,
)


def tex_to_mathml(tex: str, display: bool) -> str | None:
    """MathML for one formula, or None when it cannot be converted (the TeX then stays as written)."""
    from latex2mathml.converter import convert

    try:
        return convert(tex.strip(), display="block" if display else "inline")
    except Exception:  # noqa: BLE001 (latex2mathml raises many kinds of error on TeX it does not know)
        return None


def _convert_prose(text: str) -> str:
    def replace(match: re.Match) -> str:
        if match.group("display"):
            tex = match.group("d1") or match.group("d2") or match.group(0)
            mathml = tex_to_mathml(tex, display=True)
            return f"\n\n{mathml}\n\n" if mathml else match.group(0)
        mathml = tex_to_mathml(match.group("i1") or match.group("i2"), display=False)
        return mathml or match.group(0)

    return _MATH.sub(replace, text)


def markdown_with_mathml(markdown: str) -> str:
    """Markdown with every formula outside code turned into MathML."""
    parts = _CODE.split(markdown)
    return "".join(part if i % 2 else _convert_prose(part) for i, part in enumerate(parts))


class MathToMathML(Preprocessor):
    """Turn the math of Markdown cells into MathML, so the page needs no MathJax."""

    enabled = Bool(True).tag(config=True)  # nbconvert's preprocessors are off unless enabled

    def preprocess_cell(self, cell, resources, index):
        if cell.cell_type == "markdown":
            cell.source = markdown_with_mathml(cell.source)
        return cell, resources


def configure(c) -> None:
    """Point nbgrader's feedback at the course's offline page (called from ``nbgrader_config.py``)."""
    import nbgrader

    nbgrader_templates = Path(nbgrader.__file__).parent / "server_extensions" / "formgrader" / "templates"
    c.GenerateFeedback.preprocessors = PREPROCESSORS
    c.ClearHiddenTests.enforce_metadata = False
    c.HTMLExporter.template_name = TEMPLATE
    c.HTMLExporter.extra_template_basedirs = [str(TEMPLATES), str(nbgrader_templates)]


def pending_manual_grades(course_dir: Path, assignment: str) -> list[str]:
    """``student/notebook`` of every submitted notebook whose written answers still wait for a human grader."""
    from nbgrader.api import Gradebook, MissingEntry

    from coursekit.autograder.nbgrader_io import course_db_url

    pending = []
    with Gradebook(course_db_url(Path(course_dir))) as gradebook:
        try:
            submissions = gradebook.assignment_submissions(assignment)
        except MissingEntry:
            return []
        for submission in submissions:
            pending += [f"{submission.student_id}/{nb.name}" for nb in submission.notebooks if nb.needs_manual_grade]
    return sorted(pending)


def generate_feedback(course_dir: Path, assignment: str, *, pending_ok: bool = False) -> list[Path]:
    """Write ``feedback/<student>/<assignment>/`` for every autograded submission, after the hand grading.

    nbgrader writes the pages into a scratch folder beside the reports; each page then replaces the old one
    with a rename, under the assignment's grading lock, so a reader (or a learner's download) never finds a
    page half-written and a ``coursekit grade`` run never changes the gradebook underneath.

    Raises:
        CourseError: not a course directory, an unknown assignment, or written answers still ungraded (unless
            ``pending_ok``; the message names them).
    """
    import shutil

    from coursekit.autograder.files import RunLock, replace_folder_files
    from coursekit.autograder.nbgrader_io import CourseError, check_assignment, find_course, run_nbgrader

    course = find_course(Path(course_dir))
    check_assignment(course, assignment)
    reports = course / "reports" / assignment
    with RunLock(reports / ".lock", f"coursekit grade {assignment}"):
        pending = pending_manual_grades(course, assignment)
        if pending and not pending_ok:
            shown = ", ".join(pending[:8]) + (f" and {len(pending) - 8} more" if len(pending) > 8 else "")
            raise CourseError(f"{len(pending)} notebooks still have written answers to grade by hand ({shown}); "
                              "grade them in the formgrader first, so the feedback carries their points, "
                              "or pass --pending-ok to send feedback without them")
        scratch = reports / ".feedback"
        shutil.rmtree(scratch, ignore_errors=True)
        try:
            run_nbgrader(course, "generate_feedback", assignment, "--force",
                         f"--CourseDirectory.feedback_directory={scratch}")
            for fresh in sorted(scratch.glob(f"*/{assignment}")):
                replace_folder_files(fresh, course / "feedback" / fresh.parent.name / assignment)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
    return sorted((course / "feedback").glob(f"*/{assignment}/*.html"))
