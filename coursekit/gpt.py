"""GPT: a decoder-only Transformer that predicts the next token (Radford et al., 2018; 2019).

Shape legend: B batch, T new tokens, P tokens already in the key/value cache, S = P + T keys,
D model dim (``d_model``), H heads, Dh = D / H head dim, F feed-forward dim, L layers, V vocabulary size.

- :class:`GPTConfig`: a frozen dataclass with GPT-2 small's sizes (124M parameters) and :meth:`~GPTConfig.tiny`.
- :class:`CausalSelfAttention`: multi-head self-attention in which position t sees positions <= t only; it
  extends :class:`coursekit.attention.MultiHeadAttention` with a key/value cache.
- :class:`GPTBlock`: pre-LN block, ``x + attn(ln(x))`` then ``x + mlp(ln(x))`` (GPT-2, section 2.3).
- :class:`GPT`: token + learned position embeddings, L blocks, a final layer norm and an output layer tied to
  the token embedding. :meth:`GPT.from_hf_gpt2` copies the weights of Hugging Face's ``GPT2LMHeadModel``
  (the course's proof that this model is GPT-2's architecture).
- :func:`generate` / :func:`stream`: greedy, temperature and top-k sampling, with or without the cache.

Masks follow torch.nn: ``key_padding_mask`` (B, S) bool, True at padding. Batches of prompts of different
lengths are padded on the left, so every prompt ends where generation starts; positions then count real
tokens only (as Hugging Face's ``generate`` does).

Book: chapter "GPT".
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from coursekit.attention import MultiHeadAttention
from coursekit.masks import causal_mask


@dataclass(frozen=True)
class GPTConfig:
    """Sizes of :class:`GPT`; the defaults are GPT-2 small (Radford et al., 2019, table 2: L=12, D=768).

    Attributes:
        vocab_size: V (GPT-2's byte-level BPE has 50257).
        max_len: the context window, the number of learned positions (GPT-2: 1024).
        d_model, nhead, num_layers, dim_feedforward: D, H, L and F = 4 D.
        dropout: on the embeddings, the attention weights and every residual branch (GPT-2: 0.1).
        layer_norm_eps: epsilon of every layer norm (GPT-2: 1e-5).
    """

    vocab_size: int = 50257
    max_len: int = 1024
    d_model: int = 768
    nhead: int = 12
    num_layers: int = 12
    dim_feedforward: int = 3072
    dropout: float = 0.1
    layer_norm_eps: float = 1e-5

    def __post_init__(self) -> None:
        for name in ("vocab_size", "max_len", "d_model", "nhead", "num_layers", "dim_feedforward"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"GPTConfig.{name} must be a positive int, got {value!r}")
        if self.d_model % self.nhead:
            raise ValueError(f"GPTConfig.d_model = {self.d_model} must be divisible by nhead = {self.nhead}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"GPTConfig.dropout must be in [0, 1), got {self.dropout}")

    @classmethod
    def tiny(cls, vocab_size: int, **overrides: Any) -> GPTConfig:
        """Small enough for tests on a CPU in milliseconds: D = 32, 4 heads, 2 layers, 64 positions, no dropout."""
        sizes = dict(max_len=64, d_model=32, nhead=4, num_layers=2, dim_feedforward=128, dropout=0.0)
        return cls(vocab_size=vocab_size, **{**sizes, **overrides})

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class LayerCache(NamedTuple):
    """The keys and values one layer has computed for the P tokens seen so far. Shape: (B, H, P, Dh) each."""

    k: Tensor
    v: Tensor


class GPTCache(NamedTuple):
    """Everything :meth:`GPT.forward` needs to continue a sequence without recomputing its past.

    Attributes:
        layers: one :class:`LayerCache` per block.
        key_padding_mask: (B, P) bool, True at the (left) padding among the P cached tokens.
        next_position: (B,) the position the next token of each sequence takes (real tokens so far).
    """

    layers: tuple[LayerCache, ...]
    key_padding_mask: Tensor
    next_position: Tensor

    @property
    def length(self) -> int:
        """P, the number of tokens (padding included) held."""
        return self.key_padding_mask.size(1)


class GPTOutput(NamedTuple):
    """``logits`` (B, T, V) for the next token after each of the T inputs, and the grown ``cache``."""

    logits: Tensor
    cache: GPTCache


class CausalSelfAttention(MultiHeadAttention):
    r"""Masked multi-head self-attention: :math:`\mathrm{softmax}(QK^\top/\sqrt{d_k} + M)V`, M hiding the future.

    The same parameters as :class:`coursekit.attention.MultiHeadAttention` (``q_proj``, ``k_proj``, ``v_proj``,
    ``out_proj``). With a cache, only the T new tokens are projected; their keys and values are appended to
    the P cached ones, and the new queries attend to all P + T.
    """

    def forward(self, x: Tensor, mask: Tensor,  # type: ignore[override]
                past: LayerCache | None = None,
                need_weights: bool = False) -> tuple[Tensor, LayerCache, Tensor | None]:
        """Args:
            x: (B, T, D), the new tokens.
            mask: bool, True = not allowed, broadcastable to (B, H, T, P + T); built by
                :meth:`GPT.forward`.
            past: keys and values of the P earlier tokens, or None.
            need_weights: return every head's weights (B, H, T, P + T) instead of using the fused
                kernel.

        Returns:
            ``(output, cache, weights)``: output (B, T, D); the cache grown to P + T; weights or
            None.
        """
        q = self._split_heads(self.q_proj(x))  # (B, T, D) -> (B, H, T, Dh)
        k = self._split_heads(self.k_proj(x))  # (B, H, T, Dh)
        v = self._split_heads(self.v_proj(x))  # (B, H, T, Dh)
        if past is not None:
            k = torch.cat([past.k, k], dim=2)  # (B, H, P + T, Dh)
            v = torch.cat([past.v, v], dim=2)  # (B, H, P + T, Dh)
        # (B, T, D), and (B, H, T, S) or None
        out, weights = self.attend_heads(q, k, v, attn_mask=mask, need_weights=need_weights,
                                         average_attn_weights=False)
        return out, LayerCache(k, v), weights


class GPTBlock(nn.Module):
    """One decoder-only block, pre-LN as in GPT-2: ``x = x + attn(ln_1(x))``, ``x = x + mlp(ln_2(x))``.

    The MLP is ``linear2(GELU(linear1(x)))`` with GPT-2's tanh approximation of GELU (Hendrycks and Gimpel, 2016).
    Names follow ``torch.nn.TransformerEncoderLayer`` (``norm1``, ``self_attn``, ``norm2``, ``linear1``, ``linear2``).
    """

    def __init__(self, d_model: int, nhead: int, dim_feedforward: int, dropout: float = 0.0,
                 layer_norm_eps: float = 1e-5) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(d_model, eps=layer_norm_eps)
        self.self_attn = CausalSelfAttention(d_model, nhead, dropout=dropout)
        self.norm2 = nn.LayerNorm(d_model, eps=layer_norm_eps)
        self.linear1 = nn.Linear(d_model, dim_feedforward)
        self.activation = nn.GELU(approximate="tanh")
        self.linear2 = nn.Linear(dim_feedforward, d_model)
        self.dropout1 = nn.Dropout(dropout)
        self.dropout2 = nn.Dropout(dropout)

    def forward(self, x: Tensor, mask: Tensor, past: LayerCache | None = None,
                need_weights: bool = False) -> tuple[Tensor, LayerCache, Tensor | None]:
        """Shape: x (B, T, D) -> (B, T, D), the layer's grown cache, and (B, H, T, P + T) weights
        or None."""
        attended, cache, weights = self.self_attn(self.norm1(x), mask, past, need_weights)
        x = x + self.dropout1(attended)
        x = x + self.dropout2(self.linear2(self.activation(self.linear1(self.norm2(x)))))
        return x, cache, weights


class GPT(nn.Module):
    r"""A decoder-only language model: :math:`p(x_t \mid x_{<t}) = \mathrm{softmax}(h_t W_e^\top)`.

    :math:`h_0 = W_e[x] + W_p[\text{position}]`, then L :class:`GPTBlock` s and a final layer norm
    (Radford et al., 2019, section 2.3). The output layer shares its weights with the token embedding
    :math:`W_e` (Press and Wolf, 2017).

    Args:
        config: a :class:`GPTConfig`.
    """

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.config = config
        self.tok_emb = nn.Embedding(config.vocab_size, config.d_model)
        self.pos_emb = nn.Embedding(config.max_len, config.d_model)
        self.dropout = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(
            GPTBlock(config.d_model, config.nhead, config.dim_feedforward, config.dropout, config.layer_norm_eps)
            for _ in range(config.num_layers))
        self.norm = nn.LayerNorm(config.d_model, eps=config.layer_norm_eps)
        self.lm_head = nn.Linear(config.d_model, config.vocab_size, bias=False)
        self.lm_head.weight = self.tok_emb.weight  # tied: one (V, D) matrix
        self.apply(_init_weights)
        for name, p in self.named_parameters():
            if name.endswith(("out_proj.weight", "linear2.weight")):
                # GPT-2 scales the residual projections by 1/sqrt(2 L): L blocks add 2 L branches to the stream.
                nn.init.normal_(p, std=0.02 / (2 * config.num_layers) ** 0.5)

    def forward(self, input_ids: Tensor, key_padding_mask: Tensor | None = None,
                cache: GPTCache | None = None, need_weights: bool = False) -> GPTOutput:
        """Next-token logits for T new tokens, continuing ``cache`` (P earlier tokens) if given.

        Args:
            input_ids: (B, T) token ids.
            key_padding_mask: (B, T) bool, True at padding (left padding for prompts of unequal
                length; right padding is harmless for training, since no real token sees a later
                one).
            cache: what an earlier call returned, or None to start afresh.
            need_weights: keep every layer's attention weights (see :meth:`attention_maps`).

        Returns:
            :class:`GPTOutput`: logits (B, T, V) and the cache grown to P + T tokens.
        """
        B, T = input_ids.shape
        device = input_ids.device
        new_pad = (torch.zeros(B, T, dtype=torch.bool, device=device) if key_padding_mask is None
                   else key_padding_mask.to(device=device, dtype=torch.bool))
        if new_pad.shape != (B, T):
            raise ValueError(f"key_padding_mask must be (B, T) = {(B, T)} like input_ids, "
                             f"got {tuple(new_pad.shape)}")
        past_pad = new_pad[:, :0] if cache is None else cache.key_padding_mask  # (B, P)
        start = (torch.zeros(B, dtype=torch.long, device=device) if cache is None
                 else cache.next_position)
        P = past_pad.size(1)
        if P + T > self.config.max_len:
            raise ValueError(f"{P} cached + {T} new tokens exceed the context window max_len = "
                             f"{self.config.max_len}; crop the input to its last max_len tokens "
                             "(generate() does) or use a longer max_len")
        # (B, T): the real tokens count 0, 1, 2 ...
        positions = start[:, None] + (~new_pad).long().cumsum(dim=1) - 1
        x = self.tok_emb(input_ids) + self.pos_emb(positions.clamp_min(0))  # (B, T, D)
        x = self.dropout(x)
        pad = torch.cat([past_pad, new_pad], dim=1)  # (B, S)
        mask = self._mask(pad, T)  # (B, 1, T, S)
        layers, self._weights = [], []
        for i, block in enumerate(self.blocks):
            past = None if cache is None else cache.layers[i]
            x, layer_cache, weights = block(x, mask, past, need_weights)
            layers.append(layer_cache)
            self._weights.append(weights)
        logits = self.lm_head(self.norm(x))  # (B, T, V)
        next_position = start + (~new_pad).long().sum(dim=1)  # (B,)
        return GPTOutput(logits, GPTCache(tuple(layers), pad, next_position))

    @staticmethod
    def _mask(pad: Tensor, T: int) -> Tensor:
        """Causal + padding, True = not allowed. Shape: pad (B, S) -> (B, 1, T, S).

        A padding query would see no key at all (its row fully masked); it is let see itself instead, so
        every row stays a proper softmax. Its output is never used.
        """
        S = pad.size(1)
        causal = causal_mask(T, S, device=pad.device)  # (T, S): the T queries are the last T of S positions
        self_key = torch.eye(T, dtype=torch.bool, device=pad.device)
        self_key = torch.cat([torch.zeros(T, S - T, dtype=torch.bool, device=pad.device), self_key], dim=1)  # (T, S)
        return (causal | pad[:, None, None, :]) & ~self_key  # (B, 1, T, S)

    def attention_maps(self, input_ids: Tensor, key_padding_mask: Tensor | None = None) -> list[Tensor]:
        """Every layer's per-head attention weights, one (B, H, T, T) tensor per layer, for plots."""
        self.forward(input_ids, key_padding_mask, need_weights=True)
        weights, self._weights = self._weights, []
        return weights

    @classmethod
    def from_hf_gpt2(cls, hf_model: nn.Module) -> GPT:
        """A copy of a Hugging Face ``GPT2LMHeadModel`` (its config and weights), in the same train/eval mode.

        GPT-2 stores its projections as ``Conv1D`` (weight (in, out), the transpose of ``nn.Linear``) and packs
        the query, key and value projections into one ``c_attn`` (D, 3 D).
        """
        hf = hf_model.config
        if getattr(hf, "activation_function", "gelu_new") not in ("gelu_new", "gelu_pytorch_tanh"):
            raise ValueError(f"GPT uses GPT-2's tanh GELU, but this model uses {hf.activation_function!r}")
        config = GPTConfig(vocab_size=hf.vocab_size, max_len=hf.n_positions, d_model=hf.n_embd, nhead=hf.n_head,
                           num_layers=hf.n_layer, dim_feedforward=hf.n_inner or 4 * hf.n_embd,
                           dropout=hf.resid_pdrop, layer_norm_eps=hf.layer_norm_epsilon)
        theirs = hf_model.transformer
        model = cls(config).to(theirs.wte.weight)
        state = {"tok_emb.weight": theirs.wte.weight, "pos_emb.weight": theirs.wpe.weight,
                 "norm.weight": theirs.ln_f.weight, "norm.bias": theirs.ln_f.bias}
        for i, h in enumerate(theirs.h):
            ours = f"blocks.{i}."
            q, k, v = h.attn.c_attn.weight.t().chunk(3, dim=0)  # (3D, D) -> 3 x (D, D), nn.Linear's layout
            qb, kb, vb = h.attn.c_attn.bias.chunk(3)
            state.update({
                ours + "norm1.weight": h.ln_1.weight, ours + "norm1.bias": h.ln_1.bias,
                ours + "self_attn.q_proj.weight": q, ours + "self_attn.q_proj.bias": qb,
                ours + "self_attn.k_proj.weight": k, ours + "self_attn.k_proj.bias": kb,
                ours + "self_attn.v_proj.weight": v, ours + "self_attn.v_proj.bias": vb,
                ours + "self_attn.out_proj.weight": h.attn.c_proj.weight.t(),
                ours + "self_attn.out_proj.bias": h.attn.c_proj.bias,
                ours + "norm2.weight": h.ln_2.weight, ours + "norm2.bias": h.ln_2.bias,
                ours + "linear1.weight": h.mlp.c_fc.weight.t(), ours + "linear1.bias": h.mlp.c_fc.bias,
                ours + "linear2.weight": h.mlp.c_proj.weight.t(), ours + "linear2.bias": h.mlp.c_proj.bias,
            })
        state["lm_head.weight"] = state["tok_emb.weight"]
        model.load_state_dict({name: t.detach().clone() for name, t in state.items()}, strict=True)
        return model.train(hf_model.training)


def _init_weights(module: nn.Module) -> None:
    """GPT-2's initialisation: N(0, 0.02) for weights and embeddings, zero biases, unit layer norms."""
    if isinstance(module, (nn.Linear, nn.Embedding)):
        nn.init.normal_(module.weight, std=0.02)
    if isinstance(module, nn.Linear) and module.bias is not None:
        nn.init.zeros_(module.bias)
    if isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


def count_parameters(model: nn.Module) -> int:
    """Trainable parameters, each tied matrix counted once."""
    return sum(p.numel() for p in {id(p): p for p in model.parameters() if p.requires_grad}.values())


# --------------------------------------------------------------------------------------------------
# Generation
# --------------------------------------------------------------------------------------------------


def next_token(logits: Tensor, temperature: float = 1.0, top_k: int | None = None,
               generator: torch.Generator | None = None) -> Tensor:
    r"""Pick the next token from the last position's logits.

    ``temperature == 0`` is greedy (the argmax). Otherwise sample from
    :math:`\mathrm{softmax}(z / \tau)`, keeping only the ``top_k`` largest logits if given
    (Fan et al., 2018): lower :math:`\tau` sharpens the distribution, higher flattens it.

    Shape: logits (B, V) -> (B,) token ids.
    """
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0 (0 = greedy), got {temperature}")
    if top_k is not None and top_k < 1:
        raise ValueError(f"top_k must be a positive int or None, got {top_k}")
    if temperature == 0:
        return logits.argmax(dim=-1)
    logits = logits.float() / temperature
    if top_k is not None and top_k < logits.size(-1):
        kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]  # (B, 1)
        logits = logits.masked_fill(logits < kth, float("-inf"))
    probs = torch.softmax(logits, dim=-1)  # (B, V)
    return torch.multinomial(probs, 1, generator=generator).squeeze(1)


