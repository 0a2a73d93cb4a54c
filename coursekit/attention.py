"""Attention: every query takes a weighted average of the values, weighted by how well it matches each key.

Shape legend: B batch, H heads, T queries (target length), S keys/values (source length),
D model (embedding) dim, Dh = D / H head dim, Dq / Dk / Dv query / key / value size.
:func:`scaled_dot_product_attention` accepts any number of leading dims: (T, Dk), (B, T, Dk) and
(B, H, T, Dk) all work. The modules are batch-first: (B, T, D).

Contents:

- :func:`scaled_dot_product_attention` (Vaswani et al., 2017, eq. 1) and :func:`attend`, the masked
  softmax + weighted sum that every attention in the course shares.
- The scoring family, one module per score function: :class:`AdditiveAttention` (Bahdanau et al., 2015),
  :class:`DotProductAttention` and :class:`GeneralAttention` (Luong et al., 2015).
- :class:`MultiHeadAttention` (Vaswani et al., 2017, section 3.2.2), a drop-in for
  ``torch.nn.MultiheadAttention(batch_first=True)``.

Masks follow torch.nn (bool, True = not allowed; see :mod:`coursekit.masks`).

Book: chapter "Scaled dot-product attention" (book/scaled_dot_product_attention.md).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from coursekit.masks import causal_mask, merge_masks, to_sdpa_mask


def scaled_dot_product_attention(
    query: Tensor,
    key: Tensor,
    value: Tensor,
    attn_mask: Tensor | None = None,
    key_padding_mask: Tensor | None = None,
    dropout_p: float = 0.0,
    *,
    scale: float | None = None,
    need_weights: bool = True,
) -> tuple[Tensor, Tensor | None]:
    r"""Scaled dot-product attention (Vaswani et al., 2017, eq. 1).

    .. math::
        \mathrm{Attention}(Q, K, V)
        = \mathrm{softmax}\!\left(\frac{QK^\top}{\sqrt{d_k}}\right) V

    Args:
        query: (..., T, Dk).
        key: (..., S, Dk).
        value: (..., S, Dv).
        attn_mask: bool, True where query t may NOT attend to key s (torch.nn's convention),
            or float, added to the scores. Broadcastable to (..., T, S); e.g.
            :func:`coursekit.masks.causal_mask`.
        key_padding_mask: (B, S) bool, True at padding keys. B is the first leading dim.
        dropout_p: probability of dropping an attention weight. Applied whenever it is > 0, as
            in torch's function: pass ``dropout_p if self.training else 0.0`` from a module.
        scale: multiplier of the scores; defaults to :math:`1/\sqrt{d_k}`.
        need_weights: if False, use torch's fused kernel (flash / memory-efficient attention on
            GPU) and return ``None`` for the weights, which that kernel never materialises.

    Shape:
        Returns ``(output, weights)``: output (..., T, Dv); weights (..., T, S), each row a
        probability distribution over the keys, exactly 0 at masked keys. With dropout the
        weights returned are the ones used (after dropout), as in
        :class:`torch.nn.MultiheadAttention`.

    Raises:
        ValueError / TypeError naming the expected shape or dtype when the inputs do not fit.
    """
    _check_shapes(query, key, value)
    mask = merge_masks(attn_mask, key_padding_mask, query_shape=query.shape,
                       key_shape=key.shape)
    scale = 1.0 / math.sqrt(query.size(-1)) if scale is None else scale

    if not need_weights:
        output = F.scaled_dot_product_attention(
            query, key, value, attn_mask=_cast(to_sdpa_mask(mask), query.dtype),
            dropout_p=dropout_p, scale=scale,
        )
        return output, None

    scores = (query @ key.transpose(-2, -1)) * scale  # (..., T, S)
    return attend(scores, value, mask, dropout_p)


def attend(scores: Tensor, value: Tensor, mask: Tensor | None = None,
           dropout_p: float = 0.0) -> tuple[Tensor, Tensor]:
    r"""Turn scores into attention weights and take the weighted sum of the values.

    .. math::
        \alpha_{t,s} = \frac{\exp(e_{t,s})}{\sum_{s'} \exp(e_{t,s'})}, \qquad
        c_t = \sum_s \alpha_{t,s} v_s

    The second half of every attention in the course: only the score :math:`e_{t,s}` differs
    (Bahdanau et al., 2015, eqs. 5-6; Luong et al., 2015, eq. 7; Vaswani et al., 2017, eq. 1).

    Args:
        scores: (..., T, S) unnormalised scores :math:`e_{t,s}`.
        value: (..., S, Dv).
        mask: one mask from :func:`coursekit.masks.merge_masks`, broadcastable to (..., T, S):
            bool (True = not allowed) or float (added to the scores).
        dropout_p: probability of dropping an attention weight (applied whenever > 0).

    Shape:
        Returns ``(output, weights)``: output (..., T, Dv); weights (..., T, S), rows summing
        to 1 and exactly 0 at masked keys (before dropout).
    """
    if mask is not None and mask.dtype == torch.bool:
        # Out of place, and finfo.min, not -inf: a fully masked row stays finite (no NaN).
        scores = scores.masked_fill(mask, torch.finfo(scores.dtype).min)
    elif mask is not None:
        scores = scores + mask.to(scores.dtype)
    weights = torch.softmax(scores, dim=-1)  # (..., T, S)
    if dropout_p > 0.0:
        weights = F.dropout(weights, p=dropout_p)
    return weights @ value, weights  # (..., T, Dv), (..., T, S)


def _cast(mask: Tensor | None, dtype: torch.dtype) -> Tensor | None:
    """Float masks must match the query dtype for the fused kernel; bool masks stay bool."""
    if mask is None or mask.dtype == torch.bool:
        return mask
    return mask.to(dtype)


def _check_shapes(query: Tensor, key: Tensor, value: Tensor) -> None:
    for name, t in (("query", query), ("key", key), ("value", value)):
        if t.dim() < 2:
            raise ValueError(f"{name} must have shape (..., length, features), got {tuple(t.shape)}")
    if query.size(-1) != key.size(-1):
        raise ValueError(
            f"query and key must share their last dim d_k: query is {tuple(query.shape)} (..., T, Dk), "
            f"key is {tuple(key.shape)} (..., S, Dk)"
        )
    if key.size(-2) != value.size(-2):
        raise ValueError(
            f"key and value must have the same number of positions S: key is {tuple(key.shape)} (..., S, Dk), "
            f"value is {tuple(value.shape)} (..., S, Dv)"
        )
    try:
        torch.broadcast_shapes(query.shape[:-2], key.shape[:-2], value.shape[:-2])
    except RuntimeError as err:
        raise ValueError(
            f"the leading (batch) dims of query {tuple(query.shape[:-2])}, key {tuple(key.shape[:-2])} "
            f"and value {tuple(value.shape[:-2])} do not broadcast together"
        ) from err


def _check_batch_first(query: Tensor, key: Tensor, value: Tensor, query_dim: int | None, key_dim: int | None) -> None:
    """Clear errors for the modules, which take batch-first (B, T, Dq), (B, S, Dk), (B, S, Dv)."""
    for name, t, want in (("query", query, "(B, T, Dq)"), ("key", key, "(B, S, Dk)"), ("value", value, "(B, S, Dv)")):
        if t.dim() != 3:
            raise ValueError(f"{name} must have shape {want} (batch first), got {tuple(t.shape)}")
    if query_dim is not None and query.size(-1) != query_dim:
        raise ValueError(f"query must have shape (B, T, Dq) with Dq = {query_dim}, got {tuple(query.shape)}")
    if key_dim is not None and key.size(-1) != key_dim:
        raise ValueError(f"key must have shape (B, S, Dk) with Dk = {key_dim}, got {tuple(key.shape)}")
    if not (query.size(0) == key.size(0) == value.size(0)) or key.size(1) != value.size(1):
        raise ValueError(
            f"query (B, T, Dq), key (B, S, Dk) and value (B, S, Dv) must share B, and key and value S; "
            f"got query {tuple(query.shape)}, key {tuple(key.shape)}, value {tuple(value.shape)}"
        )


class ScoredAttention(nn.Module):
    r"""Attention with a learned or fixed score function; subclasses define :meth:`score`.

    The family of Luong et al. (2015, eq. 8): only the score :math:`e_{t,s} = \mathrm{score}(q_t, k_s)`
    changes; the masked softmax and the weighted sum (:func:`attend`) are shared.
    """

    query_dim: int | None = None  # checked against the inputs when set
    key_dim: int | None = None

    def score(self, query: Tensor, key: Tensor) -> Tensor:
        """Scores e_{t,s}. Shape: query (B, T, Dq), key (B, S, Dk) -> (B, T, S)."""
        raise NotImplementedError(f"{type(self).__name__} must define score(query, key)")

    def forward(
        self, query: Tensor, key: Tensor, value: Tensor, key_padding_mask: Tensor | None = None,
        attn_mask: Tensor | None = None,
    ) -> tuple[Tensor, Tensor]:
        """Attend from each query to the keys and average the values.

        Args:
            query: (B, T, Dq), or (B, Dq) for a single decoder step.
            key: (B, S, Dk).
            value: (B, S, Dv).
            key_padding_mask: (B, S) bool, True at padding keys.
            attn_mask: bool (True = not allowed) or float (added to the scores), ending in (T, S);
                (1, S) or (B, 1, S) for the single-step query form.

        Shape:
            Returns ``(output, weights)``: output (B, T, Dv) and weights (B, T, S), or (B, Dv) and
            (B, S) for a (B, Dq) query. Rows of weights sum to 1, exactly 0 at masked keys.
        """
        single_step = query.dim() == 2
        if single_step:
            query = query.unsqueeze(1)  # (B, Dq) -> (B, 1, Dq): one decoder step is T = 1
        _check_batch_first(query, key, value, self.query_dim, self.key_dim)
        mask = merge_masks(attn_mask, key_padding_mask, query_shape=query.shape,
                           key_shape=key.shape)
        output, weights = attend(self.score(query, key), value, mask)
        if single_step:  # (B, 1, Dv) -> (B, Dv), (B, 1, S) -> (B, S)
            return output.squeeze(1), weights.squeeze(1)
        return output, weights


class AdditiveAttention(ScoredAttention):
    r"""Additive ("concat") attention of Bahdanau et al. (2015, eq. 6 and appendix A.1.2).

    .. math:: e_{t,s} = v^\top \tanh(W_q q_t + W_k k_s)

    Works when queries and keys have different sizes. Costs a (B, T, S, hidden_dim)
    intermediate.

    Args:
        query_dim: Dq, size of a query (the decoder state).
        key_dim: Dk, size of a key (an encoder state).
        hidden_dim: size of the hidden layer inside the score.
    """

    def __init__(self, query_dim: int, key_dim: int, hidden_dim: int) -> None:
        super().__init__()
        self.query_dim, self.key_dim = query_dim, key_dim
        self.W_q = nn.Linear(query_dim, hidden_dim, bias=False)
        self.W_k = nn.Linear(key_dim, hidden_dim)  # one bias is enough: the two are summed
        self.v = nn.Linear(hidden_dim, 1, bias=False)

    def score(self, query: Tensor, key: Tensor) -> Tensor:
        """Shape: query (B, T, Dq), key (B, S, Dk) -> (B, T, S)."""
        q = self.W_q(query).unsqueeze(2)  # (B, T, hidden) -> (B, T, 1, hidden)
        k = self.W_k(key).unsqueeze(1)  # (B, S, hidden) -> (B, 1, S, hidden)
        # (B, T, S, hidden) -> (B, T, S, 1) -> (B, T, S)
        return self.v(torch.tanh(q + k)).squeeze(-1)


class DotProductAttention(ScoredAttention):
    r"""Dot-product attention: Luong et al. (2015) "dot", or with ``scaled`` Vaswani et al. (2017, eq. 1).

    .. math:: e_{t,s} = q_t^\top k_s \;/\; \sqrt{d_k} \text{ (if scaled)}

    No parameters: queries and keys must have the same size Dk.

    Args:
        scaled: divide the scores by :math:`\sqrt{d_k}` (keeps their variance near 1 for any d_k).
    """

    def __init__(self, scaled: bool = True) -> None:
        super().__init__()
        self.scaled = scaled

    def score(self, query: Tensor, key: Tensor) -> Tensor:
        """Shape: query (B, T, Dk), key (B, S, Dk) -> (B, T, S)."""
        if query.size(-1) != key.size(-1):
            raise ValueError(
                f"dot-product attention needs queries and keys of the same size Dk: query is "
                f"{tuple(query.shape)} (B, T, Dk), key is {tuple(key.shape)} (B, S, Dk); use "
                "GeneralAttention or AdditiveAttention otherwise"
            )
        scores = query @ key.transpose(-2, -1)  # (B, T, S)
        return scores / math.sqrt(query.size(-1)) if self.scaled else scores

    def extra_repr(self) -> str:
        return f"scaled={self.scaled}"


class GeneralAttention(ScoredAttention):
    r"""Multiplicative ("general") attention of Luong et al. (2015, eq. 8).

    .. math:: e_{t,s} = q_t^\top W k_s

    Args:
        query_dim: Dq, size of a query.
        key_dim: Dk, size of a key. ``W`` is an ``nn.Linear(key_dim, query_dim, bias=False)``.
    """

    def __init__(self, query_dim: int, key_dim: int) -> None:
        super().__init__()
        self.query_dim, self.key_dim = query_dim, key_dim
        self.W = nn.Linear(key_dim, query_dim, bias=False)

    def score(self, query: Tensor, key: Tensor) -> Tensor:
        """Shape: query (B, T, Dq), key (B, S, Dk) -> (B, T, S)."""
        return query @ self.W(key).transpose(-2, -1)  # (B, T, Dq) @ (B, Dq, S) -> (B, T, S)


class MultiHeadAttention(nn.Module):
    r"""Multi-head attention (Vaswani et al., 2017, section 3.2.2), batch-first.

    .. math::
        \mathrm{MultiHead}(Q, K, V) = \mathrm{Concat}(\mathrm{head}_1, \dots, \mathrm{head}_H)\, W^O,
        \qquad \mathrm{head}_i = \mathrm{Attention}(Q W_i^Q, K W_i^K, V W_i^V)

    The H matrices :math:`W_i^Q` (D x Dh each) are the column blocks of one (D x D) ``q_proj``, so a
    single matmul projects every head; likewise for keys and values.

    A drop-in for ``torch.nn.MultiheadAttention(embed_dim, num_heads, dropout, bias, batch_first=True)``:
    same constructor and ``forward`` keywords, same outputs and weights (see :meth:`from_torch`).
    Not supported: sequence-first inputs, ``kdim``/``vdim``, ``add_bias_kv``, ``add_zero_attn``.
    One difference: ``is_causal=True`` without ``attn_mask`` builds the causal mask here, whereas torch
    treats ``is_causal`` only as a hint and requires ``attn_mask`` as well.

    Args:
        embed_dim: D, the model dim; must be divisible by ``num_heads``.
        num_heads: H; each head works in Dh = D / H dims.
        dropout: dropout on the attention weights, in training mode only.
        bias: add biases to the four projections.
    """

    def __init__(self, embed_dim: int, num_heads: int, dropout: float = 0.0, bias: bool = True) -> None:
        super().__init__()
        if num_heads < 1 or embed_dim < 1 or embed_dim % num_heads != 0:
            raise _divisibility_error(embed_dim, num_heads)
        self.embed_dim, self.num_heads, self.head_dim = embed_dim, num_heads, embed_dim // num_heads
        self.dropout = dropout
        self.q_proj = nn.Linear(embed_dim, embed_dim, bias=bias)
        self.k_proj = nn.Linear(embed_dim, embed_dim, bias=bias)
        self.v_proj = nn.Linear(embed_dim, embed_dim, bias=bias)
        self.out_proj = nn.Linear(embed_dim, embed_dim, bias=bias)
        for proj in (self.q_proj, self.k_proj, self.v_proj):
            # torch applies Xavier to its packed (3D, D) in_proj_weight; gain 1/sqrt(2) on each (D, D)
            # block gives the same distribution (fairseq does the same), so both modules train alike.
            nn.init.xavier_uniform_(proj.weight, gain=1 / math.sqrt(2))
        for proj in (self.q_proj, self.k_proj, self.v_proj, self.out_proj):
            if proj.bias is not None:
                nn.init.zeros_(proj.bias)

    def forward(
        self, query: Tensor, key: Tensor, value: Tensor, key_padding_mask: Tensor | None = None,
        need_weights: bool = True, attn_mask: Tensor | None = None,
        average_attn_weights: bool = True, is_causal: bool = False,
    ) -> tuple[Tensor, Tensor | None]:
        """Project, attend in every head at once, concatenate the heads and project back.

        Args:
            query: (B, T, D). key, value: (B, S, D); pass the same tensor three times for
                self-attention.
            key_padding_mask: (B, S) bool, True at padding keys (or float, added to the scores).
            need_weights: return the attention weights (explicit softmax). If False, use torch's
                fused kernel and return ``None``: faster and no (B, H, T, S) table in memory.
            attn_mask: bool (True = not allowed) or float (added), shaped (T, S), (B, 1, T, S),
                (B, H, T, S) or, as in torch, (B*H, T, S).
            average_attn_weights: average the returned weights over the heads.
            is_causal: hide the future with :func:`coursekit.masks.causal_mask` (T, S) if
                ``attn_mask`` is None; when S > T the queries are the last T positions (as with a
                key/value cache).

        Shape:
            Returns ``(output, weights)``: output (B, T, D); weights (B, T, S) averaged over the
            heads, (B, H, T, S) with ``average_attn_weights=False``, or None with
            ``need_weights=False``.
        """
        self._check_inputs(query, key, value)
        q = self._split_heads(self.q_proj(query))  # (B, T, D) -> (B, H, T, Dh)
        k = self._split_heads(self.k_proj(key))  # (B, S, D) -> (B, H, S, Dh)
        v = self._split_heads(self.v_proj(value))  # (B, S, D) -> (B, H, S, Dh)
        if is_causal and attn_mask is None:
            attn_mask = causal_mask(query.size(1), key.size(1), device=query.device)  # (T, S)
        return self.attend_heads(q, k, v, key_padding_mask, need_weights, attn_mask,
                                 average_attn_weights)

    def attend_heads(
        self, q: Tensor, k: Tensor, v: Tensor, key_padding_mask: Tensor | None = None,
        need_weights: bool = True, attn_mask: Tensor | None = None,
        average_attn_weights: bool = True,
    ) -> tuple[Tensor, Tensor | None]:
        """The step after the projections: attention in every head, then ``out_proj``.

        Kept separate from :meth:`forward` so a key/value cache can sit in between: project only
        the new token(s), ``k = torch.cat([past_k, self._split_heads(self.k_proj(x))], dim=2)``
        (same for v), then call this with ``attn_mask=causal_mask(T, S)`` (or none for a single
        new token).

        Shape:
            q (B, H, T, Dh), k and v (B, H, S, Dh); masks and returns as in :meth:`forward`.
        """
        if attn_mask is not None and attn_mask.dim() == 3:
            # (B*H, T, S) -> (B, H, T, S)
            attn_mask = self._unflatten_heads_mask(attn_mask, q.size(0))
        dropout_p = self.dropout if self.training else 0.0
        out, weights = scaled_dot_product_attention(
            q, k, v, attn_mask, key_padding_mask, dropout_p, need_weights=need_weights
        )  # (B, H, T, Dh), (B, H, T, S) or None
        output = self.out_proj(self._merge_heads(out))  # (B, H, T, Dh) -> (B, T, D)
        if weights is not None and average_attn_weights:
            weights = weights.mean(dim=1)  # (B, H, T, S) -> (B, T, S)
        return output, weights

    def _split_heads(self, x: Tensor) -> Tensor:
        """(B, L, D) -> (B, H, L, Dh): a view, no copy (the fused kernel and matmul accept the
        strides)."""
        B, L, _ = x.shape
        # (B, L, D) -> (B, L, H, Dh) -> (B, H, L, Dh)
        return x.view(B, L, self.num_heads, self.head_dim).transpose(1, 2)

    def _merge_heads(self, x: Tensor) -> Tensor:
        """(B, H, L, Dh) -> (B, L, D): concatenates the heads (copies only if the layout needs
        it)."""
        B, _, L, _ = x.shape
        return x.transpose(1, 2).reshape(B, L, self.embed_dim)  # (B, L, H, Dh) -> (B, L, D)

    def _unflatten_heads_mask(self, attn_mask: Tensor, batch_size: int) -> Tensor:
        if attn_mask.size(0) != batch_size * self.num_heads:
            raise ValueError(
                f"a 3-D attn_mask must have shape (B*H, T, S) with B*H = {batch_size * self.num_heads}, as in "
                f"torch.nn.MultiheadAttention, got {tuple(attn_mask.shape)}; use (T, S) to share one mask"
            )
        return attn_mask.view(batch_size, self.num_heads, *attn_mask.shape[1:])  # (B*H, T, S) -> (B, H, T, S)

    def _check_inputs(self, query: Tensor, key: Tensor, value: Tensor) -> None:
        D = self.embed_dim
        for name, t, want in (("query", query, "(B, T, D)"), ("key", key, "(B, S, D)"), ("value", value, "(B, S, D)")):
            if t.dim() != 3 or t.size(-1) != D:
                raise ValueError(f"{name} must have shape {want} with D = embed_dim = {D} (batch first), got {tuple(t.shape)}")
        if not (query.size(0) == key.size(0) == value.size(0)) or key.size(1) != value.size(1):
            raise ValueError(
                f"query (B, T, D), key (B, S, D) and value (B, S, D) must share B, and key and value S; "
                f"got query {tuple(query.shape)}, key {tuple(key.shape)}, value {tuple(value.shape)}"
            )

    @classmethod
    def from_torch(cls, module: nn.MultiheadAttention) -> MultiHeadAttention:
        """A copy of ``torch.nn.MultiheadAttention``'s weights (on the same device, dtype and train/eval mode).

        torch packs the three input projections into one ``in_proj_weight`` (3D, D): rows [0, D) are
        W^Q, [D, 2D) W^K, [2D, 3D) W^V. The result is batch-first whatever ``module.batch_first`` says.
        """
        if not module._qkv_same_embed_dim or module.bias_k is not None or module.add_zero_attn:
            raise ValueError("from_torch supports nn.MultiheadAttention without kdim/vdim, add_bias_kv or add_zero_attn")
        bias = module.in_proj_bias is not None
        new = cls(module.embed_dim, module.num_heads, module.dropout, bias=bias).to(module.in_proj_weight)
        with torch.no_grad():
            for i, proj in enumerate((new.q_proj, new.k_proj, new.v_proj)):
                proj.weight.copy_(module.in_proj_weight.chunk(3)[i])
                if bias:
                    proj.bias.copy_(module.in_proj_bias.chunk(3)[i])
            new.out_proj.weight.copy_(module.out_proj.weight)
            if bias:
                new.out_proj.bias.copy_(module.out_proj.bias)
        return new.train(module.training)

    def extra_repr(self) -> str:
        return f"embed_dim={self.embed_dim}, num_heads={self.num_heads}, dropout={self.dropout}"


def _divisibility_error(embed_dim: int, num_heads: int) -> ValueError:
    if embed_dim < 1 or num_heads < 1:
        return ValueError(f"embed_dim and num_heads must be positive, got embed_dim={embed_dim}, num_heads={num_heads}")
    heads = [h for h in range(1, embed_dim + 1) if embed_dim % h == 0]
    nearest_heads = min(heads, key=lambda h: (abs(h - num_heads), h))
    nearest_dim = num_heads * max(1, round(embed_dim / num_heads))
    return ValueError(
        f"embed_dim={embed_dim} is not divisible by num_heads={num_heads}: each head gets embed_dim / num_heads "
        f"features. Change num_heads to a divisor of embed_dim (e.g. {nearest_heads}) or embed_dim to a "
        f"multiple of num_heads (e.g. {nearest_dim})."
    )
