"""coursekit.seq2seq: every stage against known properties and, where one exists, an independent implementation."""

import dataclasses

import pytest
import torch

from coursekit.attention import MultiHeadAttention
from coursekit.masks import causal_mask, padding_mask
from coursekit.seq2seq import (
    AttentionDecoderLayer,
    AttentionEncoderLayer,
    AttentionOnlyConfig,
    AttentionOnlyEncoderDecoder,
    BahdanauConfig,
    BahdanauEncoderDecoder,
    RNNConfig,
    RNNEncoderDecoder,
    SelfAttentiveRNNConfig,
)
from tests.helpers import SRC_V, STAGE_IDS, STAGES, TGT_V, random_batch

TOL = dict(atol=1e-5, rtol=1e-5)


def build(cls, config_cls, seed=0):
    torch.manual_seed(seed)
    return cls(config_cls.tiny(SRC_V, TGT_V)).eval()


@pytest.mark.parametrize(("cls", "config_cls"), STAGES, ids=STAGE_IDS)
def test_shapes_and_weights_are_distributions(cls, config_cls):
    model = build(cls, config_cls)
    src, src_mask, tgt_in, _ = random_batch([5, 3, 7], [4, 6, 2])
    logits, weights = model(src, src_mask, tgt_in)
    assert logits.shape == (3, 6, TGT_V)
    assert torch.isfinite(logits).all()
    if cls is RNNEncoderDecoder:
        assert weights is None  # the bottleneck model has nothing to attend with
    else:
        assert weights.shape == (3, 6, 7)
        torch.testing.assert_close(weights.sum(-1), torch.ones(3, 6), **TOL)
        assert (weights.masked_select(src_mask[:, None, :].expand_as(weights)) == 0).all()


@pytest.mark.parametrize(("cls", "config_cls"), STAGES, ids=STAGE_IDS)
def test_teacher_forcing_equals_step_by_step_decoding(cls, config_cls):
    """forward() and decode_step() are two code paths (all-at-once vs. one step); they must agree."""
    model = build(cls, config_cls, seed=1)
    src, src_mask, tgt_in, _ = random_batch([6, 2, 4], [5, 5, 5], seed=1)
    logits, weights = model(src, src_mask, tgt_in)
    state = model.encode(src, src_mask)
    for t in range(tgt_in.size(1)):
        step_logits, state, step_weights = model.decode_step(tgt_in[:, t], state)
        torch.testing.assert_close(step_logits, logits[:, t], **TOL)
        if weights is not None:
            torch.testing.assert_close(step_weights, weights[:, t], **TOL)


@pytest.mark.parametrize(("cls", "config_cls"), STAGES, ids=STAGE_IDS)
def test_padding_changes_nothing(cls, config_cls):
    """Each item of a padded batch gives the same logits and weights as that item alone, unpadded."""
    model = build(cls, config_cls, seed=2)
    src_lengths, tgt_lengths = [7, 2, 4], [3, 6, 1]
    src, src_mask, tgt_in, _ = random_batch(src_lengths, tgt_lengths, seed=2)
    logits, weights = model(src, src_mask, tgt_in)
    for b, (S, T) in enumerate(zip(src_lengths, tgt_lengths)):
        alone_logits, alone_weights = model(src[b:b + 1, :S], src_mask[b:b + 1, :S], tgt_in[b:b + 1, :T])
        torch.testing.assert_close(logits[b, :T], alone_logits[0], **TOL)
        if weights is not None:
            torch.testing.assert_close(weights[b, :T, :S], alone_weights[0], **TOL)
            assert (weights[b, :, S:] == 0).all()


def test_padding_matters_when_not_masked():
    """The padding test above can fail: the same batch with the mask dropped gives different outputs."""
    model = build(BahdanauEncoderDecoder, BahdanauConfig)
    src, src_mask, tgt_in, _ = random_batch([7, 2], [3, 3])
    masked, _ = model(src, src_mask, tgt_in)
    unmasked, _ = model(src, torch.zeros_like(src_mask), tgt_in)
    assert not torch.allclose(masked[1], unmasked[1], atol=1e-3)


