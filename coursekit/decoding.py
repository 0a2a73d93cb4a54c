"""Decoding: turning a trained model's next-token distributions into output sequences.

Shape legend: B batch, S source length, L generated length, K beam size, V target vocabulary size.

Both searches work on any :class:`coursekit.encoder_decoder.EncoderDecoder` (``encode`` once, then ``decode_step`` one
token at a time), batched: every sequence of the batch is decoded at once, and a sequence that has emitted
[STOP] stays finished (it is padded with ``pad_id`` and its score stops changing) while the others go on.
Put the model in ``eval()`` mode first; with dropout active the searches are random.

Book: chapters "Sequence-to-sequence models with RNNs" (greedy decoding) and "The Transformer" (beam search).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from coursekit.encoder_decoder import EncoderDecoder


class Decoded(NamedTuple):
    """Output sequences, one per source.

    Shape:
        tokens: (B, L) long, the generated ids ([START] not included), up to and including [STOP], then ``pad_id``.
        lengths: (B,) long, generated tokens counting [STOP] (``L`` for a sequence cut off at ``max_len``).
        scores: (B,) float, :math:`\\log p(y \\mid x) = \\sum_t \\log p(y_t \\mid y_{<t}, x)` of each sequence.
        weights: (B, L, S) attention weights of each step (0 after [STOP]), or None for a model without attention.
    """

    tokens: Tensor
    lengths: Tensor
    scores: Tensor
    weights: Tensor | None


def _check_args(src: Tensor, start_id: int, stop_id: int, max_len: int) -> None:
    if not isinstance(max_len, int) or max_len < 1:
        raise ValueError(f"max_len must be a positive int (the most tokens to generate), got {max_len!r}")
    if start_id == stop_id:
        raise ValueError(f"start_id and stop_id are both {start_id}; they must be different tokens")
    if not isinstance(src, Tensor) or src.dim() != 2:
        raise TypeError("src must be a (B, S) tensor of token ids; add a batch dim with src[None] for one sequence")


def _check_vocab(logits: Tensor, **ids: int) -> None:
    vocab_size = logits.size(-1)
    for name, value in ids.items():
        if not 0 <= value < vocab_size:
            raise ValueError(f"{name}={value} is not an id of the model's target vocabulary (0..{vocab_size - 1})")


def _lengths(finished_at: Tensor, generated: int) -> Tensor:
    """finished_at (...,) holds the step of [STOP] or -1; returns the number of tokens generated."""
    return torch.where(finished_at >= 0, finished_at + 1, torch.full_like(finished_at, generated))


@torch.no_grad()
def greedy_decode(
    model: EncoderDecoder,
    src: Tensor,
    src_key_padding_mask: Tensor,
    *,
    start_id: int,
    stop_id: int,
    max_len: int,
    pad_id: int = 0,
) -> Decoded:
    r"""Pick the most likely next token at every step:
    :math:`y_t = \arg\max_y p(y \mid y_{<t}, x)`.

    Args:
        model: any :class:`~coursekit.encoder_decoder.EncoderDecoder`.
        src, src_key_padding_mask: (B, S) source ids and padding mask (True at padding).
        start_id, stop_id, pad_id: the target vocabulary's [START], [STOP] and [PAD] ids.
        max_len: the most tokens to generate per sequence, [STOP] included.

    Returns:
        :class:`Decoded`. Decoding stops early once every sequence has emitted [STOP].
    """
    _check_args(src, start_id, stop_id, max_len)
    B = src.size(0)
    state = model.encode(src, src_key_padding_mask)
    token = torch.full((B,), start_id, dtype=torch.long, device=src.device)
    # The step of each sequence's [STOP], -1 while it is still going.
    finished_at = torch.full((B,), -1, dtype=torch.long, device=src.device)
    scores = torch.zeros(B, device=src.device)
    tokens, weights = [], []
    for step in range(max_len):
        logits, state, step_weights = model.decode_step(token, state)
        if step == 0:
            _check_vocab(logits, start_id=start_id, stop_id=stop_id, pad_id=pad_id)
        log_probs = logits.float().log_softmax(dim=-1)  # (B, V)
        best = log_probs.argmax(dim=-1)  # (B,)
        done = finished_at >= 0
        scores += log_probs.gather(1, best[:, None])[:, 0].masked_fill(done, 0.0)
        token = best.masked_fill(done, pad_id)
        tokens.append(token)
        if step_weights is not None:
            weights.append(step_weights.float().masked_fill(done[:, None], 0.0))  # (B, S)
        finished_at = torch.where(~done & (token == stop_id), step, finished_at)
        if bool((finished_at >= 0).all()):
            break
    return Decoded(
        tokens=torch.stack(tokens, dim=1),  # (B, L)
        lengths=_lengths(finished_at, len(tokens)),
        scores=scores,
        weights=torch.stack(weights, dim=1) if weights else None,  # (B, L, S)
    )


def gnmt_length_penalty(lengths: Tensor, alpha: float) -> Tensor:
    r"""GNMT's length normalisation (Wu et al., 2016, eq. 14): :math:`lp(Y) = ((5 + |Y|) / 6)^\alpha`.

    Beam search divides a hypothesis' log-probability by it before comparing hypotheses of different lengths;
    ``alpha=0`` compares raw log-probabilities (which favours short outputs), ``alpha=1`` roughly per-token averages.
    """
    return ((5.0 + lengths.float()) / 6.0) ** alpha


@torch.no_grad()
def beam_search(
    model: EncoderDecoder,
    src: Tensor,
    src_key_padding_mask: Tensor,
    *,
    start_id: int,
    stop_id: int,
    max_len: int,
    beam_size: int = 4,
    length_penalty: float = 0.6,
    pad_id: int = 0,
) -> Decoded:
    r"""Keep the ``beam_size`` most likely partial outputs at every step (Sutskever et al.,
    2014; Wu et al., 2016).

    Each step extends every live hypothesis by every token and keeps the K best of the K * V
    candidates by log-probability. A finished hypothesis (it emitted [STOP]) stays in the beam
    with its score, extended only by [PAD] at no cost. The hypothesis returned is the one with
    the best *length-normalised* score :math:`\log p(Y \mid X) / lp(Y)` (see
    :func:`gnmt_length_penalty`). A source's search ends once its best finished hypothesis
    beats anything a live one could still reach (log-probabilities only fall as a hypothesis
    grows, so a live one's bound is its score over :math:`lp` of ``max_len``). With
    ``beam_size=1`` this is exactly :func:`greedy_decode`. Beam search usually, but not
    always, finds a more likely output than greedy: a hypothesis it keeps may later turn out
    worse than the one it dropped.

    Args:
        model, src, src_key_padding_mask, start_id, stop_id, max_len, pad_id: as for
            :func:`greedy_decode`.
        beam_size: K, the number of hypotheses kept per source.
        length_penalty: GNMT's :math:`\alpha` >= 0; 0 ranks by raw log-probability. Wu et al.
            used 0.6 - 0.7.

    Returns:
        :class:`Decoded` with the chosen hypothesis of each source; ``scores`` are its raw
        log-probabilities.
    """
    _check_args(src, start_id, stop_id, max_len)
    if not isinstance(beam_size, int) or beam_size < 1:
        raise ValueError(f"beam_size must be a positive int, got {beam_size!r}")
    if length_penalty < 0:
        raise ValueError(f"length_penalty must be >= 0 (0 = raw log-probabilities), "
                         f"got {length_penalty}")
    B, K, device = src.size(0), beam_size, src.device
    state = model.encode(src, src_key_padding_mask)
    rows = torch.arange(B, device=device).repeat_interleave(K)  # (B * K,): each source K times
    state = model.reorder_state(state, rows)
    token = torch.full((B * K,), start_id, dtype=torch.long, device=device)
    # All K beams start as the same empty hypothesis; only the first may grow, or the beam
    # would fill with copies.
    scores = torch.full((B, K), float("-inf"), device=device)
    scores[:, 0] = 0.0
    finished_at = torch.full((B, K), -1, dtype=torch.long, device=device)
    settled = torch.zeros(B, 1, dtype=torch.bool, device=device)  # (B, 1): answer known
    history = torch.empty(B, K, 0, dtype=torch.long, device=device)  # (B, K, L)
    weights_history: Tensor | None = None  # (B, K, L, S)
    for step in range(max_len):
        logits, state, step_weights = model.decode_step(token, state)
        if step == 0:
            _check_vocab(logits, start_id=start_id, stop_id=stop_id, pad_id=pad_id)
        V = logits.size(-1)
        log_probs = logits.float().log_softmax(dim=-1).view(B, K, V)  # (B, K, V)
        done = (finished_at >= 0) | settled  # (B, K)
        # A finished hypothesis has a single continuation, [PAD], which costs nothing.
        pad_only = torch.full((V,), float("-inf"), device=device)
        pad_only[pad_id] = 0.0
        log_probs = torch.where(done[..., None], pad_only, log_probs)
        candidates = (scores[..., None] + log_probs).view(B, K * V)  # (B, K * V)
        scores, flat = candidates.topk(K, dim=-1)  # (B, K), best first
        # (B, K): which hypothesis each survivor extends, and with which token
        beam, token_bk = flat // V, flat % V
        history = torch.cat([_gather_beams(history, beam), token_bk[..., None]],
                            dim=-1)  # (B, K, L + 1)
        if step_weights is not None:
            step_weights = step_weights.float().view(B, K, 1, -1)  # (B, K, 1, S)
            step_weights = step_weights.masked_fill(done[..., None, None], 0.0)
            parent = (step_weights if weights_history is None
                      else torch.cat([weights_history, step_weights], dim=2))
            weights_history = _gather_beams(parent, beam)  # (B, K, L + 1, S)
        finished_at = _gather_beams(finished_at, beam)
        finished_at = torch.where((finished_at < 0) & (token_bk == stop_id), step, finished_at)
        # the parent row of each new row
        rows = (torch.arange(B, device=device)[:, None] * K + beam).view(B * K)
        state = model.reorder_state(state, rows)
        token = token_bk.view(B * K)
        settled = settled | _settled(scores, finished_at, step + 1, max_len, length_penalty)
        if bool(settled.all()):
            break
    lengths = _lengths(finished_at, history.size(-1))  # (B, K)
    best = (scores / gnmt_length_penalty(lengths, length_penalty)).argmax(dim=-1)  # (B,)
    pick = best[:, None]  # (B, 1)
    return Decoded(
        tokens=_gather_beams(history, pick)[:, 0],  # (B, L)
        lengths=lengths.gather(1, pick)[:, 0],
        scores=scores.gather(1, pick)[:, 0],
        weights=(_gather_beams(weights_history, pick)[:, 0]  # (B, L, S)
                 if weights_history is not None else None),
    )


def _settled(scores: Tensor, finished_at: Tensor, generated: int, max_len: int, alpha: float) -> Tensor:
    """(B, 1): True where the best finished hypothesis already beats every live hypothesis' best possible future.

    Shape: scores and finished_at (B, K).
    """
    finished = finished_at >= 0
    normalised = scores / gnmt_length_penalty(_lengths(finished_at, generated), alpha)  # (B, K)
    best_finished = normalised.masked_fill(~finished, float("-inf")).amax(dim=-1, keepdim=True)
    # A live hypothesis only loses log-probability as it grows; dividing by the largest lp is its best case.
    longest = gnmt_length_penalty(torch.tensor(max_len, device=scores.device), alpha)
    best_live = (scores / longest).masked_fill(finished, float("-inf")).amax(dim=-1, keepdim=True)
    return best_finished >= best_live


def _gather_beams(tensor: Tensor, beam: Tensor) -> Tensor:
    """Select beams along dim 1. Shape: tensor (B, K, ...), beam (B, K') -> (B, K', ...)."""
    index = beam.view(*beam.shape, *([1] * (tensor.dim() - 2))).expand(*beam.shape, *tensor.shape[2:])
    return tensor.gather(1, index)
