"""coursekit.transformer and transformer_layers against torch.nn with copied weights, and known properties."""

import dataclasses
import math

import matplotlib
import pytest
import torch
from torch import nn

from coursekit.data import number_task
from coursekit.decoding import beam_search, greedy_decode
from coursekit.masks import causal_mask, padding_mask
from coursekit.train import load_checkpoint, save_checkpoint, train
from coursekit.transformer import Transformer, TransformerConfig, WarmupInverseSqrtLR, transformer_lr
from coursekit.transformer_layers import (
    TransformerDecoder,
    TransformerDecoderLayer,
    TransformerEncoder,
    TransformerEncoderLayer,
)
from coursekit.translate import chrf, evaluate_translation, translate_with_attention
from tests.helpers import SRC_V, TGT_V, random_batch

matplotlib.use("Agg")

TOL = dict(atol=1e-5, rtol=1e-5)
VARIANTS = [(norm_first, activation) for norm_first in (False, True) for activation in ("relu", "gelu")]
VARIANT_IDS = [f"{'pre' if nf else 'post'}LN-{act}" for nf, act in VARIANTS]


pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py


def layer_kwargs(norm_first=False, activation="relu"):
    """One kwargs dict that builds torch's layer and ours alike (house style: keep torch's names)."""
    return dict(d_model=32, nhead=4, dim_feedforward=64, dropout=0.0, activation=activation,
                norm_first=norm_first, batch_first=True)


def jiggled(module):
    """Fresh layer norms are all the identity, so a swapped norm2/norm3 would go unseen: move every weight."""
    with torch.no_grad():
        for p in module.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return module.train()  # train mode, dropout 0: torch's eval fast path would change padded positions


def build(seed=0, **overrides):
    torch.manual_seed(seed)
    return Transformer(dataclasses.replace(TransformerConfig.tiny(SRC_V, TGT_V), **overrides)).eval()


# ----- layers and stacks against torch.nn (train mode, dropout 0: no fast path) ---------------------


@pytest.mark.parametrize(("norm_first", "activation"), VARIANTS, ids=VARIANT_IDS)
@pytest.mark.parametrize("causal", [False, True], ids=["padding", "padding+causal"])
def test_encoder_layer_equals_torch(norm_first, activation, causal):
    torch.manual_seed(1)
    reference = jiggled(nn.TransformerEncoderLayer(**layer_kwargs(norm_first, activation)))
    ours = TransformerEncoderLayer.from_torch(reference)
    x, mask = torch.randn(3, 7, 32), padding_mask(torch.tensor([7, 4, 2]))
    attn_mask = causal_mask(7) if causal else None
    expected = reference(x, src_mask=attn_mask, src_key_padding_mask=mask, is_causal=causal)
    out = ours(x, src_mask=attn_mask, src_key_padding_mask=mask, is_causal=causal)
    torch.testing.assert_close(out, expected, **TOL)
    out, weights = ours.forward_with_weights(x, attn_mask, mask, causal)  # the explicit-softmax path
    torch.testing.assert_close(out, expected, **TOL)
    assert weights.shape == (3, 4, 7, 7) and (weights[2, :, :, 2:] == 0).all()


@pytest.mark.parametrize(("norm_first", "activation"), VARIANTS, ids=VARIANT_IDS)
def test_decoder_layer_equals_torch(norm_first, activation):
    torch.manual_seed(2)
    reference = jiggled(nn.TransformerDecoderLayer(**layer_kwargs(norm_first, activation)))
    ours = TransformerDecoderLayer.from_torch(reference)
    y, memory = torch.randn(3, 5, 32), torch.randn(3, 7, 32)
    tgt_pad, mem_pad = padding_mask(torch.tensor([5, 3, 4])), padding_mask(torch.tensor([7, 4, 2]))
    kwargs = dict(tgt_mask=causal_mask(5), tgt_key_padding_mask=tgt_pad, memory_key_padding_mask=mem_pad,
                  tgt_is_causal=True)
    expected = reference(y, memory, **kwargs)
    torch.testing.assert_close(ours(y, memory, **kwargs), expected, **TOL)
    # is_causal alone builds the same mask (torch needs the mask as well)
    torch.testing.assert_close(ours(y, memory, tgt_key_padding_mask=tgt_pad, memory_key_padding_mask=mem_pad,
                                    tgt_is_causal=True), expected, **TOL)


