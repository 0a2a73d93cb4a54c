"""coursekit.attention's modules: the scoring family against the papers' formulas written out here,
and MultiHeadAttention against torch.nn.MultiheadAttention with the same weights."""

import math

import pytest
import torch
from torch import nn

from coursekit.attention import (
    AdditiveAttention,
    DotProductAttention,
    GeneralAttention,
    MultiHeadAttention,
    scaled_dot_product_attention,
)
from coursekit.masks import causal_mask, padding_mask

TOL = dict(atol=1e-5, rtol=1e-5)
B, T, S, DQ, DK, DV = 3, 4, 6, 5, 7, 8


def randn(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


# ---------------------------------------------------------------- scoring family


def additive_reference(m, q, k):
    """Bahdanau et al. (2015): e_ts = v^T tanh(W_q q_t + W_k k_s), one (t, s) pair at a time."""
    Wq, Wk, bk, v = m.W_q.weight, m.W_k.weight, m.W_k.bias, m.v.weight[0]
    scores = torch.empty(q.shape[0], q.shape[1], k.shape[1])
    for b in range(q.shape[0]):
        for t in range(q.shape[1]):
            for s in range(k.shape[1]):
                scores[b, t, s] = v @ torch.tanh(Wq @ q[b, t] + Wk @ k[b, s] + bk)
    return scores


def general_reference(m, q, k):
    """Luong et al. (2015) "general": e_ts = q_t^T W k_s."""
    return torch.einsum("btq,qk,bsk->bts", q, m.W.weight, k)


def dot_reference(m, q, k):
    scores = torch.einsum("btd,bsd->bts", q, k)
    return scores / math.sqrt(q.shape[-1]) if m.scaled else scores


def attention_reference(scores, v, mask=None):
    """softmax over s (masked with -inf) then sum_s alpha_ts v_s, written with einsum."""
    if mask is not None:
        scores = scores.masked_fill(mask, float("-inf"))
    alpha = scores.softmax(-1)
    return torch.einsum("bts,bsd->btd", alpha, v), alpha


SCORERS = {  # module class, its arguments, the reference score, query and key sizes
    "additive": (AdditiveAttention, dict(query_dim=DQ, key_dim=DK, hidden_dim=9), additive_reference, DQ, DK),
    "general": (GeneralAttention, dict(query_dim=DQ, key_dim=DK), general_reference, DQ, DK),
    "dot": (DotProductAttention, dict(scaled=False), dot_reference, DK, DK),
    "scaled_dot": (DotProductAttention, dict(scaled=True), dot_reference, DK, DK),
}


@pytest.fixture(params=list(SCORERS))
def scorer(request):
    cls, kwargs, reference, dq, dk = SCORERS[request.param]
    torch.manual_seed(0)
    m = cls(**kwargs)
    q, k, v = randn(B, T, dq, seed=1), randn(B, S, dk, seed=2), randn(B, S, DV, seed=3)
    return m, reference, q, k, v


def test_score_matches_the_papers_formula(scorer):
    m, reference, q, k, _ = scorer
    torch.testing.assert_close(m.score(q, k), reference(m, q, k), **TOL)


def test_forward_matches_formula_with_padding(scorer):
    m, reference, q, k, v = scorer
    kpm = padding_mask(torch.tensor([6, 4, 1]))
    out, weights = m(q, k, v, key_padding_mask=kpm)
    want_out, want_weights = attention_reference(reference(m, q, k), v, kpm[:, None, :])
    torch.testing.assert_close(out, want_out, **TOL)
    torch.testing.assert_close(weights, want_weights, **TOL)
    assert torch.all(weights.masked_select(kpm[:, None, :].expand_as(weights)) == 0), "padding got weight"
    torch.testing.assert_close(weights.sum(-1), torch.ones(B, T), **TOL)


def test_padding_changes_nothing_at_real_positions(scorer):
    m, _, q, k, v = scorer
    out, weights = m(q, k, v)
    k_pad = torch.cat([k, 100 * randn(B, 3, k.shape[-1], seed=4)], dim=1)
    v_pad = torch.cat([v, 100 * randn(B, 3, DV, seed=5)], dim=1)
    out_pad, weights_pad = m(q, k_pad, v_pad, key_padding_mask=padding_mask([S] * B, max_len=S + 3))
    torch.testing.assert_close(out_pad, out, **TOL)
    torch.testing.assert_close(weights_pad[..., :S], weights, **TOL)


def test_causal_attn_mask(scorer):
    m, reference, q, k, v = scorer
    mask = causal_mask(T, S)
    out, weights = m(q, k, v, attn_mask=mask)
    torch.testing.assert_close(out, attention_reference(reference(m, q, k), v, mask)[0], **TOL)
    assert torch.all(weights[:, mask] == 0)


def test_single_decoder_step_query(scorer):
    m, _, q, k, v = scorer
    kpm = padding_mask(torch.tensor([6, 4, 1]))
    out, weights = m(q[:, 2], k, v, key_padding_mask=kpm)  # (B, Dq): one decoder step
    full_out, full_weights = m(q, k, v, key_padding_mask=kpm)
    assert out.shape == (B, DV) and weights.shape == (B, S)
    torch.testing.assert_close(out, full_out[:, 2], **TOL)
    torch.testing.assert_close(weights, full_weights[:, 2], **TOL)


def test_scoring_modules_reject_bad_shapes():
    with pytest.raises(ValueError, match=r"same size Dk"):
        DotProductAttention()(randn(B, T, 4), randn(B, S, 5), randn(B, S, DV))
    with pytest.raises(ValueError, match=r"query must have shape \(B, T, Dq\) with Dq = 5"):
        GeneralAttention(DQ, DK)(randn(B, T, 6), randn(B, S, DK), randn(B, S, DV))
    with pytest.raises(ValueError, match=r"key must have shape \(B, S, Dk\)"):
        AdditiveAttention(DQ, DK, 3)(randn(B, T, DQ), randn(S, DK), randn(S, DV))
    with pytest.raises(ValueError, match=r"must share B"):
        AdditiveAttention(DQ, DK, 3)(randn(B, T, DQ), randn(B, S, DK), randn(B, S + 1, DV))
    with pytest.raises(ValueError, match=r"key_padding_mask must have shape \(B, S\)"):
        DotProductAttention()(randn(B, T, DK), randn(B, S, DK), randn(B, S, DV), key_padding_mask=torch.zeros(B, T, dtype=torch.bool))


def test_additive_attention_has_the_contract_parameters():
    m = AdditiveAttention(DQ, DK, hidden_dim=9)
    assert m.W_q.weight.shape == (9, DQ) and m.W_q.bias is None
    assert m.W_k.weight.shape == (9, DK)
    assert m.v.weight.shape == (1, 9) and m.v.bias is None


def test_scaled_dot_module_agrees_with_the_function():
    q, k, v = randn(B, T, DK, seed=6), randn(B, S, DK, seed=7), randn(B, S, DV, seed=8)
    kpm = padding_mask(torch.tensor([6, 2, 5]))
    got = DotProductAttention()(q, k, v, key_padding_mask=kpm)
    want = scaled_dot_product_attention(q, k, v, key_padding_mask=kpm)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, **TOL)


