"""coursekit.grading.bahdanau: each planted mistake earns its own diagnosis, the right answer passes every check,
locally and through the sandbox's proxies (as under `coursekit grade`)."""

import pytest
import torch
from torch import nn

import coursekit.attention
from coursekit import grading
from coursekit.data import date_task
from coursekit.grading import CheckFailed, ShortcutUsed
from coursekit.autograder.execute import CheckedSandbox as Sandbox, Limits
from coursekit.seq2seq import BahdanauConfig, BahdanauEncoderDecoder
from tests.helpers import make_additive, make_masked_softmax

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors: two threads only fight (see conftest.py)


@pytest.mark.parametrize("check", [grading.check_additive_scores, grading.check_additive_attention,
                                   grading.check_single_step])
def test_correct_module_passes(check, capsys):
    check(make_additive())
    assert "✓" in capsys.readouterr().out


def test_correct_masked_softmax_passes(capsys):
    grading.check_masked_softmax(make_masked_softmax())
    assert "✓" in capsys.readouterr().out


@pytest.mark.parametrize("mistake, code", [
    (dict(dim=-2), "softmax.over-queries"),
    (dict(invert=True), "mask.inverted"),
    (dict(ignore=True), "mask.ignored"),
    (dict(after=True), "mask.after-softmax"),
    (dict(keep_dims=False), "softmax.symptom.shape"),
])
def test_each_softmax_mistake_gets_its_own_code(mistake, code):
    with pytest.raises(CheckFailed) as caught:
        grading.check_masked_softmax(make_masked_softmax(**mistake), seed=3)
    assert caught.value.code == code, str(caught.value)


@pytest.mark.parametrize("mistake, check, code", [
    (dict(tanh="none"), grading.check_additive_scores, "additive.no-tanh"),
    (dict(tanh="outside"), grading.check_additive_scores, "additive.tanh-outside"),
    (dict(squeeze=False), grading.check_additive_scores, "additive.not-squeezed"),
    (dict(transpose=True), grading.check_additive_scores, "additive.transposed"),
    (dict(rename=True), grading.check_additive_scores, "additive.symptom.parameters"),
    (dict(average="key"), grading.check_additive_attention, "additive.averages-keys"),
    (dict(softmax=make_masked_softmax(invert=True)), grading.check_additive_attention, "mask.inverted"),
    (dict(softmax=make_masked_softmax(ignore=True)), grading.check_additive_attention, "mask.ignored"),
    (dict(step="keep"), grading.check_single_step, "additive.step-not-squeezed"),
    (dict(step="fail"), grading.check_single_step, "additive.symptom.raised"),
])
def test_each_module_mistake_gets_its_own_code(mistake, check, code):
    with pytest.raises(CheckFailed) as caught:
        check(make_additive(**mistake), seed=11)
    assert caught.value.code == code, str(caught.value)


def test_a_raising_step_says_it_was_one_decoder_step():
    with pytest.raises(CheckFailed, match=r"given one decoder step \(a query of shape \(B, Dq\) = \(3, 6\)\), raised"):
        grading.check_single_step(make_additive(step="fail"), seed=1)


def test_a_wrong_score_shape_stops_the_context_test_with_the_score_tests_verdict():
    with pytest.raises(CheckFailed, match=r"returns shape \(3, 4, 5, 1\) .*\(Test 2 fails with this seed\)"):
        grading.check_additive_attention(make_additive(squeeze=False), seed=2)


def test_one_mistake_costs_one_part():
    """The context and single-step checks use the learner's own scores, so a wrong score fails only its test."""
    no_tanh = make_additive(tanh="none")
    grading.check_additive_attention(no_tanh)
    grading.check_single_step(no_tanh)
    keys_averaged = make_additive(average="key")
    grading.check_single_step(keys_averaged)
    grading.check_additive_scores(keys_averaged)


def test_shortcuts_through_the_reference_earn_nothing():
    class Subclass(coursekit.attention.AdditiveAttention):
        pass

    with pytest.raises(ShortcutUsed, match="coursekit.attention"):
        grading.check_additive_scores(Subclass, seed=1)

    def fused_softmax(scores, key_padding_mask=None):
        eye = torch.eye(scores.size(-1)).expand(scores.size(0), -1, -1)
        torch.nn.functional.scaled_dot_product_attention(eye[:, :1], eye, eye)
        return make_masked_softmax()(scores, key_padding_mask)

    with pytest.raises(ShortcutUsed, match="scaled_dot_product_attention"):
        grading.check_masked_softmax(fused_softmax, seed=1)

    def attend_softmax(scores, key_padding_mask=None):
        mask = key_padding_mask[:, None, :] if key_padding_mask is not None else None
        return coursekit.attention.attend(scores, torch.zeros(scores.size(0), scores.size(-1), 1), mask)[1]

    with pytest.raises(ShortcutUsed, match="coursekit.attention"):
        grading.check_masked_softmax(attend_softmax, seed=1)


# --- the trained model -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def small_task():
    return date_task(n=600, seed=0, languages=("en",))


class Oracle(nn.Module):
    """A "model" that knows every answer: to test that the check passes a model that translates correctly."""

    def __init__(self, task):
        super().__init__()
        pairs = list(task.train) + list(task.valid) + list(task.test)
        self.answers = {tuple(task.src_vocab.encode(s)): task.tgt_vocab.encode(t) + [task.tgt_vocab.stop_id]
                        for s, t in pairs}

    def encode(self, src, src_key_padding_mask):
        rows = [tuple(r[~m].tolist()) for r, m in zip(src, src_key_padding_mask)]
        width = max(len(self.answers[r]) for r in rows)
        targets = torch.tensor([self.answers[r] + [0] * (width - len(self.answers[r])) for r in rows])
        return {"targets": targets, "step": torch.zeros(len(rows), dtype=torch.long)}

    def decode_step(self, token, state):
        step = int(state["step"][0])
        index = state["targets"][:, min(step, state["targets"].size(1) - 1)]
        logits = torch.nn.functional.one_hot(index, 15).float() * 10
        return logits, {**state, "step": state["step"] + 1}, None


def test_a_model_that_translates_passes(small_task, capsys):
    grading.check_trained_date_model(Oracle(small_task), small_task)
    held_out = len(small_task.valid) + len(small_task.test)
    assert f"100% of the {held_out} held-out dates" in capsys.readouterr().out


def test_an_untrained_model_fails_with_its_score_and_examples(small_task):
    torch.manual_seed(0)
    config = BahdanauConfig(len(small_task.src_vocab), len(small_task.tgt_vocab), 16, 32, 32)
    model = BahdanauEncoderDecoder(config)
    model.attention = make_additive()(32, 64, 32)
    with pytest.raises(CheckFailed, match=r"writes 0% of the \d+ held-out dates exactly right; it needs 50%. "
                                          r"For example: '[^']+' -> '[^']*' instead of '\d{4}-\d\d-\d\d'") as caught:
        grading.check_trained_date_model(model, small_task)
    assert caught.value.code == "dates.symptom.low-score"


def test_a_model_still_using_the_reference_attention_is_caught(small_task):
    config = BahdanauConfig(len(small_task.src_vocab), len(small_task.tgt_vocab), 16, 32, 32)
    with pytest.raises(ShortcutUsed, match="still attends with coursekit's AdditiveAttention"):
        grading.check_trained_date_model(BahdanauEncoderDecoder(config), small_task)
