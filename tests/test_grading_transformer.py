"""coursekit.grading.transformer: each planted mistake earns its own diagnosis, the right answer passes every check,
locally and through the sandbox's proxies (as under `coursekit grade`)."""

import math

import pytest
import torch
from torch import nn

import coursekit.masks
from coursekit import grading
from coursekit.attention import MultiHeadAttention
from coursekit.data import number_task
from coursekit.grading import CheckFailed, ShortcutUsed
from coursekit.positional import SinusoidalPositionalEncoding
from coursekit.autograder.execute import CheckedSandbox as Sandbox, Limits
from coursekit.seq2seq import EncoderDecoder
from coursekit.transformer_layers import TransformerEncoderLayer


def make_mask(kind="right"):
    def causal_mask(size):
        above = torch.triu(torch.ones(size, size, dtype=torch.bool), diagonal=1)
        return {"right": above, "inverted": ~above, "diagonal": torch.triu(torch.ones(size, size, dtype=torch.bool)),
                "lower": above.T, "float": torch.zeros(size, size).masked_fill(above, float("-inf")),
                "first-row": above & (torch.arange(size)[:, None] > 0)}[kind]
    return causal_mask


def ffn(block, x, relu=True):
    hidden = block.linear1(x)
    return block.linear2(torch.relu(hidden) if relu else hidden)


def make_encoder(*, order="post", residual="both", relu=True, ignore_mask=False, causal=False):
    """A learner's EncoderBlock, correct by default, with one mistake planted by a keyword."""
    class EncoderBlock(nn.Module):
        def __init__(self, d_model, nhead, dim_feedforward):
            super().__init__()
            self.self_attn = MultiHeadAttention(d_model, nhead)
            self.linear1 = nn.Linear(d_model, dim_feedforward)
            self.linear2 = nn.Linear(dim_feedforward, d_model)
            self.norm1 = nn.LayerNorm(d_model)
            self.norm2 = nn.LayerNorm(d_model)

        def forward(self, src, src_key_padding_mask=None):
            masks = dict(key_padding_mask=None if ignore_mask else src_key_padding_mask,
                         attn_mask=make_mask()(src.size(1)) if causal else None)
            if order == "pre":
                normed = self.norm1(src)
                x = src + self.self_attn(normed, normed, normed, **masks)[0]
                return x + ffn(self, self.norm2(x), relu)
            attended = self.self_attn(src, src, src, **masks)[0]
            x = self.norm1(attended if residual == "attention" else src + attended)
            return self.norm2(ffn(self, x, relu) if residual == "feed-forward" else x + ffn(self, x, relu))
    return EncoderBlock


def make_decoder(*, order="post", cross="memory", sublayers="self-first", ignore_tgt_mask=False,
                 ignore_memory_mask=False):
    """A learner's DecoderBlock, correct by default, with one mistake planted by a keyword."""
    class DecoderBlock(nn.Module):
        def __init__(self, d_model, nhead, dim_feedforward):
            super().__init__()
            self.self_attn = MultiHeadAttention(d_model, nhead)
            self.multihead_attn = MultiHeadAttention(d_model, nhead)
            self.linear1 = nn.Linear(d_model, dim_feedforward)
            self.linear2 = nn.Linear(dim_feedforward, d_model)
            self.norm1 = nn.LayerNorm(d_model)
            self.norm2 = nn.LayerNorm(d_model)
            self.norm3 = nn.LayerNorm(d_model)

        def forward(self, tgt, memory, tgt_mask=None, memory_key_padding_mask=None):
            def self_block(y):
                return self.self_attn(y, y, y, attn_mask=None if ignore_tgt_mask else tgt_mask)[0]

            def cross_block(y):
                source = memory if cross == "memory" else y
                kpm = None if ignore_memory_mask or cross != "memory" else memory_key_padding_mask
                return self.multihead_attn(y, source, source, key_padding_mask=kpm)[0]

            if order == "pre":
                y = tgt + self_block(self.norm1(tgt))
                y = y + cross_block(self.norm2(y))
                return y + ffn(self, self.norm3(y))
            first, second = (self_block, cross_block) if sublayers == "self-first" else (cross_block, self_block)
            y = self.norm1(tgt + first(tgt))
            y = self.norm2(y + second(y))
            return self.norm3(y + ffn(self, y))
    return DecoderBlock


def make_model(*, scale=True, positions=True, causal=True, memory_mask=True, encoder_mask=True):
    """A learner's Seq2SeqTransformer built from correct blocks, with one assembly mistake planted by a keyword."""
    EncoderBlock, DecoderBlock = make_encoder(), make_decoder()

    class Seq2SeqTransformer(EncoderDecoder):
        def __init__(self, src_vocab_size, tgt_vocab_size, d_model=32, nhead=4, dim_feedforward=64, num_layers=2,
                     max_len=32):
            super().__init__()
            self.d_model = d_model
            self.src_embed = nn.Embedding(src_vocab_size, d_model)
            self.tgt_embed = nn.Embedding(tgt_vocab_size, d_model)
            self.positions = SinusoidalPositionalEncoding(d_model, max_len)
            self.encoder_layers = nn.ModuleList(EncoderBlock(d_model, nhead, dim_feedforward) for _ in range(num_layers))
            self.decoder_layers = nn.ModuleList(DecoderBlock(d_model, nhead, dim_feedforward) for _ in range(num_layers))
            self.out = nn.Linear(d_model, tgt_vocab_size)

        def embed(self, embedding, ids):
            x = embedding(ids) * (math.sqrt(self.d_model) if scale else 1.0)
            return self.positions(x) if positions else x

        def encode_source(self, src, src_key_padding_mask):
            x = self.embed(self.src_embed, src)
            for layer in self.encoder_layers:
                x = layer(x, src_key_padding_mask=src_key_padding_mask if encoder_mask else None)
            return x

        def decode_target(self, tgt_in, memory, src_key_padding_mask):
            y = self.embed(self.tgt_embed, tgt_in)
            mask = make_mask()(tgt_in.size(1)) if causal else None
            for layer in self.decoder_layers:
                y = layer(y, memory, tgt_mask=mask,
                          memory_key_padding_mask=src_key_padding_mask if memory_mask else None)
            return self.out(y)

        def forward(self, src, src_key_padding_mask, tgt_in):
            memory = self.encode_source(src, src_key_padding_mask)
            return self.decode_target(tgt_in, memory, src_key_padding_mask), None

        def encode(self, src, src_key_padding_mask):
            memory = self.encode_source(src, src_key_padding_mask)
            return {"memory": memory, "src_key_padding_mask": src_key_padding_mask,
                    "tokens": src.new_empty(src.size(0), 0)}

        def decode_step(self, token, state):
            tokens = torch.cat([state["tokens"], token[:, None]], dim=1)
            logits = self.decode_target(tokens, state["memory"], state["src_key_padding_mask"])
            return logits[:, -1], {**state, "tokens": tokens}, None
    return Seq2SeqTransformer


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

    with pytest.raises(CheckFailed, match="Cross-attention takes its keys and values from memory"):
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


def test_the_trained_translator_check(numbers, capsys):
    torch.manual_seed(0)
    model = make_model()(len(numbers.src_vocab), len(numbers.tgt_vocab), d_model=16, nhead=2, dim_feedforward=32)
    with pytest.raises(CheckFailed, match=r"translates \d+% of 20 held-out numbers exactly; it needs 80%"):
        grading.check_trained_translator(model, numbers, seed=0, n=20)
    grading.check_trained_translator(model, numbers, seed=0, n=20, min_exact=0.0)
    assert "of 20 held-out numbers" in capsys.readouterr().out


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