# ---------------------------------------------------------------- multi-head attention

E, H = 32, 4


def pair(bias=True, seed=0):
    torch.manual_seed(seed)
    reference = nn.MultiheadAttention(E, H, bias=bias, batch_first=True)
    with torch.no_grad():  # torch starts biases at 0; random ones check they are copied to the right place
        for p in reference.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return reference, MultiHeadAttention.from_torch(reference)


def leaves(*tensors):
    """Two independent copies of the inputs, each a leaf that collects its own gradient."""
    first = [t.clone().requires_grad_() for t in tensors]
    second = [t.clone().requires_grad_() for t in tensors]
    return first, second


def assert_same(reference, ours, q, k, v, grad_tol=TOL, **kwargs):
    """Outputs, weights and input gradients of both modules agree (the same tensor is passed for
    query/key/value when they are the same, so torch takes its packed self-attention path)."""
    (q1, k1, v1), (q2, k2, v2) = leaves(q, k, v)
    if q is k is v:
        k1 = v1 = q1
        k2 = v2 = q2
    want_out, want_w = reference(q1, k1, v1, **kwargs)
    got_out, got_w = ours(q2, k2, v2, **kwargs)
    torch.testing.assert_close(got_out, want_out, **TOL)
    if want_w is None:
        assert got_w is None
    else:
        torch.testing.assert_close(got_w, want_w, **TOL)
    upstream = randn(*want_out.shape, seed=99)
    want_grads = torch.autograd.grad(want_out, [q1, k1, v1], upstream, allow_unused=True)
    got_grads = torch.autograd.grad(got_out, [q2, k2, v2], upstream, allow_unused=True)
    for got, want in zip(got_grads, want_grads):
        torch.testing.assert_close(got, want, **grad_tol)
    return got_out, got_w


