"""coursekit.grading.multihead: each planted mistake earns its own diagnosis, the right answer passes every check,
locally and through the sandbox's proxies (as under `coursekit grade`)."""


import pytest
import torch
from torch import nn

import coursekit.attention
from coursekit import grading
from coursekit.grading import CheckFailed, ShortcutUsed
from tests.helpers import make_merge, make_mha, make_self_attention, make_split
from coursekit.autograder.execute import CheckedSandbox as Sandbox, Limits

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors: two threads only fight (see conftest.py)


MODULE_CHECKS = [grading.check_multihead_self_attention, grading.check_multihead_cross_attention,
                 grading.check_multihead_masks]


def test_correct_answers_pass(capsys):
    grading.check_self_attention(make_self_attention())
    grading.check_split_heads(make_split())
    grading.check_merge_heads(make_merge())
    for check in MODULE_CHECKS:
        check(make_mha())
    assert capsys.readouterr().out.count("✓") == 6


def codes_of(check, answer, seed=5):
    with pytest.raises(CheckFailed) as caught:
        check(answer, seed=seed)
    return caught.value.code


@pytest.mark.parametrize("mistake, code", [
    (dict(key_w="q"), "selfattn.keys-from-w-q"),
    (dict(project_values=False), "selfattn.values-unprojected"),
    (dict(mask="ignore"), "mask.ignored"),
    (dict(mask="invert"), "selfattn.symptom.leak"),
    (dict(scale=False), "selfattn.unscaled"),
])
def test_each_self_attention_mistake_gets_its_own_code(mistake, code):
    assert codes_of(grading.check_self_attention, make_self_attention(**mistake), seed=2) == code


def test_transposed_projection_is_explained():
    with pytest.raises(CheckFailed, match=r"\[selfattn.symptom.raised\] .*mat1 and mat2 shapes cannot be multiplied"):
        grading.check_self_attention(lambda x, w_q, w_k, w_v, key_padding_mask=None: (x @ w_q.T, x), seed=2)


@pytest.mark.parametrize("kind, code", [
    ("reshape", "heads.split-by-reshape"),
    ("strided", "heads.split-strided"),
    ("no-transpose", "heads.split-not-transposed"),
])
def test_each_split_mistake_gets_its_own_code(kind, code):
    assert codes_of(grading.check_split_heads, make_split(kind), seed=4) == code


@pytest.mark.parametrize("kind, code", [
    ("reshape", "heads.merge-by-reshape"),
    ("interleave", "heads.merge-interleaved"),
])
def test_each_merge_mistake_gets_its_own_code(kind, code):
    assert codes_of(grading.check_merge_heads, make_merge(kind), seed=4) == code


@pytest.mark.parametrize("mistake, check, code", [
    (dict(merge="reshape"), grading.check_multihead_self_attention, "mha.merge-by-reshape"),
    (dict(split="reshape"), grading.check_multihead_self_attention, "mha.split-by-reshape"),
    (dict(out_proj=False), grading.check_multihead_self_attention, "mha.no-out-proj"),
    (dict(scale="d"), grading.check_multihead_self_attention, "mha.scaled-by-embed-dim"),
    (dict(scale="none"), grading.check_multihead_self_attention, "mha.unscaled"),
    (dict(key_proj="q"), grading.check_multihead_self_attention, "mha.keys-from-q-proj"),
    (dict(average="none"), grading.check_multihead_self_attention, "mha.weights-per-head"),
    (dict(average="sum"), grading.check_multihead_self_attention, "mha.weights-summed"),
    (dict(length_from_query=True), grading.check_multihead_cross_attention, "mha.symptom.shape"),
    (dict(masks="ignore"), grading.check_multihead_masks, "mask.ignored"),
])
def test_each_module_mistake_gets_its_own_code(mistake, check, code):
    assert codes_of(check, make_mha(**mistake)) == code


def test_a_cross_attention_failure_says_whether_self_attention_passes():
    with pytest.raises(CheckFailed, match=r"Test 4 \(self-attention, S = T\) passes with this seed"):
        grading.check_multihead_cross_attention(make_mha(length_from_query=True), seed=5)


def test_masks_ignored_only_for_the_causal_mask_are_named():
    class NoCausal(make_mha()):
        def forward(self, query, key, value, key_padding_mask=None, attn_mask=None):
            return super().forward(query, key, value, key_padding_mask=key_padding_mask)

    assert codes_of(grading.check_multihead_masks, NoCausal, seed=6) == "mask.causal-ignored"


def test_the_grading_reference_is_torchs_module():
    """The mutants are nn.MultiheadAttention's maths with one change: with no change they are torch's module."""
    from coursekit.grading.multihead import MASKED_MHA, mha_variant
    for seed in range(3):
        for probe in MASKED_MHA.probes(seed):
            want = MASKED_MHA.expected(probe)
            got = mha_variant(probe["state"], probe["query"], probe["key"], probe["value"],
                              probe.get("key_padding_mask"), probe.get("attn_mask"))
            torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def test_a_renamed_projection_cannot_receive_the_weights():
    class Renamed(make_mha()):
        def __init__(self, embed_dim, num_heads):
            super().__init__(embed_dim, num_heads)
            self.o_proj = self.out_proj
            del self.out_proj

    with pytest.raises(CheckFailed, match="Could not give your [A-Za-z]* the reference's weights"):
        grading.check_multihead_self_attention(Renamed, seed=0)


def test_shortcuts_through_torch_or_coursekit_earn_nothing():
    class ViaTorch(nn.Module):
        def __init__(self, embed_dim, num_heads):
            super().__init__()
            self.inner = nn.MultiheadAttention(embed_dim, num_heads, batch_first=True)

        def forward(self, query, key, value, key_padding_mask=None, attn_mask=None):
            return self.inner(query, key, value, key_padding_mask=key_padding_mask, attn_mask=attn_mask)

    with pytest.raises(ShortcutUsed, match="torch.nn.MultiheadAttention"):
        grading.check_multihead_self_attention(ViaTorch, seed=0)

    class ViaCoursekit(coursekit.attention.MultiHeadAttention):
        pass

    with pytest.raises(ShortcutUsed, match="coursekit.attention.MultiHeadAttention"):
        grading.check_multihead_self_attention(ViaCoursekit, seed=0)

    reference = coursekit.attention.MultiHeadAttention(16, 4)
    with pytest.raises(ShortcutUsed, match="coursekit.attention.MultiHeadAttention"):
        grading.check_split_heads(lambda x, num_heads: reference._split_heads(x), seed=0)


def test_the_reference_scaled_dot_product_attention_is_allowed_here():
    """The notebook hands learners coursekit's scaled_dot_product_attention: using it is no shortcut."""
    grading.check_self_attention(make_self_attention(), seed=0)