def test_float_masks_and_no_bias_equal_torch():
    torch.manual_seed(3)
    kwargs = dict(layer_kwargs(norm_first=True), bias=False, layer_norm_eps=1e-6)
    reference = jiggled(nn.TransformerDecoderLayer(**kwargs))
    ours = TransformerDecoderLayer.from_torch(reference)
    y, memory = torch.randn(2, 4, 32), torch.randn(2, 6, 32)
    float_mask = torch.randn(4, 6)  # added to the cross-attention scores
    expected = reference(y, memory, tgt_mask=causal_mask(4), memory_mask=float_mask)
    torch.testing.assert_close(ours(y, memory, tgt_mask=causal_mask(4), memory_mask=float_mask), expected, **TOL)


@pytest.mark.parametrize("norm_first", [False, True], ids=["postLN", "preLN"])
def test_stacks_equal_torch(norm_first):
    torch.manual_seed(4)
    kwargs = layer_kwargs(norm_first, "gelu")
    encoder = jiggled(nn.TransformerEncoder(nn.TransformerEncoderLayer(**kwargs), 3, enable_nested_tensor=False,
                                            norm=nn.LayerNorm(32) if norm_first else None))
    decoder = jiggled(nn.TransformerDecoder(nn.TransformerDecoderLayer(**kwargs), 2,
                                            norm=nn.LayerNorm(32) if norm_first else None))
    ours_enc, ours_dec = TransformerEncoder.from_torch(encoder), TransformerDecoder.from_torch(decoder)
    assert len(ours_enc.layers) == 3 and len(ours_dec.layers) == 2
    x, y = torch.randn(3, 7, 32), torch.randn(3, 5, 32)
    mask = padding_mask(torch.tensor([7, 4, 2]))
    memory = encoder(x, src_key_padding_mask=mask)
    torch.testing.assert_close(ours_enc(x, src_key_padding_mask=mask), memory, **TOL)
    expected = decoder(y, memory, tgt_mask=causal_mask(5), memory_key_padding_mask=mask, tgt_is_causal=True)
    out = ours_dec(y, memory, tgt_mask=causal_mask(5), memory_key_padding_mask=mask)
    torch.testing.assert_close(out, expected, **TOL)


def test_copies_are_independent_layers():
    stack = TransformerEncoder(TransformerEncoderLayer(**layer_kwargs()), 2)
    assert stack.layers[0].linear1.weight is not stack.layers[1].linear1.weight


# ----- the whole model against a torch.nn reference ----------------------------------------------


class TorchReference(nn.Module):
    """Embeddings * sqrt(D) + sinusoids written out here, nn.TransformerEncoder/Decoder, tied output layer."""

    def __init__(self, config):
        super().__init__()
        self.config, D = config, config.d_model
        self.src_embed, self.tgt_embed = nn.Embedding(config.src_vocab_size, D), nn.Embedding(config.tgt_vocab_size, D)
        kwargs = dict(d_model=D, nhead=config.nhead, dim_feedforward=config.dim_feedforward, dropout=0.0,
                      activation=config.activation, norm_first=config.norm_first, batch_first=True)
        norm = nn.LayerNorm(D) if config.norm_first else None
        self.encoder = nn.TransformerEncoder(nn.TransformerEncoderLayer(**kwargs), config.num_encoder_layers,
                                             norm=norm, enable_nested_tensor=False)
        self.decoder = nn.TransformerDecoder(nn.TransformerDecoderLayer(**kwargs), config.num_decoder_layers,
                                             norm=nn.LayerNorm(D) if config.norm_first else None)
        self.out = nn.Linear(D, config.tgt_vocab_size)
        self.out.weight = self.tgt_embed.weight

    def positions(self, length):
        pe = torch.zeros(length, self.config.d_model)
        for pos in range(length):
            for i in range(0, self.config.d_model, 2):
                pe[pos, i] = math.sin(pos / 10000 ** (i / self.config.d_model))
                pe[pos, i + 1] = math.cos(pos / 10000 ** (i / self.config.d_model))
        return pe

    def forward(self, src, src_mask, tgt_in):
        scale = math.sqrt(self.config.d_model)
        x = self.src_embed(src) * scale + self.positions(src.size(1))
        y = self.tgt_embed(tgt_in) * scale + self.positions(tgt_in.size(1))
        memory = self.encoder(x, src_key_padding_mask=src_mask)
        T = tgt_in.size(1)
        return self.out(self.decoder(y, memory, tgt_mask=causal_mask(T), memory_key_padding_mask=src_mask))