@pytest.mark.parametrize("need_weights", [True, False])
@pytest.mark.parametrize("average", [True, False])
def test_self_attention_matches_torch(need_weights, average):
    reference, ours = pair()
    x = randn(2, 5, E, seed=1)
    _, w = assert_same(reference, ours, x, x, x, need_weights=need_weights, average_attn_weights=average)
    if need_weights:
        assert w.shape == ((2, 5, 5) if average else (2, H, 5, 5))


@pytest.mark.parametrize("need_weights", [True, False])
def test_cross_attention_with_padding_matches_torch(need_weights):
    reference, ours = pair(seed=1)
    q, mem = randn(3, 4, E, seed=2), randn(3, 7, E, seed=3)  # T=4 queries, S=7 keys
    kpm = padding_mask(torch.tensor([7, 5, 2]))
    _, w = assert_same(reference, ours, q, mem, mem, key_padding_mask=kpm, need_weights=need_weights,
                       average_attn_weights=False)
    if need_weights:
        assert torch.all(w.masked_select(kpm[:, None, None, :].expand_as(w)) == 0)
        torch.testing.assert_close(w.sum(-1), torch.ones(3, H, 4), **TOL)


def test_key_and_value_may_differ():
    reference, ours = pair(seed=2)
    assert_same(reference, ours, randn(2, 3, E, seed=4), randn(2, 6, E, seed=5), randn(2, 6, E, seed=6))


@pytest.mark.filterwarnings("ignore:Support for mismatched key_padding_mask and attn_mask")  # torch's, float case
@pytest.mark.parametrize("kind", ["bool", "float"])
@pytest.mark.parametrize("need_weights", [True, False])
def test_causal_and_padding_masks_match_torch(kind, need_weights):
    reference, ours = pair(seed=3)
    x = randn(3, 6, E, seed=7)
    mask = causal_mask(6) if kind == "bool" else nn.Transformer.generate_square_subsequent_mask(6)
    kpm = padding_mask(torch.tensor([6, 4, 3]))
    assert_same(reference, ours, x, x, x, attn_mask=mask, key_padding_mask=kpm, need_weights=need_weights)


@pytest.mark.parametrize("need_weights", [True, False])
def test_is_causal_builds_the_mask_torch_must_be_given(need_weights):
    reference, ours = pair(seed=4)
    x = randn(2, 6, E, seed=8)
    (x1,), (x2,) = leaves(x)
    want, _ = reference(x1, x1, x1, attn_mask=causal_mask(6), is_causal=True, need_weights=need_weights)
    got, _ = ours(x2, x2, x2, is_causal=True, need_weights=need_weights)
    torch.testing.assert_close(got, want, **TOL)


