"""Plots that run a BERT: one head's attention over a sentence pair, and the top-k guesses for a [MASK].

Shape legend: S sequence length, L layers, H heads, V vocabulary size.

Heat maps are drawn by :func:`coursekit.viz.plot_attention`; the pretraining curves, which need no model, are
:func:`coursekit.viz.plot_pretraining_curves`. Every figure has a title, labelled axes and, for heat maps, a
colorbar.

Book: chapter "BERT".
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import torch
from matplotlib.axes import Axes

from coursekit.bert.model import BertForPreTraining, BertModel
from coursekit.bert.tokenizer import WordPieceTokenizer
from coursekit.train import evaluating
from coursekit.viz import plot_attention


def _encode(tokenizer: WordPieceTokenizer, text_a: str, text_b: str | None, max_len: int) -> tuple[torch.Tensor, torch.Tensor]:
    ids, types = tokenizer.encode_pair(text_a, text_b, max_len=max_len)
    return torch.tensor([ids]), torch.tensor([types])  # (1, S), (1, S)


@torch.no_grad()
def plot_bert_attention(model: BertModel | BertForPreTraining, tokenizer: WordPieceTokenizer, text_a: str,
                        text_b: str | None = None, *, layer: int = 0, head: int = 0, ax: Axes | None = None) -> Axes:
    """One head's self-attention over ``[CLS] A [SEP] (B [SEP])``, tokens on both axes.

    Args:
        model: a BERT (the encoder of a :class:`~coursekit.bert.BertForPreTraining` is used).
        tokenizer: the model's tokenizer. text_a, text_b: the sentence(s).
        layer, head: which of the L x H maps (0-based).
        ax: axes to draw on; a new figure is made when None.

    Returns:
        The axes, with a colorbar.
    """
    bert = model.bert if isinstance(model, BertForPreTraining) else model
    L, H = bert.config.num_layers, bert.config.nhead
    if not (0 <= layer < L and 0 <= head < H):
        raise ValueError(f"the model has layers 0..{L - 1} and heads 0..{H - 1}, got layer={layer}, head={head}")
    input_ids, token_type_ids = _encode(tokenizer, text_a, text_b, bert.config.max_len)
    with evaluating(bert):
        maps = bert.attention_maps(input_ids, token_type_ids)  # (1, L, H, S, S)
    tokens = tokenizer.convert_ids_to_tokens(input_ids[0])
    return plot_attention(maps[0, layer, head], keys=tokens, queries=tokens, ax=ax, annotate=False,
                          title=f"BERT self-attention, layer {layer + 1} of {L}, head {head + 1} of {H}",
                          xlabel="key token (attended to)", ylabel="query token (attending)")


@torch.no_grad()
def top_k_mask_predictions(model: BertForPreTraining, tokenizer: WordPieceTokenizer, text: str,
                           k: int = 10) -> list[tuple[str, float]]:
    """The model's k most probable tokens, with probabilities, for the first ``[MASK]`` in ``text``."""
    input_ids, token_type_ids = _encode(tokenizer, text, None, model.config.max_len)
    positions = (input_ids[0] == tokenizer.mask_id).nonzero()
    if len(positions) == 0:
        raise ValueError(f"no {tokenizer.id_to_token(tokenizer.mask_id)} token in {text!r}")
    with evaluating(model):
        mlm_logits, _ = model(input_ids, token_type_ids)  # (1, S, V)
    probs = mlm_logits[0, int(positions[0])].float().softmax(-1)  # (V,)
    top = probs.topk(k)
    return [(tokenizer.id_to_token(int(i)), float(p)) for p, i in zip(top.values, top.indices)]


def plot_mask_predictions(model: BertForPreTraining, tokenizer: WordPieceTokenizer, text: str, k: int = 10,
                          *, ax: Axes | None = None) -> Axes:
    """Horizontal bar chart of :func:`top_k_mask_predictions`, most probable on top."""
    predictions = top_k_mask_predictions(model, tokenizer, text, k)
    if ax is None:
        _, ax = plt.subplots(figsize=(6, 0.35 * k + 1.5))
    tokens, probs = zip(*predictions)
    ax.barh(range(len(tokens))[::-1], probs, color="tab:blue")
    ax.set_yticks(range(len(tokens))[::-1], labels=tokens)
    ax.set(title=f"Top-{k} predictions for [MASK] in\n{text!r}", xlabel="probability", ylabel="predicted token")
    ax.grid(axis="x", alpha=0.3)
    return ax
