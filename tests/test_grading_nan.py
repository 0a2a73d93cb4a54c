"""A result that holds NaN is named as NaN by every check that reads values: never "differs by up to nan"."""

import re

import pytest
import torch

from coursekit import grading
from tests import helpers as h

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors: two threads only fight (see conftest.py)


def nan_everywhere(value):
    if isinstance(value, torch.Tensor) and value.is_floating_point():
        return torch.full_like(value, float("nan"))
    if isinstance(value, tuple):
        return tuple(nan_everywhere(v) for v in value)
    return value


def with_nan(answer):
    """The right answer with every float it returns replaced by NaN (a module's forward, or a function)."""
    if isinstance(answer, type):
        class Nan(answer):
            def forward(self, *args, **kwargs):
                return nan_everywhere(super().forward(*args, **kwargs))
        if hasattr(answer, "score"):  # AdditiveAttention: its scores are checked on their own
            Nan.score = lambda self, *args, **kwargs: nan_everywhere(answer.score(self, *args, **kwargs))
        Nan.__name__ = answer.__name__
        return Nan
    return lambda *args, **kwargs: nan_everywhere(answer(*args, **kwargs))


# The checks that compare values (the shape-only, mask, integer and pair checks cannot see a NaN, or return ints).
VALUE_CHECKS = [
    (grading.check_attention_values, h.make_attention),
    (grading.check_attention_matches_reference, h.make_attention),
    (grading.check_masked_softmax, h.make_masked_softmax),
    (grading.check_additive_scores, h.make_additive),
    (grading.check_self_attention, h.make_self_attention),
    (grading.check_split_heads, h.make_split),
    (grading.check_merge_heads, h.make_merge),
    (grading.check_multihead_self_attention, h.make_mha),
    (grading.check_sinusoidal_table, h.make_table),
    (grading.check_offset_matrix, h.make_offset),
    (grading.check_permutation_equivariance, h.make_layer),
    (grading.check_attention_with_positions, h.make_layer),
    (grading.check_encoder_block, h.make_encoder),
    (grading.check_transformer_model, h.make_model),
    (grading.check_pretraining_loss, h.make_loss),
    (grading.check_self_attention_block, h.make_block),
    (grading.check_masked_mean, h.make_masked_mean),
    (grading.check_general_attention, h.make_general),
    (grading.check_self_attentive_rnn, h.make_stage2),
    (grading.check_learned_positions, h.make_learned),
    (grading.check_sinusoidal_positions, h.make_sinusoidal),
    (grading.check_scaled_embedding, h.make_embed),
    (grading.check_attention_without_rnn, h.make_stage3),
]


@pytest.mark.parametrize("check, make", VALUE_CHECKS, ids=[c.__name__ for c, _ in VALUE_CHECKS])
def test_nan_is_named_as_nan(check, make):
    with pytest.raises(grading.CheckFailed) as caught:
        check(with_nan(make()), seed=3)
    message = str(caught.value).split("] ", 1)[1]  # the text after the code, whose last word may be "nan"
    assert "NaN" in message, message
    assert not re.search(r"\bnan\b", message), f"a NaN shown as a number: {message}"
