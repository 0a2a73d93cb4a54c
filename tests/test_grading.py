"""coursekit.grading: each planted mistake earns its own diagnosis, and the right answer passes every check."""

import math

import pytest
import torch
import torch.nn.functional as F

import coursekit.attention
from coursekit import grading
from coursekit.grading import CheckFailed, ShortcutUsed


def make_attention(*, scale="sqrt", softmax_dim=-1, invert=False, use_masks=True, mask_after_softmax=False,
                   transpose_weights=False):
    """A learner's attention function, correct by default, with one mistake planted by a keyword."""
    def attention(query, key, value, attn_mask=None, key_padding_mask=None):
        d_k = query.size(-1)
        scores = query @ key.transpose(-2, -1)
        scores = {"sqrt": scores / math.sqrt(d_k), "none": scores, "dk": scores / d_k}[scale]
        forbidden = None
        if use_masks and attn_mask is not None:
            forbidden = attn_mask
        if use_masks and key_padding_mask is not None:
            kpm = key_padding_mask[:, None, :]
            forbidden = kpm if forbidden is None else forbidden | kpm
        if forbidden is not None and invert:
            forbidden = ~forbidden
        if forbidden is not None and not mask_after_softmax:
            scores = scores.masked_fill(forbidden, float("-inf"))
        weights = scores.softmax(softmax_dim)
        if forbidden is not None and mask_after_softmax:
            weights = weights.masked_fill(forbidden, 0.0)
        if transpose_weights:
            weights = weights.transpose(-2, -1)
        return weights @ value if not transpose_weights else weights.transpose(-2, -1) @ value, weights
    return attention


ALL_CHECKS = [grading.check_attention_shapes, grading.check_attention_values, grading.check_padding_mask,
              grading.check_causal_mask, grading.check_attention_matches_reference]


@pytest.mark.parametrize("check", ALL_CHECKS)
def test_correct_answer_passes(check, capsys):
    check(make_attention())
    assert "✓" in capsys.readouterr().out


@pytest.mark.parametrize("mistake, check, message", [
    (dict(scale="none"), grading.check_attention_values, "did not scale the scores"),
    (dict(scale="dk"), grading.check_attention_values, "scaled by d_k instead of sqrt"),
    (dict(softmax_dim=-2), grading.check_attention_values, "softmax ran over the queries"),
    (dict(transpose_weights=True), grading.check_attention_shapes, "transpose of the expected"),
    (dict(invert=True), grading.check_padding_mask, "padding mask is inverted"),
    (dict(invert=True), grading.check_causal_mask, "causal mask is inverted"),
    (dict(use_masks=False), grading.check_padding_mask, "ignores key_padding_mask"),
    (dict(use_masks=False), grading.check_causal_mask, "ignores attn_mask"),
    (dict(mask_after_softmax=True), grading.check_padding_mask, "mask the scores before the softmax"),
    (dict(mask_after_softmax=True), grading.check_causal_mask, "mask the scores before the softmax"),
    (dict(scale="none"), grading.check_attention_matches_reference, "differ from the reference"),
])
def test_each_mistake_gets_its_own_diagnosis(mistake, check, message):
    with pytest.raises(CheckFailed, match=message):
        check(make_attention(**mistake), seed=123)


def test_unscaled_answer_still_passes_the_mask_properties():
    """The mask checks test the learner's masking, not the scaling, so one mistake costs one part."""
    unscaled = make_attention(scale="none")
    grading.check_attention_shapes(unscaled)
    grading.check_padding_mask(unscaled)
    grading.check_causal_mask(unscaled)


def test_future_leakage_names_the_positions():
    def leaky(query, key, value, attn_mask=None, key_padding_mask=None):
        mask = attn_mask.clone() if attn_mask is not None else None
        if mask is not None:
            mask[2, 4] = False  # position 2 may see position 4
        return make_attention()(query, key, value, attn_mask=mask, key_padding_mask=key_padding_mask)
    with pytest.raises(CheckFailed, match=r"query 2 of batch item \d gives weight 0\.\d+ to key 4, a later position"):
        grading.check_causal_mask(leaky, seed=5)


def test_wrong_return_type_is_explained():
    with pytest.raises(CheckFailed, match="must return a tuple \\(output, weights\\)"):
        grading.check_attention_shapes(lambda q, k, v, **kw: q)


@pytest.mark.parametrize("shortcut, name", [
    (lambda q, k, v, **kw: coursekit.attention.scaled_dot_product_attention(q, k, v, **kw), "coursekit.attention"),
    (lambda q, k, v, **kw: (F.scaled_dot_product_attention(q, k, v), make_attention()(q, k, v)[1]),
     "torch.nn.functional.scaled_dot_product_attention"),
])
def test_shortcuts_through_the_reference_earn_nothing(shortcut, name):
    with pytest.raises(ShortcutUsed, match=name):
        grading.check_attention_values(shortcut, seed=1)


def test_a_renamed_reference_is_still_caught():
    from coursekit.attention import scaled_dot_product_attention as my_own_attention
    fused = torch.nn.functional.scaled_dot_product_attention
    with pytest.raises(ShortcutUsed):
        grading.check_attention_shapes(lambda q, k, v, **kw: my_own_attention(q, k, v))
    with pytest.raises(ShortcutUsed):
        grading.check_attention_shapes(lambda q, k, v, **kw: (fused(q, k, v), make_attention()(q, k, v)[1]))


def test_failures_report_a_reproducible_seed():
    with pytest.raises(CheckFailed, match="seed=77"):
        grading.check_attention_values(make_attention(scale="none"), seed=77)
