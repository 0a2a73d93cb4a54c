"""coursekit.grading.core and .diagnosis: failure codes, calling learner code so that nothing reaches the learner
bare, and the symptoms a check describes when no known mistake explains a result."""

import pytest
import torch

from coursekit import grading
from coursekit.grading.core import CheckFailed, invoke, register_task
from coursekit.grading.diagnosis import describe, shape_story
from coursekit.errors import SandboxError

TASK = register_task("a test task", grading.ShortcutPolicy(), code="demo")


# --- codes -------------------------------------------------------------------------------------------------------

def test_a_failure_carries_its_code_in_front_of_its_message():
    error = CheckFailed("Your weights are off.", code="demo.symptom.everywhere")
    assert error.code == "demo.symptom.everywhere"
    assert str(error) == "[demo.symptom.everywhere] Your weights are off."


def test_the_code_survives_a_round_trip_through_its_text():
    """The sandbox and nbgrader keep only an exception's type and text; the code is read back from the text."""
    text = str(CheckFailed("Your mask is inverted.", code="mask.inverted"))
    assert CheckFailed(text).code == "mask.inverted"
    assert grading.failure_code(f"CheckFailed: {text}") == "mask.inverted"
    assert grading.failure_code("ShortcutUsed: [sdpa.shortcut] Your answer calls ...") == "sdpa.shortcut"
    assert grading.failure_code("NotImplementedError: ") is None
    assert grading.failure_code("RuntimeError: [not a code] ...") is None


@pytest.mark.parametrize("bad", ["Sdpa.unscaled", "sdpa", "sdpa..x", "sdpa.un scaled", "sdpa.x_y"])
def test_malformed_codes_are_refused(bad):
    with pytest.raises(ValueError):
        CheckFailed("text", code=bad)


# --- calling learner code --------------------------------------------------------------------------------------

def broken(x, scale=1.0):
    y = x @ x  # (3, 5) @ (3, 5): the inner sizes differ
    return y * scale


def test_an_error_in_learner_code_becomes_a_sentence_with_inputs_expectation_and_line():
    with pytest.raises(CheckFailed) as caught:
        invoke(broken, TASK, (torch.zeros(3, 5),), {"scale": 2.0}, name="Your broken", params=("x",),
               expect="a tensor of shape (3, 3)", seed=4)
    text = str(caught.value)
    assert caught.value.code == "demo.symptom.raised"
    assert text.startswith("[demo.symptom.raised] Your broken raised RuntimeError: mat1 and mat2 shapes cannot be")
    line = broken.__code__.co_firstlineno + 1
    assert f"(at line {line} of broken: y = x @ x  # (3, 5) @ (3, 5): the inner sizes differ)" in text
    assert "It was called with x (3, 5), scale=2.0 and should return a tensor of shape (3, 3)." in text
    assert "seed=4" in text


@pytest.mark.parametrize("error", [NotImplementedError(), SandboxError("timed out"), CheckFailed("[a.b] c")])
def test_unwritten_answers_sandbox_failures_and_verdicts_pass_through(error):
    def raises():
        raise error
    with pytest.raises(type(error)):
        invoke(raises, TASK)


def test_a_learners_own_assertion_is_reported_not_counted_as_a_verdict():
    def asserts(x):
        assert x.dim() == 4, "expected 4 dims"
    with pytest.raises(CheckFailed) as caught:
        invoke(asserts, TASK, (torch.zeros(2, 3),), params=("x",))
    assert caught.value.code == "demo.symptom.raised"
    assert "AssertionError: expected 4 dims" in str(caught.value)


def test_arguments_are_copies():
    def writes(x):
        x += 1
        return x
    x = torch.zeros(3)
    assert torch.equal(invoke(writes, TASK, (x,)), torch.ones(3))
    assert torch.equal(x, torch.zeros(3))


# --- symptoms --------------------------------------------------------------------------------------------------

SIZES = {"B": 3, "T": 5, "S": 7}
AXES = ("batch item", "query", "key")


def test_shapes_are_told_as_letters_with_what_moved():
    assert shape_story((3, 7, 5), (3, 5, 7), SIZES) == (
        "shape (3, 7, 5), that is (B, S, T), where (B, T, S) = (3, 5, 7) is expected: dimensions 1 and 2 are swapped")
    assert shape_story((3, 5, 7, 1), (3, 5, 7), SIZES).endswith("an extra dimension of size 1 at position 3")
    assert shape_story((3, 5), (3, 5, 7), SIZES).endswith("")
    assert shape_story((3, 3, 7), (3, 5, 7), SIZES).endswith("dimension 1 has size 3 instead of 5 (3 is B)")


def symptom(got, want, **kw):
    return describe(got, want, what="Your weights", axes=AXES, sizes=SIZES, **kw)


def test_each_pattern_is_described_as_itself():
    want = torch.rand(3, 5, 7)
    assert symptom(want.transpose(1, 2), want).kind == "shape"
    assert symptom(want.long(), want).kind == "dtype"
    nan = want.clone()
    nan[1, 2:, 4] = float("nan")
    found = symptom(nan, want)
    assert found.kind == "nan" and "the first at batch item 1, query 2, key 4" in found.text
    assert symptom(want * 0.5, want).kind == "scale" and "times 0.5" in symptom(want * 0.5, want).text
    assert symptom(want + 0.25, want).kind == "shift"
    assert symptom(want[[2, 0, 1]], want).kind == "order"
    one_row = want.clone()
    one_row[:, 0] += 1
    assert symptom(one_row, want).text.count("query 0") >= 1 and symptom(one_row, want).kind == "partial"
    square = torch.rand(2, 6, 6)
    assert describe(square.transpose(1, 2), square, what="w").kind == "transposed"
    assert symptom(torch.rand(3, 5, 7), want).kind == "everywhere"


def test_mask_patterns_are_told_apart():
    want = torch.rand(3, 5, 7)
    forbidden = torch.zeros(3, 5, 7, dtype=torch.bool)
    forbidden[:, :, 5:] = True
    want = want.masked_fill(forbidden, 0.0)
    leaked = want.clone()
    leaked[2, 1, 6] = 0.3
    assert symptom(leaked, want, forbidden=forbidden).kind == "masked-positions"
    renormalised = want.clone()
    renormalised[2, 1] = renormalised[2, 1] * 0.7
    renormalised[2, 1, 6] = 0.3
    found = symptom(renormalised, want, forbidden=forbidden)
    assert found.kind == "leak" and "the largest 0.3 at batch item 2, query 1, key 6" in found.text
    allowed_only = want.clone()
    allowed_only[0, 0, 0] += 1
    assert symptom(allowed_only, want, forbidden=forbidden).kind == "unmasked-positions"
