"""coursekit.grading.transformer: each planted mistake earns its own diagnosis, the right answer passes every check,
locally and through the sandbox's proxies (as under `coursekit grade`)."""


import pytest
import torch
from torch import nn

import coursekit.masks
from coursekit import grading
from coursekit.data import number_task
from coursekit.grading import CheckFailed, ShortcutUsed
from coursekit.sandbox import Limits, Sandbox
from coursekit.transformer_layers import TransformerEncoderLayer
from tests.helpers import ffn, make_decoder, make_encoder, make_mask, make_model

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors: two threads only fight (see conftest.py)


def test_correct_answers_pass(capsys):
    grading.check_causal_mask_function(make_mask())
    grading.check_encoder_block(make_encoder())
    grading.check_decoder_block(make_decoder())
    grading.check_transformer_model(make_model())
    assert capsys.readouterr().out.count("✓") == 4


@pytest.mark.parametrize("kind, message", [
    ("inverted", "causal mask is inverted"),
    ("diagonal", "also hides the diagonal"),
    ("lower", "hides the past instead of the future"),
    ("float", "additive float mask"),
    ("first-row", r"differs at \d+ of"),
])
def test_each_mask_mistake_gets_its_own_diagnosis(kind, message):
    with pytest.raises(CheckFailed, match=message):
        grading.check_causal_mask_function(make_mask(kind), seed=1)


@pytest.mark.parametrize("mistake, message", [
    (dict(order="pre"), r"pre-LN"),
    (dict(residual="attention"), "attention sublayer has no residual connection"),
    (dict(residual="feed-forward"), "feed-forward sublayer has no residual connection"),
    (dict(relu=False), "no ReLU"),
    (dict(ignore_mask=True), "ignores src_key_padding_mask"),
    (dict(causal=True), "give its self-attention no causal mask"),
])
def test_each_encoder_mistake_gets_its_own_diagnosis(mistake, message):
    with pytest.raises(CheckFailed, match=message):
        grading.check_encoder_block(make_encoder(**mistake), seed=2)


@pytest.mark.parametrize("mistake, message", [
    (dict(ignore_tgt_mask=True), "ignores tgt_mask"),
    (dict(cross="target"), "takes its keys and values from the target"),
    (dict(order="pre"), r"pre-LN"),
    (dict(ignore_memory_mask=True), "ignores memory_key_padding_mask"),
])
def test_each_decoder_mistake_gets_its_own_diagnosis(mistake, message):
    with pytest.raises(CheckFailed, match=message):
        grading.check_decoder_block(make_decoder(**mistake), seed=3)


def test_cross_attention_over_the_target_with_the_memory_mask_is_explained():
    class CrossFromTarget(make_decoder()):
        def forward(self, tgt, memory, tgt_mask=None, memory_key_padding_mask=None):
            y = self.norm1(tgt + self.self_attn(tgt, tgt, tgt, attn_mask=tgt_mask)[0])
            y = self.norm2(y + self.multihead_attn(y, y, y, key_padding_mask=memory_key_padding_mask)[0])
            return self.norm3(y + ffn(self, y))

    with pytest.raises(CheckFailed, match=r"\[decoder.symptom.raised\] .*key_padding_mask must have shape \(B, S\) = \(3, 5\)"):
        grading.check_decoder_block(CrossFromTarget, seed=0)


def test_cross_attention_first_is_named():
    """Cross-attention first, then the masked self-attention, leaks nothing; it is named as the wrong order."""
    with pytest.raises(CheckFailed, match="sublayers are in the wrong order"):
        grading.check_decoder_block(make_decoder(sublayers="cross-first"), seed=3)


@pytest.mark.parametrize("mistake, message", [
    (dict(scale=False), r"did not scale the embeddings"),
    (dict(positions=False), "left out the positional encodings"),
    (dict(causal=False), "Future leakage"),
    (dict(memory_mask=False), "decoder layers ignore the source padding"),
    (dict(encoder_mask=False), "encoder layers ignore the source padding"),
])
def test_each_assembly_mistake_gets_its_own_diagnosis(mistake, message):
    with pytest.raises(CheckFailed, match=message):
        grading.check_transformer_model(make_model(**mistake), seed=4)


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


LEARNER = '''
import math
import torch
from torch import nn
from coursekit.attention import MultiHeadAttention

def causal_mask(size):
    return torch.triu(torch.ones(size, size, dtype=torch.bool), diagonal=1)

class EncoderBlock(nn.Module):
    def __init__(self, d_model, nhead, dim_feedforward, pre_ln=False):
        super().__init__()
        self.self_attn = MultiHeadAttention(d_model, nhead)
        self.linear1 = nn.Linear(d_model, dim_feedforward)
        self.linear2 = nn.Linear(dim_feedforward, d_model)
        self.norm1 = nn.LayerNorm(d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.pre_ln = pre_ln

    def forward(self, src, src_key_padding_mask=None):
        if self.pre_ln:
            n = self.norm1(src)
            x = src + self.self_attn(n, n, n, key_padding_mask=src_key_padding_mask)[0]
            return x + self.linear2(torch.relu(self.linear1(self.norm2(x))))
        x = self.norm1(src + self.self_attn(src, src, src, key_padding_mask=src_key_padding_mask)[0])
        return self.norm2(x + self.linear2(torch.relu(self.linear1(x))))

class PreLN(EncoderBlock):
    def __init__(self, d_model, nhead, dim_feedforward):
        super().__init__(d_model, nhead, dim_feedforward, pre_ln=True)

class DecoderBlock(nn.Module):
    def __init__(self, d_model, nhead, dim_feedforward, use_mask=True):
        super().__init__()
        self.self_attn = MultiHeadAttention(d_model, nhead)
        self.multihead_attn = MultiHeadAttention(d_model, nhead)
        self.linear1 = nn.Linear(d_model, dim_feedforward)
        self.linear2 = nn.Linear(dim_feedforward, d_model)
        self.norm1 = nn.LayerNorm(d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.norm3 = nn.LayerNorm(d_model)
        self.use_mask = use_mask

    def forward(self, tgt, memory, tgt_mask=None, memory_key_padding_mask=None):
        mask = tgt_mask if self.use_mask else None
        y = self.norm1(tgt + self.self_attn(tgt, tgt, tgt, attn_mask=mask)[0])
        y = self.norm2(y + self.multihead_attn(y, memory, memory, key_padding_mask=memory_key_padding_mask)[0])
        return self.norm3(y + self.linear2(torch.relu(self.linear1(y))))

class Leaky(DecoderBlock):
    def __init__(self, d_model, nhead, dim_feedforward):
        super().__init__(d_model, nhead, dim_feedforward, use_mask=False)
'''


def test_checks_work_on_the_sandbox_proxies(tmp_path, capsys):
    with Sandbox(str(tmp_path), Limits(memory_mb=2048, cell_timeout_s=60)) as box:
        assert box.run_cell(LEARNER)["error"] is None
        grading.check_causal_mask_function(box.lookup("causal_mask"), seed=0)
        grading.check_encoder_block(box.lookup("EncoderBlock"), seed=0)
        grading.check_decoder_block(box.lookup("DecoderBlock"))
        assert capsys.readouterr().out.count("✓") == 3
        with pytest.raises(CheckFailed, match="pre-LN"):
            grading.check_encoder_block(box.lookup("PreLN"), seed=0)
        with pytest.raises(CheckFailed, match="ignores tgt_mask"):
            grading.check_decoder_block(box.lookup("Leaky"), seed=0)