@pytest.mark.parametrize("norm_first", [False, True], ids=["postLN", "preLN"])
def test_whole_model_equals_a_torch_nn_transformer(norm_first):
    ours = build(seed=5, norm_first=norm_first).train()
    reference = jiggled(TorchReference(ours.config))
    with torch.no_grad():
        reference.src_embed.weight.copy_(ours.src_embed.weight)
        reference.tgt_embed.weight.copy_(ours.tgt_embed.weight)
        reference.out.bias.copy_(torch.randn(TGT_V))
        ours.out.bias.copy_(reference.out.bias)
    ours.encoder = TransformerEncoder.from_torch(reference.encoder)
    ours.decoder = TransformerDecoder.from_torch(reference.decoder)
    src, src_mask, tgt_in, _ = random_batch([6, 3, 5], [4, 6, 2], seed=5)
    torch.testing.assert_close(ours(src, src_mask, tgt_in).logits, reference(src, src_mask, tgt_in), **TOL)


def test_embeddings_are_scaled_and_tied():
    model = build()
    assert model.out.weight is model.tgt_embed.weight
    assert model.src_embed is not model.tgt_embed
    shared = Transformer(dataclasses.replace(TransformerConfig.tiny(12, 12), share_src_tgt_embeddings=True))
    assert shared.src_embed is shared.tgt_embed
    untied = build(tie_embeddings=False)
    n = sum(p.numel() for p in model.parameters())
    assert sum(p.numel() for p in untied.parameters()) == n + TGT_V * 32
    # sqrt(D) E[x] has unit variance at initialisation, like the sinusoids it is added to
    big = Transformer(TransformerConfig(1000, 1000, d_model=256, num_encoder_layers=1, num_decoder_layers=1))
    assert 0.9 < (big.src_embed.weight * math.sqrt(256)).std().item() < 1.1


def test_the_same_seed_builds_the_same_model():
    # Many live models sit at many memory addresses: nothing in the build may depend on where an object lives.
    models = [build(seed=3) for _ in range(16)]
    for model in models[1:]:
        for (name, ours), theirs in zip(model.state_dict().items(), models[0].state_dict().values()):
            assert torch.equal(ours, theirs), f"{name} differs between two builds with the same seed"


# ----- properties ------------------------------------------------------------------------------


def test_padding_changes_nothing_and_the_future_is_hidden():
    model = build(seed=6)
    src, src_mask, tgt_in, _ = random_batch([5, 3], [6, 6], seed=6)
    logits = model(src, src_mask, tgt_in).logits
    padded_src = torch.cat([src, torch.zeros(2, 3, dtype=torch.long)], dim=1)
    padded = model(padded_src, padding_mask(torch.tensor([5, 3]), 8), tgt_in).logits
    torch.testing.assert_close(padded, logits, **TOL)
    changed = tgt_in.clone()
    changed[:, 4:] = 5
    torch.testing.assert_close(model(src, src_mask, changed).logits[:, :4], logits[:, :4], **TOL)
    assert not torch.allclose(model(src, src_mask, changed).logits[:, 4:], logits[:, 4:])


def test_attention_maps_are_distributions_and_match_forward():
    model = build(seed=7)
    src, src_mask, tgt_in, _ = random_batch([5, 3], [4, 4], seed=7)
    maps = model.attention_maps(src, src_mask, tgt_in)
    assert maps.encoder.shape == (2, 2, 4, 5, 5)
    assert maps.decoder_self.shape == (2, 2, 4, 4, 4) and maps.cross.shape == (2, 2, 4, 4, 5)
    for weights in maps:
        torch.testing.assert_close(weights.sum(-1), torch.ones(weights.shape[:-1]), **TOL)
    assert (maps.cross[1, ..., 3:] == 0).all() and (maps.encoder[1, ..., 3:] == 0).all()
    assert (maps.decoder_self.triu(diagonal=1) == 0).all()  # causal
    torch.testing.assert_close(maps.cross[:, -1].mean(1), model(src, src_mask, tgt_in).weights, **TOL)


# ----- incremental decoding with a key/value cache ---------------------------------------------


@pytest.mark.parametrize("norm_first", [False, True], ids=["postLN", "preLN"])
def test_cached_steps_equal_teacher_forcing_and_the_cache_grows(norm_first):
    model = build(seed=8, norm_first=norm_first)
    src, src_mask, tgt_in, _ = random_batch([6, 2, 4], [7, 7, 7], seed=8)
    logits, weights = model(src, src_mask, tgt_in)
    state = model.encode(src, src_mask)
    for t in range(tgt_in.size(1)):
        step_logits, state, step_weights = model.decode_step(tgt_in[:, t], state)
        assert state["self_k.1"].shape == (3, 4, t + 1, 8)  # (B, H, P, Dh): one more key per step
        torch.testing.assert_close(step_logits, logits[:, t], **TOL)
        torch.testing.assert_close(step_weights, weights[:, t], **TOL)


