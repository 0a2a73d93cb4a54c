"""coursekit.attention.scaled_dot_product_attention against torch's fused implementation and known properties."""

import math

import pytest
import torch
import torch.nn.functional as F

from coursekit.attention import scaled_dot_product_attention
from coursekit.masks import causal_mask, padding_mask, to_sdpa_mask

TOL = dict(atol=1e-5, rtol=1e-5)


def qkv(*lead, T=5, S=7, dk=8, dv=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(*lead, T, dk, generator=g), torch.randn(*lead, S, dk, generator=g),
            torch.randn(*lead, S, dv, generator=g))


def reference_weights(q, k, mask=None):
    """softmax(QK^T / sqrt(d_k)) written out independently, for the weights torch's kernel never returns."""
    scores = torch.einsum("...td,...sd->...ts", q, k) / math.sqrt(q.shape[-1])
    if mask is not None:
        scores = scores.masked_fill(mask, float("-inf"))
    return scores.softmax(-1)


@pytest.mark.parametrize("lead", [(), (3,), (2, 4), (2, 3, 2)])
def test_matches_torch_for_any_leading_dims(lead):
    q, k, v = qkv(*lead)
    out, weights = scaled_dot_product_attention(q, k, v)
    torch.testing.assert_close(out, F.scaled_dot_product_attention(q, k, v), **TOL)
    torch.testing.assert_close(weights, reference_weights(q, k), **TOL)
    assert weights.shape == (*lead, 5, 7)


def test_matches_torch_with_causal_mask():
    q, k, v = qkv(2, 3, T=6, S=6)
    out, weights = scaled_dot_product_attention(q, k, v, attn_mask=causal_mask(6))
    torch.testing.assert_close(out, F.scaled_dot_product_attention(q, k, v, is_causal=True), **TOL)
    assert torch.all(weights.triu(diagonal=1) == 0), "a query attended to a future key"


def test_matches_torch_with_padding_and_causal_masks():
    q, k, v = qkv(3, T=6, S=6, seed=1)
    kpm = padding_mask(torch.tensor([6, 4, 2]))  # (B, S)
    out, weights = scaled_dot_product_attention(q, k, v, attn_mask=causal_mask(6), key_padding_mask=kpm)
    combined = causal_mask(6)[None] | kpm[:, None, :]  # (B, T, S)
    torch.testing.assert_close(out, F.scaled_dot_product_attention(q, k, v, attn_mask=to_sdpa_mask(combined)), **TOL)
    torch.testing.assert_close(weights, reference_weights(q, k, combined), **TOL)


def test_key_padding_mask_broadcasts_over_heads():
    q, k, v = qkv(2, 4, seed=2)  # (B, H, T, D)
    kpm = padding_mask(torch.tensor([7, 3]))
    _, weights = scaled_dot_product_attention(q, k, v, key_padding_mask=kpm)
    assert torch.all(weights[1, :, :, 3:] == 0)
    assert torch.all(weights[0] > 0)


def test_padding_is_exactly_zero_and_rows_sum_to_one():
    q, k, v = qkv(4, seed=3)
    kpm = padding_mask(torch.tensor([7, 5, 3, 1]))
    _, weights = scaled_dot_product_attention(q, k, v, key_padding_mask=kpm)
    assert torch.all(weights.masked_select(kpm[:, None, :].expand_as(weights)) == 0)
    torch.testing.assert_close(weights.sum(-1), torch.ones(4, 5), **TOL)


def test_padding_changes_nothing_at_real_positions():
    q, k, v = qkv(1, S=4, seed=4)
    out_short, _ = scaled_dot_product_attention(q, k, v)
    noise_k, noise_v = torch.randn(1, 3, 8) * 50, torch.randn(1, 3, 6) * 50
    k_pad, v_pad = torch.cat([k, noise_k], 1), torch.cat([v, noise_v], 1)
    out_padded, _ = scaled_dot_product_attention(q, k_pad, v_pad, key_padding_mask=padding_mask([4], max_len=7))
    torch.testing.assert_close(out_padded, out_short, **TOL)


