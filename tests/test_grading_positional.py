"""coursekit.grading.positional: each planted mistake earns its own diagnosis, the right answer passes every check,
locally and through the sandbox's proxies (as under `coursekit grade`)."""


import pytest
import torch

import coursekit.positional
from coursekit import grading
from coursekit.attention import scaled_dot_product_attention
from coursekit.grading import CheckFailed, ShortcutUsed
from tests.helpers import column_exponent, make_layer, make_offset, make_table
from coursekit.masks import causal_mask
from coursekit.autograder.execute import CheckedSandbox as Sandbox, Limits

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors: two threads only fight (see conftest.py)


def test_correct_answers_pass(capsys):
    grading.check_sinusoidal_table(make_table())
    grading.check_offset_matrix(make_offset())
    grading.check_permutation_equivariance(make_layer())
    grading.check_attention_with_positions(make_layer())
    assert capsys.readouterr().out.count("✓") == 4


def code_of(check, answer, seed):
    with pytest.raises(CheckFailed) as caught:
        check(answer, seed=seed)
    return caught.value.code


@pytest.mark.parametrize("fn, code", [
    (make_table(first="cos"), "table.swapped"),
    (make_table(layout="concat"), "table.concatenated"),
    (make_table(first="cos", layout="concat"), "table.concatenated-cos-first"),
    (make_table(exponent="i"), "table.exponent-i"),
    (column_exponent, "table.column-exponent"),
    (make_table(divide=False), "table.multiplied"),
    (make_table(start=1), "table.starts-at-one"),
    (make_table(transpose=True), "table.transposed"),
    (lambda max_len, d_model: make_table()(max_len, d_model) * 1.01, "table.symptom.scale"),
])
def test_each_table_mistake_gets_its_own_code(fn, code):
    assert code_of(grading.check_sinusoidal_table, fn, seed=7) == code


def test_a_transposed_table_is_named_under_every_seed():
    for seed in range(200):
        assert code_of(grading.check_sinusoidal_table, make_table(transpose=True), seed) == "table.transposed"


@pytest.mark.parametrize("fn, code", [
    (make_offset(sign=-1), "offset.backwards"),
    (make_offset(fixed_k=1), "offset.ignores-k"),
    (make_offset(bad_block=True), "offset.not-a-rotation"),
    (lambda k, d_model: torch.eye(d_model + 1), "offset.symptom.shape"),
])
def test_each_offset_mistake_gets_its_own_code(fn, code):
    assert code_of(grading.check_offset_matrix, fn, seed=7) == code


@pytest.mark.parametrize("mistake, check, code", [
    (dict(causal=True), grading.check_permutation_equivariance, "layer.causal"),
    (dict(always=True), grading.check_permutation_equivariance, "layer.symptom.not-equivariant"),
    (dict(ignore=True), grading.check_attention_with_positions, "layer.ignores-table"),
    (dict(where="output"), grading.check_attention_with_positions, "layer.positions-on-output"),
    (dict(where="qk"), grading.check_attention_with_positions, "layer.positions-on-queries-and-keys"),
    (dict(no_slice=True), grading.check_attention_with_positions, "layer.symptom.raised"),
])
def test_each_layer_mistake_gets_its_own_code(mistake, check, code):
    assert code_of(check, make_layer(**mistake), seed=8) == code


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