def additive_weights_by_hand(attention, query, keys, mask):
    """Bahdanau et al. (2015) eq. 6 written out: softmax_j(v^T tanh(W s + U h_j)), padding excluded."""
    W, U, v = attention.W_q.weight, attention.W_k.weight, attention.v.weight[0]
    bias = sum(p for p in (attention.W_q.bias, attention.W_k.bias, attention.v.bias) if p is not None)
    scores = torch.tanh((query @ W.T)[:, None, :] + keys @ U.T + bias) @ v  # (B, S)
    return scores.masked_fill(mask, float("-inf")).softmax(-1)


def test_bahdanau_recomputes_weights_from_the_previous_state_at_every_step():
    model = build(BahdanauEncoderDecoder, BahdanauConfig, seed=3)
    src, src_mask, tgt_in, _ = random_batch([6, 4], [5, 5], seed=3)
    state = model.encode(src, src_mask)
    seen = []
    for t in range(tgt_in.size(1)):
        expected = additive_weights_by_hand(model.attention, state["hidden"], state["annotations"], src_mask)
        _, state, weights = model.decode_step(tgt_in[:, t], state)
        torch.testing.assert_close(weights, expected, **TOL)
        assert (weights[1, 4:] == 0).all()  # padding gets exactly 0, not just a small number
        seen.append(weights)
    for earlier, later in zip(seen, seen[1:]):
        assert (earlier - later).abs().max() > 1e-4  # a new distribution at every step


def test_bahdanau_initial_state_comes_from_the_backward_encoder():
    """s_0 = tanh(W_s h_1<-) (appendix A.2.2): the backward GRU's state after reading the whole source."""
    model = build(BahdanauEncoderDecoder, BahdanauConfig, seed=4)
    src, src_mask, _, _ = random_batch([5], [2], seed=4)
    backward = torch.nn.GRU(16, 32, batch_first=True)
    backward.load_state_dict({name.removesuffix("_reverse"): p for name, p in model.encoder.named_parameters()
                              if name.endswith("_reverse")})
    _, h_backward = backward(model.src_embed(src).flip(1))  # read right to left
    expected = torch.tanh(model.init_state(h_backward[0]))
    torch.testing.assert_close(model.encode(src, src_mask)["hidden"], expected, **TOL)


def test_rnn_context_is_the_final_state_of_a_plain_gru():
    """Stage 1's context equals an independent nn.GRU run over the unpadded source (packing hides the padding)."""
    model = build(RNNEncoderDecoder, RNNConfig, seed=5)
    src, src_mask, _, _ = random_batch([6, 3], [2, 2], seed=5)
    reference = torch.nn.GRU(16, 32, batch_first=True)
    reference.load_state_dict(model.encoder.state_dict())
    context = model.encode(src, src_mask)["context"]
    for b, S in enumerate([6, 3]):
        _, final = reference(model.src_embed(src[b:b + 1, :S]))
        torch.testing.assert_close(context[b], final[0, 0], **TOL)


def copy_torch_layer(torch_layer, ours):
    """Load an nn.Transformer*Layer's weights into our layer: attention through MultiHeadAttention.from_torch."""
    for name in ("self_attn", "multihead_attn"):
        if hasattr(ours, name):
            getattr(ours, name).load_state_dict(MultiHeadAttention.from_torch(getattr(torch_layer, name)).state_dict())
    rest = {k: v for k, v in torch_layer.state_dict().items() if not k.startswith(("self_attn.", "multihead_attn."))}
    missing, unexpected = ours.load_state_dict(rest, strict=False)
    assert not unexpected and all(k.startswith(("self_attn.", "multihead_attn.")) for k in missing)


def test_encoder_layer_equals_torch_transformer_encoder_layer():
    torch.manual_seed(6)
    reference = torch.nn.TransformerEncoderLayer(32, 4, 64, dropout=0.0, batch_first=True)
    ours = AttentionEncoderLayer(d_model=32, nhead=4, dim_feedforward=64, dropout=0.0)
    copy_torch_layer(reference, ours)
    x, mask = torch.randn(3, 7, 32), padding_mask(torch.tensor([7, 4, 2]))
    # train mode with dropout 0: torch's eval fast path would change the outputs at padded positions
    torch.testing.assert_close(ours(x, mask), reference.train()(x, src_key_padding_mask=mask), **TOL)