def test_per_head_attn_mask_in_torchs_3d_form():
    reference, ours = pair(seed=5)
    x = randn(2, 5, E, seed=9)
    mask = torch.rand(2 * H, 5, 5, generator=torch.Generator().manual_seed(0)) < 0.4
    mask[..., 0] = False  # leave every query at least one key
    assert_same(reference, ours, x, x, x, attn_mask=mask, average_attn_weights=False)


def test_without_bias_matches_torch():
    reference, ours = pair(bias=False, seed=6)
    assert ours.q_proj.bias is None and ours.out_proj.bias is None
    x = randn(2, 5, E, seed=10)
    assert_same(reference, ours, x, x, x)


def test_from_torch_copies_every_projection_to_its_place():
    reference, ours = pair(seed=7)
    Wq, Wk, Wv = reference.in_proj_weight.chunk(3)
    torch.testing.assert_close(ours.q_proj.weight, Wq, rtol=0, atol=0)
    torch.testing.assert_close(ours.k_proj.weight, Wk, rtol=0, atol=0)
    torch.testing.assert_close(ours.v_proj.weight, Wv, rtol=0, atol=0)
    torch.testing.assert_close(ours.v_proj.bias, reference.in_proj_bias[2 * E:], rtol=0, atol=0)
    torch.testing.assert_close(ours.out_proj.weight, reference.out_proj.weight, rtol=0, atol=0)


def test_parameter_gradients_match_torch():
    reference, ours = pair(seed=8)
    x = randn(2, 5, E, seed=11)
    kpm = padding_mask(torch.tensor([5, 3]))
    reference(x, x, x, key_padding_mask=kpm)[0].square().sum().backward()
    ours(x, x, x, key_padding_mask=kpm)[0].square().sum().backward()
    Wq, Wk, Wv = reference.in_proj_weight.grad.chunk(3)
    for got, want in [(ours.q_proj.weight.grad, Wq), (ours.k_proj.weight.grad, Wk), (ours.v_proj.weight.grad, Wv),
                      (ours.out_proj.weight.grad, reference.out_proj.weight.grad)]:
        torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)


def test_permutation_equivariance_without_positions():
    _, ours = pair(seed=9)
    x = randn(2, 7, E, seed=12)
    perm = torch.randperm(7, generator=torch.Generator().manual_seed(1))
    out, _ = ours(x, x, x)
    out_perm, _ = ours(x[:, perm], x[:, perm], x[:, perm])
    torch.testing.assert_close(out_perm, out[:, perm], **TOL)


@pytest.mark.parametrize("need_weights", [True, False])
def test_causal_mask_leaks_nothing_from_the_future(need_weights):
    _, ours = pair(seed=10)
    x = randn(1, 6, E, seed=13).requires_grad_()
    out, _ = ours(x, x, x, is_causal=True, need_weights=need_weights)
    for t in range(6):
        (grad,) = torch.autograd.grad(out[0, t].sum(), x, retain_graph=True)
        assert torch.all(grad[0, t + 1:] == 0), f"output {t} depends on a later input"
        assert torch.all(grad[0, : t + 1].abs().sum(-1) > 0)


def test_key_value_cache_through_the_split_steps_equals_full_causal_attention():
    """Incremental decoding with the hooks a cache needs: project only the new token, append its
    key and value to the past ones, attend. Must equal causal self-attention over the whole sequence."""
    _, ours = pair(seed=11)
    x = randn(2, 5, E, seed=14)
    full, _ = ours(x, x, x, is_causal=True)
    past_k = past_v = None
    for t in range(5):
        new = x[:, t : t + 1]  # (B, 1, D)
        k, v = ours._split_heads(ours.k_proj(new)), ours._split_heads(ours.v_proj(new))  # (B, H, 1, Dh)
        past_k = k if past_k is None else torch.cat([past_k, k], dim=2)  # (B, H, t+1, Dh)
        past_v = v if past_v is None else torch.cat([past_v, v], dim=2)
        step, _ = ours.attend_heads(ours._split_heads(ours.q_proj(new)), past_k, past_v)
        torch.testing.assert_close(step[:, 0], full[:, t], **TOL)


