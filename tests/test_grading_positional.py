"""coursekit.grading.positional: each planted mistake earns its own diagnosis, the right answer passes every check,
locally and through the sandbox's proxies (as under `coursekit grade`)."""

import math

import pytest
import torch

import coursekit.positional
from coursekit import grading
from coursekit.attention import scaled_dot_product_attention
from coursekit.grading import CheckFailed, ShortcutUsed
from coursekit.masks import causal_mask
from coursekit.autograder.execute import CheckedSandbox as Sandbox, Limits


def make_table(*, first="sin", layout="interleave", exponent="2i", start=0, divide=True, transpose=False):
    """A learner's sinusoidal_encoding, correct by default, with one mistake planted by a keyword."""
    def sinusoidal_encoding(max_len, d_model):
        pos = torch.arange(start, start + max_len, dtype=torch.float32)[:, None]
        i = torch.arange(d_model // 2, dtype=torch.float32)
        power = {"2i": 2 * i / d_model, "i": i / d_model}[exponent]
        angle = pos * (10000.0 ** (-power) if divide else 10000.0 ** power)
        a, b = (torch.sin(angle), torch.cos(angle)) if first == "sin" else (torch.cos(angle), torch.sin(angle))
        table = torch.cat([a, b], 1) if layout == "concat" else torch.stack([a, b], 2).reshape(max_len, d_model)
        return table.T if transpose else table
    return sinusoidal_encoding


def column_exponent(max_len, d_model):
    pos = torch.arange(max_len, dtype=torch.float32)[:, None]
    angle = pos / 10000.0 ** (torch.arange(d_model) / d_model)  # column j: 10000^(j/d)
    table = torch.sin(angle)
    table[:, 1::2] = torch.cos(angle[:, 1::2])
    return table


def make_offset(*, sign=1, fixed_k=None, bad_block=False):
    def offset_matrix(k, d_model):
        k = fixed_k if fixed_k is not None else k
        M = torch.zeros(d_model, d_model)
        for i in range(d_model // 2):
            angle = k / 10000.0 ** (2 * i / d_model)
            c, s = math.cos(angle), sign * math.sin(angle)
            M[2 * i, 2 * i], M[2 * i, 2 * i + 1] = c, s
            M[2 * i + 1, 2 * i], M[2 * i + 1, 2 * i + 1] = (s, c) if bad_block else (-s, c)
        return M
    return offset_matrix


def make_layer(*, where="input", ignore=False, always=False, causal=False, no_slice=False):
    """A learner's self_attention_layer, correct by default, with one mistake planted by a keyword."""
    table_always = coursekit.positional.sinusoidal_table(20, 16) if always else None

    def self_attention_layer(x, w_q, w_k, w_v, table=None):
        table = table if table is not None else table_always
        T = x.size(1)
        mask = causal_mask(T) if causal else None
        if table is not None and not ignore:
            pe = table if no_slice else table[:T]
            if where == "input":
                x = x + pe
            elif where == "qk":
                q, k = (x + pe) @ w_q, (x + pe) @ w_k
                return scaled_dot_product_attention(q, k, x @ w_v, attn_mask=mask)[0]
            elif where == "output":
                return scaled_dot_product_attention(x @ w_q, x @ w_k, x @ w_v, attn_mask=mask)[0] + pe
        return scaled_dot_product_attention(x @ w_q, x @ w_k, x @ w_v, attn_mask=mask)[0]
    return self_attention_layer


def test_correct_answers_pass(capsys):
    grading.check_sinusoidal_table(make_table())
    grading.check_offset_matrix(make_offset())
    grading.check_permutation_equivariance(make_layer())
    grading.check_attention_with_positions(make_layer())
    assert capsys.readouterr().out.count("✓") == 4


@pytest.mark.parametrize("fn, message", [
    (make_table(first="cos"), "sines and cosines are swapped"),
    (make_table(layout="concat"), "all the sines first"),
    (make_table(first="cos", layout="concat"), "all the cosines first"),
    (make_table(exponent="i"), r"exponent is 2i/d"),
    (column_exponent, "must share one frequency"),
    (make_table(divide=False), r"divide by it"),
    (make_table(start=1), "positions start at 1"),
    (make_table(transpose=True), r"one ROW per position"),
    (lambda max_len, d_model: make_table()(max_len, d_model) * 1.01, r"differs from the sinusoids by up to"),
])
def test_each_table_mistake_gets_its_own_diagnosis(fn, message):
    with pytest.raises(CheckFailed, match=message):
        grading.check_sinusoidal_table(fn, seed=7)


@pytest.mark.parametrize("fn, message", [
    (make_offset(sign=-1), "moves back by k"),
    (make_offset(fixed_k=1), "shifts by one position whatever k is"),
    (make_offset(bad_block=True), "not a rotation"),
    (lambda k, d_model: torch.eye(d_model + 1), r"must be a \(d_model, d_model\)"),
])
def test_each_offset_mistake_gets_its_own_diagnosis(fn, message):
    with pytest.raises(CheckFailed, match=message):
        grading.check_offset_matrix(fn, seed=7)


@pytest.mark.parametrize("mistake, check, message", [
    (dict(causal=True), grading.check_permutation_equivariance, "not permutation-equivariant"),
    (dict(always=True), grading.check_permutation_equivariance, "not permutation-equivariant"),
    (dict(ignore=True), grading.check_attention_with_positions, "ignores the table"),
    (dict(where="output"), grading.check_attention_with_positions, "added the positions to the output"),
    (dict(where="qk"), grading.check_attention_with_positions, "to the queries and keys only"),
    (dict(no_slice=True), grading.check_attention_with_positions, r"x \+ table\[:T\]"),
])
def test_each_layer_mistake_gets_its_own_diagnosis(mistake, check, message):
    with pytest.raises(CheckFailed, match=message):
        check(make_layer(**mistake), seed=8)


def test_the_layer_checks_are_independent():
    """Ignoring the table keeps the equivariance points; adding it everywhere keeps the with-positions points."""
    grading.check_permutation_equivariance(make_layer(ignore=True))
    grading.check_attention_with_positions(make_layer(always=True))


def test_shortcuts_through_the_reference_earn_nothing():
    with pytest.raises(ShortcutUsed, match="coursekit.positional"):
        grading.check_sinusoidal_table(coursekit.positional.sinusoidal_table, seed=0)
    encoding = coursekit.positional.SinusoidalPositionalEncoding(16, max_len=40)

    def via_module(x, w_q, w_k, w_v, table=None):
        x = encoding(x) if table is not None else x
        return scaled_dot_product_attention(x @ w_q, x @ w_k, x @ w_v)[0]

    with pytest.raises(ShortcutUsed, match="coursekit.positional"):
        grading.check_attention_with_positions(via_module, seed=0)


LEARNER = '''
import math
import torch
from coursekit.attention import scaled_dot_product_attention

def sinusoidal_encoding(max_len, d_model):
    angle = torch.arange(max_len)[:, None] * 10000.0 ** (-torch.arange(0, d_model, 2) / d_model)
    table = torch.zeros(max_len, d_model)
    table[:, 0::2], table[:, 1::2] = torch.sin(angle), torch.cos(angle)
    return table

def swapped(max_len, d_model):
    table = sinusoidal_encoding(max_len, d_model)
    return torch.stack([table[:, 1::2], table[:, 0::2]], 2).reshape(max_len, d_model)

def offset_matrix(k, d_model):
    M = torch.zeros(d_model, d_model)
    for i in range(d_model // 2):
        a = k / 10000.0 ** (2 * i / d_model)
        M[2 * i, 2 * i], M[2 * i, 2 * i + 1], M[2 * i + 1, 2 * i], M[2 * i + 1, 2 * i + 1] = (
            math.cos(a), math.sin(a), -math.sin(a), math.cos(a))
    return M

def self_attention_layer(x, w_q, w_k, w_v, table=None):
    if table is not None:
        x = x + table[: x.size(1)]
    return scaled_dot_product_attention(x @ w_q, x @ w_k, x @ w_v)[0]

def positions_on_output(x, w_q, w_k, w_v, table=None):
    out = scaled_dot_product_attention(x @ w_q, x @ w_k, x @ w_v)[0]
    return out + table[: x.size(1)] if table is not None else out
'''


def test_checks_work_on_the_sandbox_proxies(tmp_path, capsys):
    with Sandbox(str(tmp_path), Limits(memory_mb=2048, cell_timeout_s=60)) as box:
        assert box.run_cell(LEARNER)["error"] is None
        grading.check_sinusoidal_table(box.lookup("sinusoidal_encoding"), seed=0)
        grading.check_offset_matrix(box.lookup("offset_matrix"))
        grading.check_permutation_equivariance(box.lookup("self_attention_layer"))
        grading.check_attention_with_positions(box.lookup("self_attention_layer"))
        assert capsys.readouterr().out.count("✓") == 4
        with pytest.raises(CheckFailed, match="sines and cosines are swapped"):
            grading.check_sinusoidal_table(box.lookup("swapped"), seed=0)
        with pytest.raises(CheckFailed, match="added the positions to the output"):
            grading.check_attention_with_positions(box.lookup("positions_on_output"), seed=0)