def test_decoder_layer_equals_torch_transformer_decoder_layer():
    torch.manual_seed(7)
    reference = torch.nn.TransformerDecoderLayer(32, 4, 64, dropout=0.0, batch_first=True)
    ours = AttentionDecoderLayer(d_model=32, nhead=4, dim_feedforward=64, dropout=0.0)
    copy_torch_layer(reference, ours)
    y, memory, mask = torch.randn(3, 5, 32), torch.randn(3, 7, 32), padding_mask(torch.tensor([7, 4, 2]))
    expected = reference(y, memory, tgt_mask=causal_mask(5), memory_key_padding_mask=mask, tgt_is_causal=True)
    out, weights = ours(y, memory, mask)
    torch.testing.assert_close(out, expected, **TOL)
    assert weights.shape == (3, 5, 7) and (weights[2, :, 2:] == 0).all()


@pytest.mark.parametrize(("cls", "config_cls"), STAGES, ids=STAGE_IDS)
def test_reorder_state_selects_batch_rows(cls, config_cls):
    model = build(cls, config_cls)
    src, src_mask, tgt_in, _ = random_batch([5, 3, 4], [2, 2, 2])
    state = model.encode(src, src_mask)
    index = torch.tensor([2, 2, 0])
    reordered = model.reorder_state(state, index)
    logits, _, _ = model.decode_step(tgt_in[index, 0], reordered)
    alone, _, _ = model.decode_step(tgt_in[:, 0], state)
    torch.testing.assert_close(logits, alone[index], **TOL)


@pytest.mark.parametrize(("cls", "config_cls"), STAGES, ids=STAGE_IDS)
def test_dropout_is_active_only_in_training(cls, config_cls):
    torch.manual_seed(0)
    model = cls(dataclasses.replace(config_cls.tiny(SRC_V, TGT_V), dropout=0.5))
    src, src_mask, tgt_in, _ = random_batch([5, 3], [4, 4])
    assert not torch.equal(model.train()(src, src_mask, tgt_in).logits, model(src, src_mask, tgt_in).logits)
    model.eval()
    assert torch.equal(model(src, src_mask, tgt_in).logits, model(src, src_mask, tgt_in).logits)


# ----- bad inputs -------------------------------------------------------------------------------


@pytest.fixture
def model():
    return build(BahdanauEncoderDecoder, BahdanauConfig)


def test_float_source_is_rejected(model):
    src, src_mask, tgt_in, _ = random_batch([3], [2])
    with pytest.raises(TypeError, match=r"src must be a \(B, S\) long tensor"):
        model(src.float(), src_mask, tgt_in)


def test_int_mask_is_rejected(model):
    src, src_mask, tgt_in, _ = random_batch([3], [2])
    with pytest.raises(TypeError, match="bool tensor, True at padding"):
        model(src, src_mask.int(), tgt_in)


def test_mask_shape_must_match(model):
    src, src_mask, tgt_in, _ = random_batch([3, 2], [2, 2])
    with pytest.raises(ValueError, match="must match"):
        model(src, src_mask[:, :2], tgt_in)


def test_inverted_mask_is_caught(model):
    src, src_mask, tgt_in, _ = random_batch([4, 2], [2, 2])
    with pytest.raises(ValueError, match="~mask"):
        model(src, ~src_mask, tgt_in)


def test_all_padding_row_is_caught(model):
    src, src_mask, tgt_in, _ = random_batch([4, 2], [2, 2])
    src_mask[1] = True
    with pytest.raises(ValueError, match="all padding"):
        model(src, src_mask, tgt_in)


def test_ids_outside_the_vocabulary_are_caught(model):
    src, src_mask, tgt_in, _ = random_batch([4], [2])
    src[0, 0] = SRC_V
    with pytest.raises(ValueError, match="outside the source vocabulary"):
        model(src, src_mask, tgt_in)
    src[0, 0] = 4
    tgt_in[0, 1] = TGT_V + 5
    with pytest.raises(ValueError, match="outside the target vocabulary"):
        model(src, src_mask, tgt_in)


