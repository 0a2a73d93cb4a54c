"""Every check works on the sandbox's proxies, as `coursekit grade` runs them: the learner's code in a child process,
the check in the grader. One sandbox per notebook; right answers pass, mistakes get the same codes as in-process, and
an error in learner code still names the learner's line."""

import pytest

from coursekit import grading
from coursekit.data import date_task
from coursekit.autograder.execute import CheckedSandbox as Sandbox, Limits

pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py

LEARNERS = {
    "sdpa": """
import math
import torch

def scaled_dot_product_attention(query, key, value, attn_mask=None, key_padding_mask=None):
    scores = query @ key.transpose(-2, -1) / math.sqrt(query.size(-1))
    if attn_mask is not None:
        scores = scores.masked_fill(attn_mask, float("-inf"))
    if key_padding_mask is not None:
        scores = scores.masked_fill(key_padding_mask[:, None, :], float("-inf"))
    weights = torch.softmax(scores, dim=-1)
    return weights @ value, weights

def unscaled(query, key, value, attn_mask=None, key_padding_mask=None):
    return scaled_dot_product_attention(query * math.sqrt(query.size(-1)), key, value, attn_mask, key_padding_mask)

def no_unsqueeze(query, key, value, attn_mask=None, key_padding_mask=None):
    scores = query @ key.transpose(-2, -1) / math.sqrt(query.size(-1))
    if key_padding_mask is not None:
        scores = scores.masked_fill(key_padding_mask, float("-inf"))
    weights = torch.softmax(scores, dim=-1)
    return weights @ value, weights
""",
    "bahdanau": """
import torch
from torch import nn
from coursekit.seq2seq import BahdanauConfig, BahdanauEncoderDecoder

def masked_softmax(scores, key_padding_mask=None):
    if key_padding_mask is not None:
        scores = scores.masked_fill(key_padding_mask[:, None, :], float("-inf"))
    return torch.softmax(scores, dim=-1)

def inverted_softmax(scores, key_padding_mask=None):
    if key_padding_mask is not None:
        scores = scores.masked_fill(~key_padding_mask[:, None, :], float("-inf"))
    return torch.softmax(scores, dim=-1)

class AdditiveAttention(nn.Module):
    def __init__(self, query_dim, key_dim, hidden_dim, tanh=True):
        super().__init__()
        self.W_q = nn.Linear(query_dim, hidden_dim, bias=False)
        self.W_k = nn.Linear(key_dim, hidden_dim)
        self.v = nn.Linear(hidden_dim, 1, bias=False)
        self.tanh = tanh

    def score(self, query, key):
        hidden = self.W_q(query).unsqueeze(2) + self.W_k(key).unsqueeze(1)
        return self.v(torch.tanh(hidden) if self.tanh else hidden).squeeze(-1)

    def forward(self, query, key, value, key_padding_mask=None):
        single = query.dim() == 2
        query = query.unsqueeze(1) if single else query
        weights = masked_softmax(self.score(query, key), key_padding_mask)
        context = weights @ value
        return (context.squeeze(1), weights.squeeze(1)) if single else (context, weights)

class NoTanh(AdditiveAttention):
    def __init__(self, query_dim, key_dim, hidden_dim):
        super().__init__(query_dim, key_dim, hidden_dim, tanh=False)

def untrained(src_vocab_size, tgt_vocab_size):
    torch.manual_seed(0)
    model = BahdanauEncoderDecoder(BahdanauConfig(src_vocab_size, tgt_vocab_size, 16, 32, 32))
    model.attention = AdditiveAttention(32, 64, 32)
    return model

def reference_model(src_vocab_size, tgt_vocab_size):
    return BahdanauEncoderDecoder(BahdanauConfig(src_vocab_size, tgt_vocab_size, 16, 32, 32))
""",
    "multihead": """
import torch
from torch import nn
from coursekit.attention import scaled_dot_product_attention

def split_heads(x, num_heads):
    B, L, D = x.shape
    return x.view(B, L, num_heads, D // num_heads).transpose(1, 2)

def merge_heads(x):
    B, H, L, Dh = x.shape
    return x.transpose(1, 2).reshape(B, L, H * Dh)

def wrong_merge(x):
    B, H, L, Dh = x.shape
    return x.reshape(B, L, H * Dh)

def self_attention(x, w_q, w_k, w_v, key_padding_mask=None):
    return scaled_dot_product_attention(x @ w_q, x @ w_k, x @ w_v, key_padding_mask=key_padding_mask)

class MultiHeadAttention(nn.Module):
    merge = staticmethod(merge_heads)

    def __init__(self, embed_dim, num_heads):
        super().__init__()
        self.embed_dim, self.num_heads, self.head_dim = embed_dim, num_heads, embed_dim // num_heads
        self.q_proj = nn.Linear(embed_dim, embed_dim)
        self.k_proj = nn.Linear(embed_dim, embed_dim)
        self.v_proj = nn.Linear(embed_dim, embed_dim)
        self.out_proj = nn.Linear(embed_dim, embed_dim)

    def forward(self, query, key, value, key_padding_mask=None, attn_mask=None):
        q = split_heads(self.q_proj(query), self.num_heads)
        k = split_heads(self.k_proj(key), self.num_heads)
        v = split_heads(self.v_proj(value), self.num_heads)
        out, weights = scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, key_padding_mask=key_padding_mask)
        return self.out_proj(self.merge(out)), weights.mean(dim=1)

class WrongMerge(MultiHeadAttention):
    merge = staticmethod(wrong_merge)

class ViaTorch(nn.Module):
    def __init__(self, embed_dim, num_heads):
        super().__init__()
        self.inner = nn.MultiheadAttention(embed_dim, num_heads, batch_first=True)

    def forward(self, query, key, value, key_padding_mask=None, attn_mask=None):
        return self.inner(query, key, value, key_padding_mask=key_padding_mask, attn_mask=attn_mask)
""",
    "positional": """
import math
import torch
from coursekit.attention import scaled_dot_product_attention

def sinusoidal_encoding(max_len, d_model):
    angle = torch.arange(max_len)[:, None] * 10000.0 ** (-torch.arange(0, d_model, 2) / d_model)
    table = torch.zeros(max_len, d_model)
    table[:, 0::2], table[:, 1::2] = torch.sin(angle), torch.cos(angle)
    return table

def swapped(max_len, d_model):
    table = sinusoidal_encoding(max_len, d_model)
    return torch.stack([table[:, 1::2], table[:, 0::2]], 2).reshape(max_len, d_model)

def offset_matrix(k, d_model):
    M = torch.zeros(d_model, d_model)
    for i in range(d_model // 2):
        a = k / 10000.0 ** (2 * i / d_model)
        M[2 * i, 2 * i], M[2 * i, 2 * i + 1], M[2 * i + 1, 2 * i], M[2 * i + 1, 2 * i + 1] = (
            math.cos(a), math.sin(a), -math.sin(a), math.cos(a))
    return M

def self_attention_layer(x, w_q, w_k, w_v, table=None):
    if table is not None:
        x = x + table[: x.size(1)]
    return scaled_dot_product_attention(x @ w_q, x @ w_k, x @ w_v)[0]

def positions_on_output(x, w_q, w_k, w_v, table=None):
    out = scaled_dot_product_attention(x @ w_q, x @ w_k, x @ w_v)[0]
    return out + table[: x.size(1)] if table is not None else out
""",
    "transformer": """
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
""",
    "bert": """
import random
import torch
import torch.nn.functional as F

def mask_tokens(input_ids, mask_id, vocab_size, special_ids, mlm_probability=0.15):
    special = torch.isin(input_ids, torch.tensor(special_ids))
    chosen = (torch.rand(input_ids.shape) < mlm_probability) & ~special
    labels = input_ids.masked_fill(~chosen, -100)
    fate = torch.rand(input_ids.shape)
    ordinary = torch.tensor([i for i in range(vocab_size) if i not in special_ids])
    masked = input_ids.masked_fill(chosen & (fate < 0.8), mask_id)
    masked = torch.where(chosen & (fate >= 0.8) & (fate < 0.9), ordinary[torch.randint(len(ordinary), input_ids.shape)], masked)
    return masked, labels

def masks_specials(input_ids, mask_id, vocab_size, special_ids, mlm_probability=0.15):
    chosen = torch.rand(input_ids.shape) < mlm_probability
    return input_ids.masked_fill(chosen, mask_id), input_ids.masked_fill(~chosen, -100)

def pack_pair(a_ids, b_ids, cls_id, sep_id):
    return [cls_id, *a_ids, sep_id, *b_ids, sep_id], [0] * (len(a_ids) + 2) + [1] * (len(b_ids) + 1)

def make_nsp_pairs(documents, seed=0):
    rng = random.Random(seed)
    pairs = []
    for i, document in enumerate(documents):
        for j in range(len(document) - 1):
            if rng.random() < 0.5:
                pairs.append((document[j], document[j + 1], 0))
            else:
                other = rng.randrange(len(documents) - 1)
                other += other >= i
                pairs.append((document[j], rng.choice(documents[other]), 1))
    return pairs

def pretraining_loss(mlm_logits, mlm_labels, nsp_logits, nsp_labels):
    V = mlm_logits.size(-1)
    return F.cross_entropy(mlm_logits.reshape(-1, V), mlm_labels.reshape(-1)) + F.cross_entropy(nsp_logits, nsp_labels)

def global_random(documents, seed=0):
    return make_nsp_pairs(documents, seed=random.randrange(2**31))

def mean_loss(mlm_logits, mlm_labels, nsp_logits, nsp_labels):
    return pretraining_loss(mlm_logits, mlm_labels, nsp_logits, nsp_labels) / 2
""",
    "rnn_self_attention": '''
import math

import torch
from torch import nn

from coursekit.attention import MultiHeadAttention  # the course's version of your multi-head attention
from coursekit.masks import padding_mask
from coursekit.seq2seq import run_encoder_rnn  # a GRU over a padded batch, padding left out



class SelfAttentionBlock(nn.Module):
    def __init__(self, size, num_heads):
        super().__init__()
        self.self_attention = MultiHeadAttention(size, num_heads)
        self.norm = nn.LayerNorm(size)

    def forward(self, annotations, key_padding_mask):
        """annotations (B, S, A), key_padding_mask (B, S) True at padding -> memory (B, S, A)."""
        attended, _ = self.self_attention(annotations, annotations, annotations,
                                          key_padding_mask=key_padding_mask)  # (B, S, A)
        return self.norm(annotations + attended)  # the residual, then layer norm

def masked_mean(memory, key_padding_mask):
    """memory (B, S, A), key_padding_mask (B, S) True at padding -> (B, A): the mean over real positions."""
    real = (~key_padding_mask)[..., None].to(memory.dtype)  # (B, S, 1): 1 at real positions
    return (memory * real).sum(dim=1) / real.sum(dim=1)  # (B, A)

def general_attention(query, memory, W, key_padding_mask):
    """query (B, T, Q), memory (B, S, A), W (Q, A), key_padding_mask (B, S) -> (B, T, A), (B, T, S)."""
    scores = query @ W @ memory.transpose(-2, -1)  # (B, T, Q) @ (Q, A) @ (B, A, S) -> (B, T, S)
    scores = scores.masked_fill(key_padding_mask[:, None, :], float("-inf"))  # hide padding from every query
    weights = torch.softmax(scores, dim=-1)  # over the source positions
    return weights @ memory, weights  # (B, T, A), (B, T, S)

class SelfAttentiveRNN(nn.Module):
    def __init__(self, src_vocab_size, tgt_vocab_size, embed_dim, hidden_dim, num_heads):
        super().__init__()
        E, H = embed_dim, hidden_dim
        self.src_embed = nn.Embedding(src_vocab_size, E, padding_idx=0)
        self.tgt_embed = nn.Embedding(tgt_vocab_size, E, padding_idx=0)
        self.encoder = nn.GRU(E, H, batch_first=True, bidirectional=True)
        self.block = SelfAttentionBlock(2 * H, num_heads)  # your Part 1
        self.init_state = nn.Linear(2 * H, H)
        self.decoder = nn.GRU(E, H, batch_first=True)
        self.W_a = nn.Linear(2 * H, H, bias=False)  # the score's W_a is W_a.weight, (H, 2H)
        self.combine = nn.Linear(2 * H + H, H)
        self.out = nn.Linear(H, tgt_vocab_size)

    def encode(self, src, src_key_padding_mask):
        """src (B, S) ids, src_key_padding_mask (B, S) -> memory (B, S, 2H), hidden (B, H)."""
        lengths = (~src_key_padding_mask).sum(dim=1)  # (B,)
        annotations, _ = run_encoder_rnn(self.encoder, self.src_embed(src), lengths)  # (B, S, 2H)
        memory = self.block(annotations, src_key_padding_mask)  # (B, S, 2H)
        hidden = torch.tanh(self.init_state(masked_mean(memory, src_key_padding_mask)))  # (B, H)
        return memory, hidden

    def forward(self, src, src_key_padding_mask, tgt_in):
        """Teacher forcing: tgt_in (B, T) starts with [START] -> logits (B, T, V), weights (B, T, S)."""
        memory, hidden = self.encode(src, src_key_padding_mask)
        states, _ = self.decoder(self.tgt_embed(tgt_in), hidden[None])  # (B, T, H)
        context, weights = general_attention(states, memory, self.W_a.weight, src_key_padding_mask)
        attentional = torch.tanh(self.combine(torch.cat([context, states], dim=-1)))  # (B, T, H)
        return self.out(attentional), weights


def mean_with_padding(memory, key_padding_mask):
    return memory.mean(dim=1)
''',
    "attention_without_rnn": '''
import math

import torch
from torch import nn

from coursekit.positional import sinusoidal_table  # the course's version of your positional notebook
from coursekit.seq2seq import AttentionDecoderLayer, AttentionEncoderLayer



class LearnedPositions(nn.Module):
    def __init__(self, d_model, max_len):
        super().__init__()
        self.max_len = max_len
        self.embedding = nn.Embedding(max_len, d_model)  # one trained vector per position

    def forward(self, x, offset=0):
        """x (B, T, D) -> x + the vectors of positions offset .. offset + T - 1."""
        stop = offset + x.size(1)
        if stop > self.max_len:
            raise ValueError(f"positions {offset}..{stop - 1} do not exist: this table has {self.max_len}")
        positions = torch.arange(offset, stop, device=x.device)  # (T,)
        return x + self.embedding(positions)  # (B, T, D) + (T, D)

class SinusoidalPositions(nn.Module):
    def __init__(self, d_model, max_len):
        super().__init__()
        self.max_len = max_len
        table = sinusoidal_table(max_len, d_model)  # (max_len, D)
        self.register_buffer("table", table, persistent=False)  # moves with .to(device), never trained

    def forward(self, x, offset=0):
        """x (B, T, D) -> x + PE[offset .. offset + T - 1]."""
        stop = offset + x.size(1)
        if stop > self.max_len:
            raise ValueError(f"positions {offset}..{stop - 1} are past the table's {self.max_len}")
        return x + self.table[offset:stop]  # (B, T, D) + (T, D)

def embed(ids, weight, table=None):
    """ids (B, T), weight (V, D), table (max_len, D) or None -> (B, T, D)."""
    x = weight[ids] * math.sqrt(weight.size(1))  # (B, T, D): sqrt(D) E[ids]
    if table is not None:
        x = x + table[: ids.size(1)]  # positions 0 .. T - 1, the same for every sequence
    return x

class AttentionWithoutRNN(nn.Module):
    def __init__(self, src_vocab_size, tgt_vocab_size, d_model, nhead, dim_feedforward, positions, max_len=64):
        super().__init__()
        self.d_model = d_model
        self.src_embed = nn.Embedding(src_vocab_size, d_model, padding_idx=0)
        self.tgt_embed = nn.Embedding(tgt_vocab_size, d_model, padding_idx=0)
        kinds = {"learned": LearnedPositions, "sinusoidal": SinusoidalPositions}
        self.positions = kinds[positions](d_model, max_len) if positions in kinds else None
        self.encoder_layer = AttentionEncoderLayer(d_model, nhead, dim_feedforward, dropout=0.0)
        self.decoder_layer = AttentionDecoderLayer(d_model, nhead, dim_feedforward, dropout=0.0)
        self.out = nn.Linear(d_model, tgt_vocab_size)

    def encode(self, src, src_key_padding_mask):
        """src (B, S), src_key_padding_mask (B, S) True at padding -> memory (B, S, D)."""
        x = self.src_embed(src) * math.sqrt(self.d_model)  # (B, S, D)
        if self.positions is not None:
            x = self.positions(x)
        return self.encoder_layer(x, src_key_padding_mask)

    def forward(self, src, src_key_padding_mask, tgt_in):
        """tgt_in (B, T) starts with [START] -> logits (B, T, V), cross-attention weights (B, T, S)."""
        memory = self.encode(src, src_key_padding_mask)
        y = self.tgt_embed(tgt_in) * math.sqrt(self.d_model)  # (B, T, D)
        if self.positions is not None:
            y = self.positions(y)
        output, weights = self.decoder_layer(y, memory, src_key_padding_mask)
        return self.out(output), weights


class WrappingPositions(LearnedPositions):
    def forward(self, x, offset=0):
        positions = torch.arange(offset, offset + x.size(1)) % self.max_len
        return x + self.embedding(positions)


class IndexingPositions(LearnedPositions):
    def forward(self, x, offset=0):
        return x + self.embedding(torch.arange(offset, offset + x.size(1)))


class TrainedSines(nn.Module):
    def __init__(self, d_model, max_len):
        super().__init__()
        self.max_len = max_len
        self.table = nn.Parameter(sinusoidal_table(max_len, d_model))

    def forward(self, x, offset=0):
        return x + self.table[offset:offset + x.size(1)]
''',
}

