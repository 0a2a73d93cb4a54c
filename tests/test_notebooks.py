"""The graded notebooks, through the real nbgrader: releases match their sources, and the autograder
gives the reference solution full marks, the untouched release zero, and typical mistakes partial credit
with their own diagnosis."""

import json
import shutil
from pathlib import Path

import pytest

from coursekit.autograde import autograde
from tests.conftest import ASSIGNMENTS, ROOT

pytestmark = pytest.mark.slow
MARKERS = ("BEGIN SOLUTION", "END SOLUTION", "BEGIN HIDDEN TESTS", "END HIDDEN TESTS")


def load(path: Path) -> dict:
    return json.loads(path.read_text())


def test_every_assignment_has_a_release():
    assert ASSIGNMENTS, "no assignments found under solutions/"
    for assignment in ASSIGNMENTS:
        sources = sorted(p.name for p in (ROOT / "solutions" / assignment).glob("*.ipynb"))
        released = sorted(p.name for p in (ROOT / "exercises" / assignment).glob("*.ipynb"))
        assert released == sources, f"exercises/{assignment} is out of date: run `nbgrader generate_assignment {assignment} --force`"


@pytest.mark.parametrize("assignment", ASSIGNMENTS)
def test_committed_release_equals_what_nbgrader_generates(scratch_course, assignment):
    for generated in sorted((scratch_course / "exercises" / assignment).glob("*.ipynb")):
        committed = ROOT / "exercises" / assignment / generated.name
        assert load(committed) == load(generated), (
            f"{committed.relative_to(ROOT)} differs from what nbgrader generates from solutions/: it was edited "
            f"by hand or not regenerated. Run `nbgrader generate_assignment {assignment} --force`."
        )


def test_no_release_contains_a_solution_or_hidden_test():
    for path in (ROOT / "exercises").rglob("*"):
        if path.is_file():
            text = path.read_text(errors="replace")
            found = [m for m in MARKERS if m in text]
            assert not found, f"{path.relative_to(ROOT)} contains {found}"


def test_sources_carry_no_outputs():
    for path in (ROOT / "solutions").rglob("*.ipynb"):
        for cell in load(path)["cells"]:
            assert not cell.get("outputs"), f"{path.relative_to(ROOT)} has committed outputs; clear them"


# --- Grading the sdpa assignment as an instructor would --------------------------------------------

def solution_code(assignment: str, grade_id: str) -> str:
    """The instructor's answer for one cell, as a learner would type it (solution markers removed)."""
    source = load(ROOT / "solutions" / assignment / f"{assignment}.ipynb")
    cell = next(c for c in source["cells"] if c["metadata"].get("nbgrader", {}).get("grade_id") == grade_id)
    lines = "".join(cell["source"]).splitlines()
    return "\n".join(line for line in lines if line.strip() not in ("### BEGIN SOLUTION", "### END SOLUTION"))


def submit(course: Path, student: str, assignment: str, answers: dict[str, str]) -> None:
    """Put a copy of the release, with ``answers`` typed into its answer cells, where nbgrader collects it."""
    notebook = load(course / "exercises" / assignment / f"{assignment}.ipynb")
    for cell in notebook["cells"]:
        grade_id = cell["metadata"].get("nbgrader", {}).get("grade_id")
        if grade_id in answers:
            cell["source"] = answers[grade_id]
    target = course / "submitted" / student / assignment
    target.mkdir(parents=True, exist_ok=True)
    (target / f"{assignment}.ipynb").write_text(json.dumps(notebook))


def replace(text: str, old: str, new: str) -> str:
    assert old in text, f"the planted mistake needs {old!r} in the solution"
    return text.replace(old, new)


SDPA = solution_code("sdpa", "sdpa-answer") if "sdpa" in ASSIGNMENTS else ""
SDPA_SUBMISSIONS = {
    "reference": SDPA,
    "unscaled": replace(SDPA, " / math.sqrt(d_k)", ""),
    "inverted-masks": replace(replace(SDPA, "masked_fill(attn_mask,", "masked_fill(~attn_mask,"),
                              "masked_fill(key_padding_mask[", "masked_fill(~key_padding_mask["),
    "calls-reference": SDPA.split('"""\n')[0] + '"""\n    import coursekit.attention as ck\n'
                       "    return ck.scaled_dot_product_attention(query, key, value, attn_mask, key_padding_mask)\n",
}


@pytest.fixture(scope="module")
def sdpa_grades(scratch_course):
    course = scratch_course
    shutil.rmtree(course / "submitted", ignore_errors=True)
    written = "The dot products have variance d_k, so large scores saturate the softmax and kill its gradients."
    for student, code in SDPA_SUBMISSIONS.items():
        submit(course, student, "sdpa", {"sdpa-answer": code, "written-answer": written})
    submit(course, "blank", "sdpa", {})
    return {r.student: r for r in autograde(course, "sdpa")}


def test_reference_solution_earns_full_automatic_marks(sdpa_grades):
    result = sdpa_grades["reference"]
    assert result.max_score == 10
    assert result.score == 10, {g: c.error for g, c in result.cells.items() if c.error}
    assert result.needs_manual_grade, "the written answer must wait for a human grader"
    assert result.cells["written-answer"].score is None and result.cells["written-answer"].max_score == 2


def test_untouched_release_earns_zero(sdpa_grades):
    result = sdpa_grades["blank"]
    assert result.score == 0
    assert all("NotImplementedError" in c.error for g, c in result.cells.items() if g.startswith("test-"))
    assert result.cells["written-answer"].score == 0, "an unanswered written question scores 0 without a human"
    assert not result.needs_manual_grade


def test_missing_scaling_earns_partial_credit_with_its_diagnosis(sdpa_grades):
    result = sdpa_grades["unscaled"]
    assert result.score == 5  # shapes 1 + padding 2 + causal 2
    assert "did not scale the scores" in result.cells["test-values"].error
    assert result.cells["test-padding"].score == 2 and result.cells["test-causal"].score == 2


def test_inverted_masks_earn_partial_credit_with_their_diagnosis(sdpa_grades):
    result = sdpa_grades["inverted-masks"]
    assert result.score == 4  # shapes 1 + values 3
    assert "padding mask is inverted" in result.cells["test-padding"].error
    assert "causal mask is inverted" in result.cells["test-causal"].error


def test_calling_the_reference_earns_nothing(sdpa_grades):
    result = sdpa_grades["calls-reference"]
    assert result.score == 0
    assert "coursekit.attention" in result.cells["test-values"].error