def test_target_batch_size_must_match(model):
    src, src_mask, tgt_in, _ = random_batch([4, 3], [2, 2])
    with pytest.raises(ValueError, match="batch size 1 but src has 2"):
        model(src, src_mask, tgt_in[:1])


@pytest.mark.parametrize(("cls", "config_cls"), STAGES, ids=STAGE_IDS)
def test_configs_are_frozen_and_validated(cls, config_cls):
    config = config_cls.tiny(SRC_V, TGT_V)
    size = "d_model" if config_cls is AttentionOnlyConfig else "hidden_dim"
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(config, size, 3)
    with pytest.raises(ValueError, match=f"{size} must be a positive int"):
        config_cls(SRC_V, TGT_V, **{size: 0})
    with pytest.raises(ValueError, match="dropout must be in"):
        config_cls(SRC_V, TGT_V, dropout=1.0)


def test_heads_must_divide_the_model_size():
    with pytest.raises(ValueError, match="divisible by num_heads = 3"):
        SelfAttentiveRNNConfig(SRC_V, TGT_V, hidden_dim=16, num_heads=3)
    with pytest.raises(ValueError, match="divisible by nhead = 3"):
        AttentionOnlyConfig(SRC_V, TGT_V, d_model=32, nhead=3)


def test_target_longer_than_the_positional_table_is_caught():
    model = build(AttentionOnlyEncoderDecoder, AttentionOnlyConfig)
    src, src_mask, _, _ = random_batch([3], [2])
    with pytest.raises(ValueError, match="max_len"):
        model(src, src_mask, torch.ones(1, 65, dtype=torch.long))


# ----- stage 3's positions ----------------------------------------------------------------------


def stage3(positions, seed=8):
    torch.manual_seed(seed)
    config = dataclasses.replace(AttentionOnlyConfig.tiny(SRC_V, TGT_V), positions=positions)
    return AttentionOnlyEncoderDecoder(config).eval()


def test_stage3_without_positions_cannot_tell_a_source_from_its_reverse():
    """With positions="none" the encoder's outputs are a set: cross-attention gives the decoder the same context
    for any order of the source, so the logits are equal; with either kind of positions they differ."""
    src, src_mask, tgt_in, _ = random_batch([6], [4], seed=9)
    both = torch.cat([src, src.flip(1)])  # (2, S): a source and the same source backwards
    masks, targets = src_mask.expand(2, -1), tgt_in.expand(2, -1)
    logits = {p: stage3(p)(both, masks, targets).logits for p in ("none", "sinusoidal", "learned")}
    torch.testing.assert_close(logits["none"][0], logits["none"][1], **TOL)
    for p in ("sinusoidal", "learned"):
        assert (logits[p][0] - logits[p][1]).abs().max() > 1e-3, p


def test_stage3_positions_are_the_course_modules():
    from coursekit.positional import LearnedPositionalEncoding, SinusoidalPositionalEncoding

    assert isinstance(stage3("sinusoidal").positions, SinusoidalPositionalEncoding)
    assert isinstance(stage3("learned").positions, LearnedPositionalEncoding)
    assert not any(name.startswith("positions.") for name, _ in stage3("none").named_parameters())
    with pytest.raises(ValueError, match="positions must be one of"):
        AttentionOnlyConfig(SRC_V, TGT_V, positions="rotary")


def test_stage3_embeddings_start_as_large_as_the_positions():
    """N(0, 1/D) embeddings times sqrt(D) have unit variance, like the sinusoids added to them (nn.Embedding's
    N(0, 1) would make them sqrt(D) times larger and drown the order); padding rows stay 0."""
    torch.manual_seed(0)
    model = AttentionOnlyEncoderDecoder(AttentionOnlyConfig(50, 50, d_model=256, nhead=4))
    for embedding in (model.src_embed, model.tgt_embed):
        scaled = embedding.weight.detach()[1:] * 256**0.5
        assert 0.9 < float(scaled.std()) < 1.1
        assert (embedding.weight[0] == 0).all()
