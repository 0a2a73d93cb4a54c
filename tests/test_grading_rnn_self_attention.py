"""coursekit.grading.rnn_self_attention (the stage-2 notebook): the right answers pass, each planted mistake gets its
own diagnosis, a NaN is named as NaN, and an answer that calls the reference earns nothing."""

import pytest
import torch

from coursekit import grading
from coursekit.grading import CheckFailed, ShortcutUsed
from tests.helpers import make_block, make_general, make_masked_mean, make_stage2

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors: two threads only fight (see conftest.py)


def code_of(check, answer, seed=5):
    with pytest.raises(CheckFailed) as caught:
        check(answer, seed=seed)
    return caught.value.code


def test_right_answers_pass(capsys):
    grading.check_self_attention_block(make_block())
    grading.check_masked_mean(make_masked_mean())
    grading.check_general_attention(make_general())
    grading.check_self_attentive_rnn(make_stage2())
    assert capsys.readouterr().out.count("✓") == 4


@pytest.mark.parametrize("answer, code", [
    (make_block(residual=False), "selfblock.no-residual"),
    (make_block(norm="none"), "selfblock.no-norm"),
    (make_block(norm="before"), "selfblock.pre-norm"),
    (make_block(mask="none"), "selfblock.padding-ignored"),
    (make_block(tuple_out=True), "selfblock.symptom.return-type"),
])
def test_each_block_mistake_gets_its_own_code(answer, code):
    assert code_of(grading.check_self_attention_block, answer) == code


def test_what_the_block_writes_at_padded_positions_does_not_count():
    """Only real positions are read later; a block that zeroes the padded rows is still right."""
    Block = make_block()

    class ZeroesPadding(Block):
        def forward(self, annotations, key_padding_mask):
            return super().forward(annotations, key_padding_mask).masked_fill(key_padding_mask[..., None], 0.0)

    grading.check_self_attention_block(ZeroesPadding, seed=2)


@pytest.mark.parametrize("kind, code", [
    ("all", "realmean.includes-padding"),
    ("divide-by-S", "realmean.divides-by-length"),
    ("inverted", "realmean.mask-inverted"),
    ("last-real", "realmean.last-real-position"),
])
def test_each_mean_mistake_gets_its_own_code(kind, code):
    assert code_of(grading.check_masked_mean, make_masked_mean(kind)) == code


@pytest.mark.parametrize("answer, code", [
    (make_general(mask="none"), "general.padding-ignored"),
    (make_general(mask="inverted"), "general.mask-inverted"),
    (make_general(mask="after"), "general.masked-after-softmax"),
    (make_general(dim=1), "general.softmax-over-queries"),
    (make_general(scale=True), "general.scaled"),
    (make_general(values="projected"), "general.values-projected"),
])
def test_each_attention_mistake_gets_its_own_code(answer, code):
    assert code_of(grading.check_general_attention, answer) == code


@pytest.mark.parametrize("answer, code", [
    (make_stage2(start="zeros"), "stage2.decoder-starts-at-zero"),
    (make_stage2(combine="state first"), "stage2.state-first"),
    (make_stage2(squash=False), "stage2.no-tanh"),
])
def test_each_model_mistake_gets_its_own_code(answer, code):
    assert code_of(grading.check_self_attentive_rnn, answer) == code


def test_a_model_built_on_a_wrong_block_says_where_the_difference_starts():
    with pytest.raises(CheckFailed, match="encode's memory already differs") as caught:
        grading.check_self_attentive_rnn(make_stage2(block=make_block(residual=False)), seed=3)
    assert caught.value.code.startswith("stage2.")


def test_nan_is_named_as_nan():
    def nan_mean(memory, key_padding_mask):
        return make_masked_mean()(memory, key_padding_mask) * torch.nan

    with pytest.raises(CheckFailed, match=r"holds NaN in \d+ of \d+ entries") as caught:
        grading.check_masked_mean(nan_mean, seed=1)
    assert caught.value.code == "realmean.symptom.nan" and "by up to nan" not in str(caught.value)


def test_shortcuts_through_the_reference_earn_nothing():
    from coursekit.attention import GeneralAttention

    def through_coursekit(query, memory, W, key_padding_mask):
        module = GeneralAttention(W.size(0), W.size(1))
        module.W.weight.data.copy_(W)
        return module(query, memory, memory, key_padding_mask=key_padding_mask)

    with pytest.raises(ShortcutUsed, match="coursekit.attention"):
        grading.check_general_attention(through_coursekit, seed=0)