@pytest.mark.parametrize("search", [greedy_decode, beam_search], ids=["greedy", "beam"])
def test_cached_and_uncached_decoding_agree(search):
    model = build(seed=9, num_decoder_layers=3)
    src, src_mask, _, _ = random_batch([6, 2, 5], [1, 1, 1], seed=9)
    kwargs = dict(start_id=1, stop_id=2, max_len=16)
    cached = search(model, src, src_mask, **kwargs)
    model.use_kv_cache = False
    plain = search(model, src, src_mask, **kwargs)
    assert "tokens" in model.encode(src, src_mask)  # really the other code path
    assert cached.tokens.size(1) > 5
    assert torch.equal(cached.tokens, plain.tokens)
    torch.testing.assert_close(cached.scores, plain.scores, **TOL)
    torch.testing.assert_close(cached.weights, plain.weights, **TOL)


def test_reorder_state_moves_the_cache_with_the_rows():
    model = build(seed=10)
    src, src_mask, tgt_in, _ = random_batch([5, 3, 4], [3, 3, 3], seed=10)
    state = model.encode(src, src_mask)
    _, state, _ = model.decode_step(tgt_in[:, 0], state)
    index = torch.tensor([2, 2, 0])
    logits, _, _ = model.decode_step(tgt_in[index, 1], model.reorder_state(state, index))
    alone, _, _ = model.decode_step(tgt_in[:, 1], state)
    torch.testing.assert_close(logits, alone[index], **TOL)


# ----- bad input --------------------------------------------------------------------------------


def test_config_is_frozen_and_validated():
    config = TransformerConfig.tiny(SRC_V, TGT_V)
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.d_model = 8
    with pytest.raises(ValueError, match="divisible by nhead = 3"):
        TransformerConfig(SRC_V, TGT_V, d_model=32, nhead=3)
    with pytest.raises(ValueError, match="one shared vocabulary"):
        TransformerConfig(SRC_V, TGT_V, share_src_tgt_embeddings=True)
    with pytest.raises(ValueError, match="activation must be one of"):
        TransformerConfig(SRC_V, TGT_V, activation="tanh")
    with pytest.raises(ValueError, match="dropout must be in"):
        TransformerConfig(SRC_V, TGT_V, dropout=1.0)
    base = TransformerConfig(SRC_V, TGT_V)
    assert (base.d_model, base.nhead, base.num_encoder_layers, base.dim_feedforward, base.dropout,
            base.label_smoothing, base.warmup_steps) == (512, 8, 6, 2048, 0.1, 0.1, 4000)


def test_vocab_sizes_must_match_the_config():
    task = number_task(0, 100, "en", "de")
    config = TransformerConfig.tiny(len(task.src_vocab), len(task.tgt_vocab) + 1)
    with pytest.raises(ValueError, match=r"tgt vocabulary has \d+ tokens but TransformerConfig.tgt_vocab_size"):
        config.check_vocabs(task.src_vocab, task.tgt_vocab)
    model = build()
    src, src_mask, tgt_in, _ = random_batch([3], [2])
    tgt_in[0, 1] = TGT_V
    with pytest.raises(ValueError, match="outside the target vocabulary"):
        model(src, src_mask, tgt_in)


def test_sequences_longer_than_the_positional_table_are_caught():
    model = build(max_len=8)
    src, src_mask, tgt_in, _ = random_batch([9], [3])
    with pytest.raises(ValueError, match="source reaches position 8.*max_len = 8"):
        model(src, src_mask, tgt_in)
    src, src_mask, tgt_in, _ = random_batch([4], [9])
    with pytest.raises(ValueError, match="target reaches position 8"):
        model(src, src_mask, tgt_in)
    state = model.encode(src, src_mask)
    for _ in range(8):
        _, state, _ = model.decode_step(tgt_in[:, 0], state)
    with pytest.raises(ValueError, match="target reaches position 8"):
        model.decode_step(tgt_in[:, 0], state)


