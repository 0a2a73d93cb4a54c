"""coursekit.grading.attention_without_rnn (the stage-3 notebook): the right answers pass, each planted mistake gets
its own diagnosis (an out-of-range position refused with the right error, a sinusoidal table that would be trained),
and an answer that calls the reference earns nothing."""

import pytest
import torch

from coursekit import grading
from coursekit.grading import CheckFailed, ShortcutUsed
from tests.helpers import make_embed, make_learned, make_sinusoidal, make_stage3

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors: two threads only fight (see conftest.py)


def code_of(check, answer, seed=5):
    with pytest.raises(CheckFailed) as caught:
        check(answer, seed=seed)
    return caught.value.code


def test_right_answers_pass(capsys):
    grading.check_learned_positions(make_learned())
    grading.check_sinusoidal_positions(make_sinusoidal())
    grading.check_sinusoidal_positions(make_sinusoidal(persistent=True))  # a saved buffer is fine too
    grading.check_scaled_embedding(make_embed())
    grading.check_attention_without_rnn(make_stage3())
    grading.check_attention_without_rnn(make_stage3(sinusoidal=make_sinusoidal(persistent=True)))
    assert capsys.readouterr().out.count("✓") == 6


@pytest.mark.parametrize("answer, code", [
    (make_learned(use_offset=False), "learned.ignores-offset"),
    (make_learned(added=False), "learned.not-added"),
    (make_learned(check="wrap"), "learned.no-error"),
    (make_learned(check="none"), "learned.wrong-error"),
    (make_learned(check="off-by-one"), "learned.refuses-the-last-rows"),
    (make_learned(attribute="table"), "learned.symptom.parameters"),
])
def test_each_learned_mistake_gets_its_own_code(answer, code):
    assert code_of(grading.check_learned_positions, answer) == code


def test_the_wrong_error_names_what_was_raised_and_what_to_raise():
    with pytest.raises(CheckFailed, match=r"raised IndexError.*raise a ValueError"):
        grading.check_learned_positions(make_learned(check="none"), seed=1)


@pytest.mark.parametrize("answer, code", [
    (make_sinusoidal(trainable=True), "sines.trainable"),
    (make_sinusoidal(use_offset=False), "sines.ignores-offset"),
])
def test_each_sinusoidal_mistake_gets_its_own_code(answer, code):
    assert code_of(grading.check_sinusoidal_positions, answer) == code


@pytest.mark.parametrize("answer, code", [
    (make_embed(scale="none"), "embed.unscaled"),
    (make_embed(scale="sqrt(V)"), "embed.scaled-by-vocabulary"),
    (make_embed(order="scale the sum"), "embed.scaled-after-positions"),
    (lambda ids, weight, table=None: make_embed()(ids, weight, table) * torch.nan, "embed.symptom.nan"),
])
def test_each_embedding_mistake_gets_its_own_code(answer, code):
    assert code_of(grading.check_scaled_embedding, answer) == code


@pytest.mark.parametrize("answer, code", [
    (make_stage3(scale=False), "stage3.unscaled"),
    (make_stage3(target_positions=False), "stage3.positions-on-source-only"),
    (make_stage3(memory_mask=False), "stage3.decoder-ignores-padding"),
    (make_stage3(learned=make_learned(use_offset=False)), None),  # offset 0 everywhere in this model: still right
])
def test_each_model_mistake_gets_its_own_code(answer, code):
    if code is None:
        grading.check_attention_without_rnn(answer, seed=5)
    else:
        assert code_of(grading.check_attention_without_rnn, answer) == code


def test_shortcuts_through_the_reference_earn_nothing():
    from coursekit.positional import LearnedPositionalEncoding

    class ViaCoursekit(torch.nn.Module):
        def __init__(self, d_model, max_len):
            super().__init__()
            self.inner = LearnedPositionalEncoding(d_model, max_len)

        def forward(self, x, offset=0):
            return self.inner(x, offset=offset)

    with pytest.raises(ShortcutUsed, match="coursekit.positional"):
        grading.check_learned_positions(ViaCoursekit, seed=0)

    class Subclass(LearnedPositionalEncoding):
        def __init__(self, d_model, max_len):
            super().__init__(d_model, max_len)

    with pytest.raises(ShortcutUsed, match="coursekit.positional"):
        grading.check_learned_positions(Subclass, seed=0)
