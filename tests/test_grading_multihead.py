"""coursekit.grading.multihead: each planted mistake earns its own diagnosis, the right answer passes every check,
locally and through the sandbox's proxies (as under `coursekit grade`)."""

import math

import pytest
import torch
from torch import nn

import coursekit.attention
from coursekit import grading
from coursekit.attention import scaled_dot_product_attention
from coursekit.grading import CheckFailed, ShortcutUsed
from coursekit.autograder.execute import CheckedSandbox as Sandbox, Limits


def make_self_attention(*, key_w="k", project_values=True, mask="pass", scale=True):
    def self_attention(x, w_q, w_k, w_v, key_padding_mask=None):
        q = x @ w_q
        k = x @ (w_k if key_w == "k" else w_q)
        v = x @ w_v if project_values else x
        kpm = {"pass": key_padding_mask, "ignore": None,
               "invert": None if key_padding_mask is None else ~key_padding_mask}[mask]
        if mask == "invert" and kpm is not None:  # ~mask can leave whole rows masked: fill by hand, as learners do
            scores = (q @ k.transpose(-2, -1)).masked_fill(kpm[:, None, :], float("-inf")) / math.sqrt(q.size(-1))
            weights = scores.softmax(-1).nan_to_num(0.0)
            return weights @ v, weights
        return scaled_dot_product_attention(q, k, v, key_padding_mask=kpm, scale=None if scale else 1.0)
    return self_attention


def make_split(kind="right"):
    def split_heads(x, num_heads):
        B, L, D = x.shape
        if kind == "reshape":
            return x.reshape(B, num_heads, L, D // num_heads)
        if kind == "strided":
            return x.view(B, L, D // num_heads, num_heads).permute(0, 3, 1, 2)
        if kind == "no-transpose":
            return x.view(B, L, num_heads, D // num_heads)
        return x.view(B, L, num_heads, D // num_heads).transpose(1, 2)
    return split_heads


def make_merge(kind="right"):
    def merge_heads(x):
        B, H, L, Dh = x.shape
        if kind == "reshape":
            return x.reshape(B, L, H * Dh)
        if kind == "interleave":
            return x.permute(0, 2, 3, 1).reshape(B, L, H * Dh)
        return x.transpose(1, 2).reshape(B, L, H * Dh)
    return merge_heads


def make_mha(*, split="right", merge="right", out_proj=True, scale="dh", key_proj="k", average="mean", masks="pass",
             length_from_query=False):
    """A learner's MultiHeadAttention class, correct by default, with one mistake planted by a keyword."""
    split_heads, merge_heads = make_split(split), make_merge(merge)

    class MultiHeadAttention(nn.Module):
        def __init__(self, embed_dim, num_heads):
            super().__init__()
            self.embed_dim, self.num_heads, self.head_dim = embed_dim, num_heads, embed_dim // num_heads
            self.q_proj = nn.Linear(embed_dim, embed_dim)
            self.k_proj = nn.Linear(embed_dim, embed_dim)
            self.v_proj = nn.Linear(embed_dim, embed_dim)
            self.out_proj = nn.Linear(embed_dim, embed_dim)

        def forward(self, query, key, value, key_padding_mask=None, attn_mask=None):
            B, T, D = query.shape
            q = split_heads(self.q_proj(query), self.num_heads)
            k = split_heads(getattr(self, f"{key_proj}_proj")(key), self.num_heads)
            v = split_heads(self.v_proj(value), self.num_heads)
            if length_from_query:
                k, v = k[:, :, :T], v[:, :, :T]
            factor = {"dh": 1 / math.sqrt(self.head_dim), "d": 1 / math.sqrt(D), "none": 1.0}[scale]
            scores = q @ k.transpose(-2, -1) * factor  # (B, H, T, S)
            forbidden = torch.zeros(scores.shape, dtype=torch.bool)
            if key_padding_mask is not None and masks != "ignore":
                forbidden = forbidden | key_padding_mask[:, None, None, :]
            if attn_mask is not None and masks != "ignore":
                forbidden = forbidden | attn_mask
            if masks == "invert" and (key_padding_mask is not None or attn_mask is not None):
                forbidden = ~forbidden
            weights = scores.masked_fill(forbidden, float("-inf")).softmax(-1).nan_to_num(0.0)
            out = merge_heads(weights @ v)
            out = self.out_proj(out) if out_proj else out
            weights = {"mean": weights.mean(1), "none": weights, "sum": weights.sum(1)}[average]
            return out, weights
    return MultiHeadAttention


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
    with pytest.raises(CheckFailed, match=r"the queries are x @ w_q"):
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

    with pytest.raises(CheckFailed, match="Could not give your module the reference's weights"):
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