def test_wrong_masks_are_caught():
    layer = TransformerEncoderLayer(**layer_kwargs())
    x = torch.randn(2, 5, 32)
    with pytest.raises(ValueError, match=r"key_padding_mask must have shape \(B, S\) = \(2, 5\)"):
        layer(x, src_key_padding_mask=torch.zeros(2, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"attn_mask must end in \(T, S\) = \(5, 5\)"):
        layer(x, src_mask=causal_mask(4))
    with pytest.raises(TypeError, match="bool mask"):
        layer(x, src_key_padding_mask=torch.zeros(2, 5, dtype=torch.long))
    model = build()
    src, src_mask, tgt_in, _ = random_batch([4, 2], [3, 3])
    with pytest.raises(ValueError, match="~mask"):
        model(src, ~src_mask, tgt_in)


def test_unsupported_layer_options_are_named():
    with pytest.raises(ValueError, match="batch_first=True"):
        TransformerEncoderLayer(32, 4, batch_first=False)
    with pytest.raises(ValueError, match="activation must be one of"):
        TransformerDecoderLayer(32, 4, activation="tanh")
    with pytest.raises(ValueError, match="batch_first=True"):
        TransformerEncoderLayer.from_torch(nn.TransformerEncoderLayer(32, 4))


# ----- training pieces ---------------------------------------------------------------------------


def test_lr_schedule_follows_equation_3():
    # Hand-computed: 512^-0.5 * 4000^-1.5 = 1.7469e-7 at step 1; peak 512^-0.5 * 4000^-0.5 = 6.9877e-4.
    assert transformer_lr(1, 512, 4000) == pytest.approx(1.746928e-7, rel=1e-5)
    assert transformer_lr(4000, 512, 4000) == pytest.approx(6.987712e-4, rel=1e-5)
    assert transformer_lr(16000, 512, 4000) == pytest.approx(6.987712e-4 / 2, rel=1e-5)
    optimizer = torch.optim.Adam([nn.Parameter(torch.zeros(1))], lr=123.0)
    scheduler = WarmupInverseSqrtLR(optimizer, d_model=512, warmup_steps=4000)
    seen = []
    for _ in range(5):
        seen.append(optimizer.param_groups[0]["lr"])  # the lr the next update uses
        optimizer.step()
        scheduler.step()
    assert seen == pytest.approx([k * 1.746928e-7 for k in range(1, 6)], rel=1e-5)  # linear warm-up from step 1


def test_course_training_loop_trains_it_and_checkpoints_round_trip(tmp_path):
    task = number_task(0, 40, "en", "de")
    from coursekit.data import TranslationDataset, make_loader

    loader = make_loader(TranslationDataset(task.train[:16], task.src_vocab, task.tgt_vocab), 16, shuffle=True)
    config = dataclasses.replace(TransformerConfig.tiny(len(task.src_vocab), len(task.tgt_vocab)), warmup_steps=20)
    torch.manual_seed(0)
    model = Transformer(config)
    optimizer = torch.optim.Adam(model.parameters(), lr=1.0, betas=(0.9, 0.98), eps=1e-9)
    scheduler = WarmupInverseSqrtLR(optimizer, config.d_model, config.warmup_steps, factor=0.2)
    train(model, loader, max_steps=60, optimizer=optimizer, scheduler=scheduler, device="cpu", progress=False)
    assert evaluate_translation(model, task.train[:16], task.src_vocab, task.tgt_vocab)["exact_match"] == 1.0
    save_checkpoint(tmp_path / "t.pt", model, src_vocab=task.src_vocab, tgt_vocab=task.tgt_vocab)
    loaded = load_checkpoint(tmp_path / "t.pt", Transformer).model.eval()
    assert loaded.out.weight is loaded.tgt_embed.weight  # still tied after loading
    src, src_mask, tgt_in, _ = random_batch([3, 2], [3, 3], src_v=len(task.src_vocab), tgt_v=len(task.tgt_vocab))
    torch.testing.assert_close(loaded(src, src_mask, tgt_in).logits, model.eval()(src, src_mask, tgt_in).logits)


def test_chrf_and_translate_with_attention():
    assert chrf(["zwei und vierzig"], ["zweiundvierzig"]) == pytest.approx(100.0)  # whitespace is ignored
    assert chrf(["drei"], ["vier"]) < 20
    task = number_task(0, 30, "en", "de")
    model = Transformer(TransformerConfig.tiny(len(task.src_vocab), len(task.tgt_vocab))).eval()
    tokens, maps = translate_with_attention(model, ["twenty", "one"], task.src_vocab, task.tgt_vocab)
    assert maps.cross.shape == (1, 2, 4, len(tokens), 2) and maps.decoder_self.shape[-1] == len(tokens)