# notebook -> [(check, the learner's name, the code it must fail with, or None to pass)]
CASES = {
    "sdpa": [(grading.check_attention_values, "scaled_dot_product_attention", None),
             (grading.check_padding_mask, "scaled_dot_product_attention", None),
             (grading.check_attention_values, "unscaled", "sdpa.unscaled"),
             (grading.check_padding_mask, "no_unsqueeze", "sdpa.symptom.raised")],
    "bahdanau": [(grading.check_masked_softmax, "masked_softmax", None),
                 (grading.check_additive_scores, "AdditiveAttention", None),
                 (grading.check_additive_attention, "AdditiveAttention", None),
                 (grading.check_single_step, "AdditiveAttention", None),
                 (grading.check_masked_softmax, "inverted_softmax", "mask.inverted"),
                 (grading.check_additive_scores, "NoTanh", "additive.no-tanh")],
    "multihead": [(grading.check_self_attention, "self_attention", None),
                  (grading.check_split_heads, "split_heads", None),
                  (grading.check_merge_heads, "merge_heads", None),
                  (grading.check_multihead_self_attention, "MultiHeadAttention", None),
                  (grading.check_multihead_cross_attention, "MultiHeadAttention", None),
                  (grading.check_multihead_masks, "MultiHeadAttention", None),
                  (grading.check_merge_heads, "wrong_merge", "heads.merge-by-reshape"),
                  (grading.check_multihead_self_attention, "WrongMerge", "mha.merge-by-reshape"),
                  (grading.check_multihead_masks, "ViaTorch", "mha.shortcut")],
    "positional": [(grading.check_sinusoidal_table, "sinusoidal_encoding", None),
                   (grading.check_offset_matrix, "offset_matrix", None),
                   (grading.check_permutation_equivariance, "self_attention_layer", None),
                   (grading.check_attention_with_positions, "self_attention_layer", None),
                   (grading.check_sinusoidal_table, "swapped", "table.swapped"),
                   (grading.check_attention_with_positions, "positions_on_output", "layer.positions-on-output")],
    "transformer": [(grading.check_causal_mask_function, "causal_mask", None),
                    (grading.check_encoder_block, "EncoderBlock", None),
                    (grading.check_decoder_block, "DecoderBlock", None),
                    (grading.check_encoder_block, "PreLN", "encoder.pre-ln"),
                    (grading.check_decoder_block, "Leaky", "decoder.ignores-tgt-mask")],
    "bert": [(grading.check_masking_choice, "mask_tokens", None),
             (grading.check_masking_proportions, "mask_tokens", None),
             (grading.check_pack_pair, "pack_pair", None),
             (grading.check_nsp_pairs, "make_nsp_pairs", None),
             (grading.check_pretraining_loss, "pretraining_loss", None),
             (grading.check_masking_choice, "masks_specials", "masking.specials-chosen"),
             (grading.check_nsp_pairs, "global_random", "nsp.not-reproducible"),
             (grading.check_pretraining_loss, "mean_loss", "loss.averaged")],
    "rnn_self_attention": [(grading.check_self_attention_block, "SelfAttentionBlock", None),
                           (grading.check_masked_mean, "masked_mean", None),
                           (grading.check_general_attention, "general_attention", None),
                           (grading.check_self_attentive_rnn, "SelfAttentiveRNN", None),
                           (grading.check_masked_mean, "mean_with_padding", "realmean.includes-padding")],
    "attention_without_rnn": [(grading.check_learned_positions, "LearnedPositions", None),
                              (grading.check_sinusoidal_positions, "SinusoidalPositions", None),
                              (grading.check_scaled_embedding, "embed", None),
                              (grading.check_attention_without_rnn, "AttentionWithoutRNN", None),
                              (grading.check_learned_positions, "WrappingPositions", "learned.no-error"),
                              (grading.check_learned_positions, "IndexingPositions", "learned.wrong-error"),
                              (grading.check_sinusoidal_positions, "TrainedSines", "sines.trainable")],
}