def test_causal_mask_leaks_nothing_from_the_future():
    q, k, v = qkv(1, T=6, S=6, seed=5)
    out, _ = scaled_dot_product_attention(q, k, v, attn_mask=causal_mask(6))
    k2, v2 = k.clone(), v.clone()
    k2[:, 4:], v2[:, 4:] = torch.randn(1, 2, 8), torch.randn(1, 2, 6)  # change the future only
    out2, _ = scaled_dot_product_attention(q, k2, v2, attn_mask=causal_mask(6))
    torch.testing.assert_close(out2[:, :4], out[:, :4], **TOL)
    assert not torch.allclose(out2[:, 4:], out[:, 4:])


def test_float_mask_is_added_like_torch():
    q, k, v = qkv(2, seed=6)
    bias = torch.randn(5, 7)
    out, _ = scaled_dot_product_attention(q, k, v, attn_mask=bias)
    torch.testing.assert_close(out, F.scaled_dot_product_attention(q, k, v, attn_mask=bias), **TOL)


def test_fused_path_matches_and_returns_no_weights():
    q, k, v = qkv(2, 3, T=6, S=6, seed=7)
    kpm = padding_mask(torch.tensor([6, 3]))
    expected, _ = scaled_dot_product_attention(q, k, v, attn_mask=causal_mask(6), key_padding_mask=kpm)
    fused, weights = scaled_dot_product_attention(q, k, v, attn_mask=causal_mask(6), key_padding_mask=kpm, need_weights=False)
    assert weights is None
    torch.testing.assert_close(fused, expected, **TOL)


def test_scaling_is_one_over_sqrt_dk():
    q, k, v = qkv(seed=8, dk=64)
    _, weights = scaled_dot_product_attention(q, k, v)
    _, unscaled = scaled_dot_product_attention(q, k, v, scale=1.0)
    torch.testing.assert_close(weights, reference_weights(q, k), **TOL)
    assert not torch.allclose(weights, unscaled, atol=1e-3)


def test_gradients_match_torch():
    q, k, v = (t.requires_grad_() for t in qkv(2, seed=9))
    out, _ = scaled_dot_product_attention(q, k, v, attn_mask=causal_mask(5, 7))
    grads = torch.autograd.grad(out.square().sum(), (q, k, v))
    q2, k2, v2 = (t.detach().clone().requires_grad_() for t in (q, k, v))
    ref = F.scaled_dot_product_attention(q2, k2, v2, attn_mask=to_sdpa_mask(causal_mask(5, 7)))
    for got, want in zip(grads, torch.autograd.grad(ref.square().sum(), (q2, k2, v2))):
        torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)


def test_dropout_drops_weights_and_rescales():
    torch.manual_seed(0)
    q, k, v = qkv(4, 8, T=16, S=16, seed=10)
    _, weights = scaled_dot_product_attention(q, k, v, dropout_p=0.5)
    dropped = (weights == 0).float().mean().item()
    assert 0.4 < dropped < 0.6
    torch.testing.assert_close(weights.sum(-1).mean(), torch.tensor(1.0), atol=0.05, rtol=0)


@pytest.mark.parametrize("shapes, message", [
    (((2, 5, 8), (2, 7, 4), (2, 7, 6)), "share their last dim d_k"),
    (((2, 5, 8), (2, 7, 8), (2, 6, 6)), "same number of positions S"),
    (((2, 5, 8), (3, 7, 8), (3, 7, 6)), "do not broadcast"),
    (((8,), (7, 8), (7, 6)), r"must have shape \(\.\.\., length, features\)"),
])
def test_bad_shapes_raise_clear_errors(shapes, message):
    q, k, v = (torch.zeros(s) for s in shapes)
    with pytest.raises(ValueError, match=message):
        scaled_dot_product_attention(q, k, v)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_bf16_fused_matches_explicit():
    q, k, v = (t.cuda().bfloat16() for t in qkv(4, 8, T=128, S=128, dk=64, dv=64, seed=11))
    explicit, _ = scaled_dot_product_attention(q, k, v, attn_mask=causal_mask(128, device="cuda"))
    fused, _ = scaled_dot_product_attention(q, k, v, attn_mask=causal_mask(128, device="cuda"), need_weights=False)
    torch.testing.assert_close(fused.float(), explicit.float(), atol=2e-2, rtol=2e-2)
