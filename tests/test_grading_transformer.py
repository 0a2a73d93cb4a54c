"""coursekit.grading.transformer: each planted mistake earns its own diagnosis, the right answer passes every check,
locally and through the sandbox's proxies (as under `coursekit grade`)."""


import pytest
import torch
from torch import nn

import coursekit.masks
from coursekit import grading
from coursekit.data import number_task
from coursekit.grading import CheckFailed, ShortcutUsed
from coursekit.positional import SinusoidalPositionalEncoding
from coursekit.autograder.execute import CheckedSandbox as Sandbox, Limits
from coursekit.seq2seq import EncoderDecoder
from coursekit.transformer_layers import TransformerEncoderLayer
from tests.helpers import ffn, make_decoder, make_encoder, make_mask, make_model

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors: two threads only fight (see conftest.py)


def test_correct_answers_pass(capsys):
    grading.check_causal_mask_function(make_mask())
    grading.check_encoder_block(make_encoder())
    grading.check_decoder_block(make_decoder())
    grading.check_transformer_model(make_model())
    assert capsys.readouterr().out.count("✓") == 4


def code_of(check, answer, seed):
    with pytest.raises(CheckFailed) as caught:
        check(answer, seed=seed)
    return caught.value


@pytest.mark.parametrize("kind, code", [
    ("inverted", "causal.inverted"),
    ("diagonal", "causal.hides-diagonal"),
    ("lower", "causal.hides-past"),
    ("float", "causal.additive-float"),
    ("first-row", "causal.symptom.values"),
])
def test_each_mask_mistake_gets_its_own_code(kind, code):
    assert code_of(grading.check_causal_mask_function, make_mask(kind), 1).code == code


@pytest.mark.parametrize("mistake, code", [
    (dict(order="pre"), "encoder.pre-ln"),
    (dict(residual="attention"), "encoder.no-attention-residual"),
    (dict(residual="feed-forward"), "encoder.no-feed-forward-residual"),
    (dict(relu=False), "encoder.no-relu"),
    (dict(ignore_mask=True), "encoder.ignores-padding"),
    (dict(causal=True), "encoder.causal"),
])
def test_each_encoder_mistake_gets_its_own_code(mistake, code):
    assert code_of(grading.check_encoder_block, make_encoder(**mistake), 2).code == code


@pytest.mark.parametrize("mistake, code", [
    (dict(ignore_tgt_mask=True), "decoder.ignores-tgt-mask"),
    (dict(cross="target"), "decoder.cross-from-target"),
    (dict(order="pre"), "decoder.pre-ln"),
    (dict(ignore_memory_mask=True), "decoder.ignores-memory-padding"),
    (dict(sublayers="cross-first"), "decoder.sublayers-swapped"),
])
def test_each_decoder_mistake_gets_its_own_code(mistake, code):
    assert code_of(grading.check_decoder_block, make_decoder(**mistake), 3).code == code


def test_cross_attention_over_the_target_with_the_memory_mask_raises_with_the_shapes():
    class CrossFromTarget(make_decoder()):
        def forward(self, tgt, memory, tgt_mask=None, memory_key_padding_mask=None):
            y = self.norm1(tgt + self.self_attn(tgt, tgt, tgt, attn_mask=tgt_mask)[0])
            y = self.norm2(y + self.multihead_attn(y, y, y, key_padding_mask=memory_key_padding_mask)[0])
            return self.norm3(y + ffn(self, y))

    error = code_of(grading.check_decoder_block, CrossFromTarget, 0)
    assert error.code == "decoder.symptom.raised"
    assert "key_padding_mask must have shape (B, S) = (3, 5)" in str(error)
    assert "memory (3, 7, 16)" in str(error) and "self.multihead_attn(y, y, y, key_padding_mask" in str(error)


@pytest.mark.parametrize("mistake, code", [
    (dict(scale=False), "model.unscaled-embeddings"),
    (dict(positions=False), "model.no-positions"),
    (dict(causal=False), "model.no-causal-mask"),
    (dict(memory_mask=False), "model.decoder-ignores-padding"),
    (dict(encoder_mask=False), "model.encoder-ignores-padding"),
])
def test_each_assembly_mistake_gets_its_own_code(mistake, code):
    assert code_of(grading.check_transformer_model, make_model(**mistake), 4).code == code


def test_a_model_with_a_wrong_block_says_so():
    class Model(make_model()):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            for layer in self.encoder_layers:
                layer.forward = make_encoder(relu=False).forward.__get__(layer)

    error = code_of(grading.check_transformer_model, Model, 4)
    assert error.code.startswith("model.symptom."), str(error)
    assert "your encoder blocks do not compute what the reference's do and your decoder blocks compute" in str(error)


def test_shortcuts_through_torch_or_coursekit_earn_nothing():
    with pytest.raises(ShortcutUsed, match="coursekit.masks.causal_mask"):
        grading.check_causal_mask_function(coursekit.masks.causal_mask, seed=0)
    with pytest.raises(ShortcutUsed, match="torch.nn.Transformer"):
        grading.check_causal_mask_function(
            lambda size: nn.Transformer.generate_square_subsequent_mask(size).isinf(), seed=0)

    class ViaTorch(nn.Module):
        def __init__(self, d_model, nhead, dim_feedforward):
            super().__init__()
            self.inner = nn.TransformerEncoderLayer(d_model, nhead, dim_feedforward, dropout=0.0, batch_first=True)

        def forward(self, src, src_key_padding_mask=None):
            return self.inner(src, src_key_padding_mask=src_key_padding_mask)

    with pytest.raises(ShortcutUsed, match="torch.nn.Transformer"):
        grading.check_encoder_block(ViaTorch, seed=0)

    class ViaCoursekit(TransformerEncoderLayer):
        def __init__(self, d_model, nhead, dim_feedforward):
            super().__init__(d_model, nhead, dim_feedforward, dropout=0.0)

    with pytest.raises(ShortcutUsed, match="coursekit.transformer_layers"):
        grading.check_encoder_block(ViaCoursekit, seed=0)


def test_the_blocks_may_use_the_course_multihead_attention():
    """MultiHeadAttention (and its is_causal option) is the previous notebook's work: using it is no shortcut."""
    class IsCausal(make_decoder()):
        def forward(self, tgt, memory, tgt_mask=None, memory_key_padding_mask=None):
            y = self.norm1(tgt + self.self_attn(tgt, tgt, tgt, is_causal=True)[0])
            y = self.norm2(y + self.multihead_attn(y, memory, memory, key_padding_mask=memory_key_padding_mask)[0])
            return self.norm3(y + ffn(self, y))

    grading.check_decoder_block(IsCausal, seed=0)


@pytest.fixture(scope="module")
def numbers():
    return number_task(0, 200, "en", "de", seed=0)


def test_the_trained_translator_check_scores_every_held_out_number(numbers, capsys):
    torch.manual_seed(0)
    model = make_model()(len(numbers.src_vocab), len(numbers.tgt_vocab), d_model=16, nhead=2, dim_feedforward=32)
    held_out = len(numbers.valid) + len(numbers.test)
    with pytest.raises(CheckFailed, match=rf"translates \d+% of the {held_out} held-out numbers exactly; it needs 70%. "
                                          r"For example: '[a-z ]+' -> '[^']*' instead of '[^']+'") as caught:
        grading.check_trained_translator(model, numbers)
    assert caught.value.code == "translator.symptom.low-score"
    grading.check_trained_translator(model, numbers, min_exact=0.0)
    assert f"of the {held_out} held-out numbers" in capsys.readouterr().out