@pytest.mark.parametrize("notebook", sorted(CASES))
def test_checks_work_on_the_sandbox_proxies(notebook, tmp_path, capsys):
    with Sandbox(str(tmp_path), Limits(memory_mb=2048, cell_timeout_s=60)) as box:
        assert box.run_cell(LEARNERS[notebook])["error"] is None
        failures = {}
        for check, name, code in CASES[notebook]:
            try:
                check(box.lookup(name), seed=0)
            except grading.CheckFailed as error:
                failures[(check.__name__, name)] = error
            else:
                assert code is None, f"{check.__name__}({name}) passes through the sandbox; {code} expected"
        expected = {(check.__name__, name): code for check, name, code in CASES[notebook]}
        assert {k: e.code for k, e in failures.items()} == {k: c for k, c in expected.items() if c is not None}, \
            {k: str(e) for k, e in failures.items()}
        assert capsys.readouterr().out.count("✓") == sum(code is None for _, _, code in CASES[notebook])
        if notebook == "sdpa":  # the learner's line travels back from the child in the message
            raised = failures[("check_padding_mask", "no_unsqueeze")]
            line = LEARNERS["sdpa"].strip("\n").splitlines().index('        scores = scores.masked_fill(key_padding_mask, float("-inf"))') + 1
            assert f'(at line {line} of no_unsqueeze: scores = scores.masked_fill(key_padding_mask, float("-inf")))' \
                in str(raised), str(raised)
        if notebook == "bahdanau":  # the trained-model check scores a model that lives in the sandbox
            task = date_task(n=600, seed=0, languages=("en",))
            sizes = len(task.src_vocab), len(task.tgt_vocab)
            with pytest.raises(grading.CheckFailed, match="writes 0% of the"):
                grading.check_trained_date_model(box.lookup("untrained")(*sizes), task)
            with pytest.raises(grading.ShortcutUsed, match="still attends with coursekit's AdditiveAttention"):
                grading.check_trained_date_model(box.lookup("reference_model")(*sizes), task)
