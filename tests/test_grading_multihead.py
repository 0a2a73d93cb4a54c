"""coursekit.grading.multihead: each planted mistake earns its own diagnosis, the right answer passes every check,
locally and through the sandbox's proxies (as under `coursekit grade`)."""


import pytest
from torch import nn

import coursekit.attention
from coursekit import grading
from coursekit.grading import CheckFailed, ShortcutUsed
from coursekit.sandbox import Limits, Sandbox
from tests.helpers import make_merge, make_mha, make_self_attention, make_split

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


@pytest.mark.parametrize("mistake, message", [
    (dict(key_w="q"), "projected the keys with w_q"),
    (dict(project_values=False), "Project the values too"),
    (dict(mask="ignore"), "Padding receives attention"),
    (dict(mask="invert"), "padding mask is inverted"),
    (dict(scale=False), r"did not scale the scores by 1 / sqrt\(Dk\)"),
])
def test_each_self_attention_mistake_gets_its_own_diagnosis(mistake, message):
    with pytest.raises(CheckFailed, match=message):
        grading.check_self_attention(make_self_attention(**mistake), seed=2)


def test_transposed_projection_is_explained():
    with pytest.raises(CheckFailed, match=r"\[selfattn.symptom.raised\] .*mat1 and mat2 shapes cannot be multiplied"):
        grading.check_self_attention(lambda x, w_q, w_k, w_v, key_padding_mask=None: (x @ w_q.T, x), seed=2)


@pytest.mark.parametrize("kind, message", [
    ("reshape", "mixes positions"),
    ("strided", "contiguous block of Dh features"),
    ("no-transpose", r"put the heads before the positions"),
])
def test_each_split_mistake_gets_its_own_diagnosis(kind, message):
    with pytest.raises(CheckFailed, match=message):
        grading.check_split_heads(make_split(kind), seed=4)


@pytest.mark.parametrize("kind, message", [
    ("reshape", "heads are merged in the wrong order"),
    ("interleave", "interleaves the heads' features"),
])
def test_each_merge_mistake_gets_its_own_diagnosis(kind, message):
    with pytest.raises(CheckFailed, match=message):
        grading.check_merge_heads(make_merge(kind), seed=4)


@pytest.mark.parametrize("mistake, check, message", [
    (dict(merge="reshape"), grading.check_multihead_self_attention, "heads are merged in the wrong order"),
    (dict(split="reshape"), grading.check_multihead_self_attention, "heads are split in the wrong order"),
    (dict(out_proj=False), grading.check_multihead_self_attention, "forgot the output projection"),
    (dict(scale="d"), grading.check_multihead_self_attention, r"scale by 1 / sqrt\(head_dim\)"),
    (dict(scale="none"), grading.check_multihead_self_attention, "did not scale the scores"),
    (dict(key_proj="q"), grading.check_multihead_self_attention, "projected the keys with q_proj"),
    (dict(average="none"), grading.check_multihead_self_attention, "one map per head"),
    (dict(average="sum"), grading.check_multihead_self_attention, "SUM of the 4 heads' weights"),
    (dict(length_from_query=True), grading.check_multihead_cross_attention, r"must be \(B, T, D\)"),
    (dict(masks="ignore"), grading.check_multihead_masks, "which is padding"),
    (dict(masks="invert"), grading.check_multihead_masks, "mask is inverted"),
])
def test_each_module_mistake_gets_its_own_diagnosis(mistake, check, message):
    with pytest.raises(CheckFailed, match=message):
        check(make_mha(**mistake), seed=5)


def test_masks_ignored_only_for_the_causal_mask_are_named_as_future_leakage():
    class NoCausal(make_mha()):
        def forward(self, query, key, value, key_padding_mask=None, attn_mask=None):
            return super().forward(query, key, value, key_padding_mask=key_padding_mask)

    with pytest.raises(CheckFailed, match="a later position"):
        grading.check_multihead_masks(NoCausal, seed=6)


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


LEARNER = '''
import torch
from torch import nn
from coursekit.attention import scaled_dot_product_attention

def split_heads(x, num_heads):
    B, L, D = x.shape
    return x.view(B, L, num_heads, D // num_heads).transpose(1, 2)

def merge_heads(x):
    B, H, L, Dh = x.shape
    return x.transpose(1, 2).reshape(B, L, H * Dh)

def wrong_merge(x):
    B, H, L, Dh = x.shape
    return x.reshape(B, L, H * Dh)

def self_attention(x, w_q, w_k, w_v, key_padding_mask=None):
    return scaled_dot_product_attention(x @ w_q, x @ w_k, x @ w_v, key_padding_mask=key_padding_mask)

class MultiHeadAttention(nn.Module):
    merge = staticmethod(merge_heads)

    def __init__(self, embed_dim, num_heads):
        super().__init__()
        self.embed_dim, self.num_heads, self.head_dim = embed_dim, num_heads, embed_dim // num_heads
        self.q_proj = nn.Linear(embed_dim, embed_dim)
        self.k_proj = nn.Linear(embed_dim, embed_dim)
        self.v_proj = nn.Linear(embed_dim, embed_dim)
        self.out_proj = nn.Linear(embed_dim, embed_dim)

    def forward(self, query, key, value, key_padding_mask=None, attn_mask=None):
        q = split_heads(self.q_proj(query), self.num_heads)
        k = split_heads(self.k_proj(key), self.num_heads)
        v = split_heads(self.v_proj(value), self.num_heads)
        out, weights = scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, key_padding_mask=key_padding_mask)
        return self.out_proj(self.merge(out)), weights.mean(dim=1)

class WrongMerge(MultiHeadAttention):
    merge = staticmethod(wrong_merge)

class ViaTorch(nn.Module):
    def __init__(self, embed_dim, num_heads):
        super().__init__()
        self.inner = nn.MultiheadAttention(embed_dim, num_heads, batch_first=True)

    def forward(self, query, key, value, key_padding_mask=None, attn_mask=None):
        return self.inner(query, key, value, key_padding_mask=key_padding_mask, attn_mask=attn_mask)
'''


def test_checks_work_on_the_sandbox_proxies(tmp_path, capsys):
    with Sandbox(str(tmp_path), Limits(memory_mb=2048, cell_timeout_s=60)) as box:
        assert box.run_cell(LEARNER)["error"] is None
        grading.check_self_attention(box.lookup("self_attention"), seed=0)
        grading.check_split_heads(box.lookup("split_heads"), seed=0)
        grading.check_merge_heads(box.lookup("merge_heads"), seed=0)
        for check in MODULE_CHECKS:
            check(box.lookup("MultiHeadAttention"))
        assert capsys.readouterr().out.count("✓") == 6
        with pytest.raises(CheckFailed, match="heads are merged in the wrong order"):
            grading.check_merge_heads(box.lookup("wrong_merge"), seed=0)
        with pytest.raises(CheckFailed, match="heads are merged in the wrong order"):
            grading.check_multihead_self_attention(box.lookup("WrongMerge"), seed=0)
        with pytest.raises(ShortcutUsed, match="torch.nn.MultiheadAttention"):
            grading.check_multihead_masks(box.lookup("ViaTorch"), seed=0)