def test_initialised_like_torch():
    torch.manual_seed(0)
    reference, ours = nn.MultiheadAttention(256, 8, batch_first=True), MultiHeadAttention(256, 8)
    for proj, packed in zip((ours.q_proj, ours.k_proj, ours.v_proj), reference.in_proj_weight.chunk(3)):
        assert abs(proj.weight.std().item() / packed.std().item() - 1) < 0.03
        assert proj.weight.abs().max() <= packed.abs().max() * 1.001
        assert torch.all(proj.bias == 0)
    assert torch.all(ours.out_proj.bias == 0)


def test_dropout_only_in_training_mode():
    torch.manual_seed(0)
    m = MultiHeadAttention(E, H, dropout=0.5)
    x = randn(2, 16, E, seed=15)
    _, w = m(x, x, x, average_attn_weights=False)
    assert 0.3 < (w == 0).float().mean() < 0.7
    m.eval()
    _, w = m(x, x, x, average_attn_weights=False)
    assert torch.all(w > 0)


@pytest.mark.parametrize("embed_dim, num_heads, message", [
    (250, 8, r"embed_dim=250 is not divisible by num_heads=8.*num_heads to a divisor.*e\.g\. 10\).*e\.g\. 248\)"),
    (32, 0, r"must be positive"),
])
def test_bad_head_count_says_what_to_change(embed_dim, num_heads, message):
    with pytest.raises(ValueError, match=message):
        MultiHeadAttention(embed_dim, num_heads)


@pytest.mark.parametrize("shapes, message", [
    (((5, E), (5, E), (5, E)), r"query must have shape \(B, T, D\) with D = embed_dim = 32"),
    (((2, 5, E), (2, 6, E + 1), (2, 6, E)), r"key must have shape \(B, S, D\)"),
    (((2, 5, E), (2, 6, E), (2, 7, E)), r"must share B, and key and value S"),
    (((2, 5, E), (3, 6, E), (3, 6, E)), r"must share B"),
])
def test_bad_input_shapes_raise_clear_errors(shapes, message):
    m = MultiHeadAttention(E, H)
    with pytest.raises(ValueError, match=message):
        m(*(torch.zeros(s) for s in shapes))


def test_bad_masks_raise_clear_errors():
    m = MultiHeadAttention(E, H)
    x = torch.zeros(2, 5, E)
    with pytest.raises(TypeError, match=r"key_padding_mask has dtype torch.int64"):
        m(x, x, x, key_padding_mask=torch.zeros(2, 5, dtype=torch.long))
    with pytest.raises(ValueError, match=r"\(B\*H, T, S\) with B\*H = 8"):
        m(x, x, x, attn_mask=torch.zeros(3, 5, 5, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"attn_mask must end in \(T, S\) = \(5, 5\)"):
        m(x, x, x, attn_mask=torch.zeros(5, 4, dtype=torch.bool))


def test_from_torch_rejects_what_it_cannot_copy():
    with pytest.raises(ValueError, match="kdim/vdim"):
        MultiHeadAttention.from_torch(nn.MultiheadAttention(E, H, kdim=16, vdim=16, batch_first=True))


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_bf16_autocast_fused_path_agrees_with_explicit_path():
    torch.manual_seed(0)
    m = MultiHeadAttention(256, 8).cuda()
    x = torch.randn(4, 128, 256, device="cuda")
    kpm = padding_mask(torch.tensor([128, 100, 64, 1]), max_len=128).cuda()
    with torch.autocast("cuda", dtype=torch.bfloat16):
        explicit, w = m(x, x, x, key_padding_mask=kpm, is_causal=True)
        fused, _ = m(x, x, x, key_padding_mask=kpm, is_causal=True, need_weights=False)
    assert fused.dtype == torch.bfloat16
    torch.testing.assert_close(fused.float(), explicit.float(), atol=3e-2, rtol=3e-2)
    torch.testing.assert_close(w.float().sum(-1), torch.ones(4, 128, device="cuda"), atol=1e-2, rtol=0)