@torch.no_grad()
def stream(model: GPT, input_ids: Tensor, max_new_tokens: int, *, temperature: float = 1.0,
           top_k: int | None = None, key_padding_mask: Tensor | None = None,
           use_cache: bool = True,
           generator: torch.Generator | None = None) -> Iterator[Tensor]:
    """Yield the new tokens one step at a time, (B,) each, as they come out.

    With ``use_cache`` the prompt is run once and every later step feeds only the newest token,
    reading the keys and values of the others from the cache: each step costs O(1) token
    projections instead of O(t). Without it every step recomputes the whole context. Both see
    the same context and give the same logits; once the context is full, both keep its last
    ``max_len`` tokens (the cache is rebuilt then).

    Args:
        model: a :class:`GPT` (run in eval mode; its mode is restored afterwards).
        input_ids: (B, T0) prompts, left-padded if their lengths differ.
        max_new_tokens: how many tokens to generate.
        temperature, top_k: as :func:`next_token` (temperature 0 = greedy).
        key_padding_mask: (B, T0) True at the left padding, or None.
        use_cache: use the key/value cache.
        generator: a seeded ``torch.Generator`` for reproducible samples.
    """
    was_training = model.training
    model.eval()
    try:
        max_len = model.config.max_len
        ids = input_ids
        pad = (torch.zeros_like(ids, dtype=torch.bool) if key_padding_mask is None
               else key_padding_mask.to(device=ids.device, dtype=torch.bool))
        cache: GPTCache | None = None
        for _ in range(max_new_tokens):
            if use_cache and cache is not None and cache.length < max_len:
                out = model(ids[:, -1:], cache=cache)  # only the newest token
            else:
                out = model(ids[:, -max_len:], pad[:, -max_len:])  # the whole (cropped) context
            cache = out.cache if use_cache else None
            token = next_token(out.logits[:, -1], temperature, top_k, generator)  # (B,)
            ids = torch.cat([ids, token[:, None]], dim=1)  # (B, t + 1)
            pad = torch.cat([pad, torch.zeros_like(pad[:, :1])], dim=1)
            yield token
    finally:
        model.train(was_training)


def generate(model: GPT, input_ids: Tensor, max_new_tokens: int, **kwargs: Any) -> Tensor:
    """The prompts followed by ``max_new_tokens`` generated tokens: (B, T0) -> (B, T0 + max_new_tokens).

    Keyword arguments as :func:`stream` (``temperature=0`` for greedy, ``top_k``, ``use_cache`` ...).
    """
    new = list(stream(model, input_ids, max_new_tokens, **kwargs))
    return torch.cat([input_ids, torch.stack(new, dim=1)], dim=1) if new else input_ids
