"""Submissions that could not be graded, marked as such where the instructor grades by hand: the formgrader.

nbgrader records a submission whose notebook died, timed out or ran out of memory like any other, with its tests
at 0, and the formgrader shows that as a real zero. After each ``coursekit grade`` run, :func:`mark_not_graded`
flags every such notebook in the gradebook (the formgrader's *Flagged?* column shows it), turns its automatic
test scores into "needs manual grade" (no score rather than 0) and puts the reason in the comment box of its
first answer cell. A later run that grades the notebook clears all three. ``grades.csv``, ``coursekit export``
and ``coursekit report`` show such a submission with an empty score and the reason.
"""

from __future__ import annotations

from pathlib import Path

MARK = "Not graded automatically: "


def mark_not_graded(course_dir: Path, assignment: str, rows) -> int:
    """Flag (or unflag) each notebook of ``rows`` (``coursekit grade``'s rows) by its status; return how many are flagged."""
    from nbgrader.api import Gradebook, MissingEntry

    from coursekit.autograder.nbgrader_io import course_db_url

    flagged = 0
    with Gradebook(course_db_url(Path(course_dir))) as gradebook:
        for row in rows:
            try:
                notebook = gradebook.find_submission_notebook(row.notebook, assignment, row.student)
            except MissingEntry:
                continue  # it never reached nbgrader: grades.csv and the report list it
            marked = any((c.auto_comment or "").startswith(MARK) for c in notebook.comments)
            if row.status == "failed":
                notebook.flagged = True
                for grade in notebook.grades:
                    if grade.cell.cell_type == "code":
                        grade.auto_score, grade.needs_manual_grade = None, True
                for comment in notebook.comments[:1]:
                    comment.auto_comment = MARK + row.detail
                flagged += 1
            elif marked:
                notebook.flagged = False
                for comment in notebook.comments:
                    if (comment.auto_comment or "").startswith(MARK):
                        comment.auto_comment = None
        gradebook.db.commit()
    return flagged
