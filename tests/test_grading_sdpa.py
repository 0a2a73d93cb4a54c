"""coursekit.grading.attention (the sdpa notebook): each planted mistake gets its own code and diagnosis, the right
answer passes every check, and what no mutant explains gets an accurate symptom."""

import pytest
import torch
import torch.nn.functional as F

import coursekit.attention
from coursekit import grading
from coursekit.grading import CheckFailed, ShortcutUsed
from coursekit.grading.attention import variant
from tests.helpers import make_attention

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors: two threads only fight (see conftest.py)

ALL_CHECKS = [grading.check_attention_shapes, grading.check_attention_values, grading.check_padding_mask,
              grading.check_causal_mask, grading.check_attention_matches_reference]


def failure(check, fn, seed=123) -> CheckFailed:
    with pytest.raises(CheckFailed) as caught:
        check(fn, seed=seed)
    return caught.value


def test_the_grading_reference_is_torchs_attention():
    """`variant` with no mistake, which every sdpa check compares against, is torch's fused attention."""
    g = torch.Generator().manual_seed(0)
    q, k, v = torch.randn(4, 8, 32, generator=g), torch.randn(4, 8, 32, generator=g), torch.randn(4, 8, 12, generator=g)
    kpm = coursekit.masks.padding_mask(torch.tensor([8, 5, 2, 7]))
    mask = coursekit.masks.causal_mask(8)
    out, weights = variant(q, k, v, attn_mask=mask, key_padding_mask=kpm)
    allowed = ~(mask[None] | kpm[:, None, :])
    torch.testing.assert_close(out, F.scaled_dot_product_attention(q, k, v, attn_mask=allowed), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(weights.sum(-1), torch.ones(4, 8))


@pytest.mark.parametrize("check", ALL_CHECKS)
def test_correct_answer_passes(check, capsys):
    check(make_attention())
    assert "✓" in capsys.readouterr().out


@pytest.mark.parametrize("mistake, check, code, words", [
    (dict(scale="none"), grading.check_attention_values, "sdpa.unscaled", "with no scaling"),
    (dict(scale="dk"), grading.check_attention_values, "sdpa.scaled-by-dk", "instead of sqrt(d_k)"),
    (dict(softmax_dim=-2), grading.check_attention_values, "sdpa.softmax-over-queries", "over the queries"),
    (dict(transpose_weights=True), grading.check_attention_shapes, "sdpa.weights-transposed", "(..., S, T)"),
    (dict(invert=True), grading.check_attention_matches_reference, "mask.inverted-combined", "the other way round"),
    (dict(invert=True), grading.check_padding_mask, "mask.inverted", "other way round"),
    (dict(invert=True), grading.check_causal_mask, "mask.inverted", "other way round"),
    (dict(use_masks=False), grading.check_padding_mask, "mask.ignored", "never applied"),
    (dict(use_masks=False), grading.check_causal_mask, "mask.ignored", "never applied"),
    (dict(mask_after_softmax=True), grading.check_padding_mask, "mask.after-softmax", "BEFORE the softmax"),
    (dict(mask_after_softmax=True), grading.check_causal_mask, "mask.after-softmax", "BEFORE the softmax"),
    (dict(scale="none"), grading.check_attention_matches_reference, "sdpa.unscaled", "with no scaling"),
    (dict(use_masks=False), grading.check_attention_matches_reference, "mask.ignored", "same with and without"),
])
def test_each_mistake_gets_its_own_code_and_diagnosis(mistake, check, code, words):
    error = failure(check, make_attention(**mistake))
    assert error.code == code, str(error)
    assert str(error).startswith(f"[{code}] ") and words in str(error)
    assert grading.failure_code(f"CheckFailed: {error}") == code


def test_a_mistake_in_the_scores_costs_nothing_in_the_mask_checks():
    """The mask checks judge the masked weights from the learner's own unmasked ones."""
    for mistake in (dict(scale="none"), dict(scale="dk")):
        answer = make_attention(**mistake)
        grading.check_attention_shapes(answer)
        grading.check_padding_mask(answer)
        grading.check_causal_mask(answer)


def test_softmax_over_the_queries_is_not_called_a_mask_mistake():
    """It used to be told to 'mask the scores before the softmax' by the padding check: it had done so."""
    error = failure(grading.check_padding_mask, make_attention(softmax_dim=-2))
    assert error.code.startswith("sdpa.symptom."), str(error)
    assert "softmax" not in str(error).split("]", 1)[1].lower()


def test_future_leakage_is_described_where_it_happens():
    def leaky(query, key, value, attn_mask=None, key_padding_mask=None):
        mask = attn_mask.clone() if attn_mask is not None else None
        if mask is not None:
            mask[2, 4] = False  # position 2 may see position 4
        return make_attention()(query, key, value, attn_mask=mask, key_padding_mask=key_padding_mask)
    error = failure(grading.check_causal_mask, leaky, seed=5)
    assert error.code == "sdpa.symptom.leak", str(error)
    assert "With a causal attn_mask, your weights give weight to 2 masked positions (query 2, key 4), the largest " \
           "0.327 at batch item 1, query 2, key 4; " \
           "the rows without such a leak are right" in str(error)


def test_a_function_that_raises_gets_the_inputs_the_expected_shapes_and_its_line():
    def no_unsqueeze(query, key, value, attn_mask=None, key_padding_mask=None):
        scores = query @ key.transpose(-2, -1)
        if key_padding_mask is not None:
            scores = scores.masked_fill(key_padding_mask, float("-inf"))  # (B, S) against (B, T, S)
        weights = scores.softmax(-1)
        return weights @ value, weights
    error = failure(grading.check_padding_mask, no_unsqueeze, seed=0)
    text = str(error)
    assert error.code == "sdpa.symptom.raised", text
    assert "RuntimeError" in text and "key_padding_mask (3, 7) bool" in text and "query (3, 5, 16)" in text
    assert "(3, 5, 8) and (3, 5, 7)" in text
    assert "scores = scores.masked_fill(key_padding_mask, float(\"-inf\"))" in text


def test_a_nan_is_named_with_where_it_first_appears():
    def nan_for_padding(query, key, value, attn_mask=None, key_padding_mask=None):
        out, weights = make_attention()(query, key, value, attn_mask, key_padding_mask)
        if key_padding_mask is not None:
            weights = weights.masked_fill(key_padding_mask[:, None, :], float("nan"))
        return out, weights
    error = failure(grading.check_padding_mask, nan_for_padding, seed=0)
    assert error.code == "sdpa.symptom.nan", str(error)
    assert "the first at batch item 1, query 0, key 4" in str(error)


def test_the_check_of_both_masks_says_which_other_tests_pass():
    def unscaled_and_transposed_mask(query, key, value, attn_mask=None, key_padding_mask=None):
        mask = attn_mask.T if attn_mask is not None else None
        return make_attention(scale="none")(query, key, value, attn_mask=mask, key_padding_mask=key_padding_mask)
    assert failure(grading.check_causal_mask, unscaled_and_transposed_mask).code == "mask.transposed"
    error = failure(grading.check_attention_matches_reference, unscaled_and_transposed_mask)
    assert error.code.startswith("sdpa.symptom."), str(error)
    assert "check_padding_mask (Test 3) passes and check_causal_mask (Test 4) fails" in str(error)


def test_wrong_return_type_is_explained():
    error = failure(grading.check_attention_shapes, lambda q, k, v, **kw: q)
    assert error.code == "sdpa.symptom.return-type"
    assert "returned one tensor of shape (5, 16); it must return a tuple (output, weights)" in str(error)


@pytest.mark.parametrize("shortcut, name", [
    (lambda q, k, v, **kw: coursekit.attention.scaled_dot_product_attention(q, k, v, **kw), "coursekit.attention"),
    (lambda q, k, v, **kw: (F.scaled_dot_product_attention(q, k, v), make_attention()(q, k, v)[1]),
     "torch.nn.functional.scaled_dot_product_attention"),
])
def test_shortcuts_through_the_reference_earn_nothing(shortcut, name):
    with pytest.raises(ShortcutUsed, match=name) as caught:
        grading.check_attention_values(shortcut, seed=1)
    assert caught.value.code == "sdpa.shortcut"


def test_a_renamed_reference_is_still_caught():
    from coursekit.attention import scaled_dot_product_attention as my_own_attention
    fused = torch.nn.functional.scaled_dot_product_attention
    with pytest.raises(ShortcutUsed):
        grading.check_attention_shapes(lambda q, k, v, **kw: my_own_attention(q, k, v))
    with pytest.raises(ShortcutUsed):
        grading.check_attention_shapes(lambda q, k, v, **kw: (fused(q, k, v), make_attention()(q, k, v)[1]))


def test_failures_report_a_reproducible_seed():
    assert "seed=77" in str(failure(grading.check_attention_values, make_attention(scale="none"), seed=77))
