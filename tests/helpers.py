"""What several test modules share: the model stages of coursekit.seq2seq and random padded batches; planted
answers for each graded notebook (a learner's code, right by default, with one mistake planted by a keyword); and the
graded notebooks' reference answers, with changes typed in.

Test modules import from here (and fixtures from conftest.py), never from one another.
"""

import json
import math
import random
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

import coursekit.positional
from coursekit.attention import MultiHeadAttention, scaled_dot_product_attention
from coursekit.encoder_decoder import EncoderDecoder
from coursekit.masks import causal_mask, padding_mask
from coursekit.positional import SinusoidalPositionalEncoding
from coursekit.seq2seq import (
    AttentionOnlyConfig,
    AttentionOnlyEncoderDecoder,
    BahdanauConfig,
    BahdanauEncoderDecoder,
    RNNConfig,
    RNNEncoderDecoder,
    SelfAttentiveRNNConfig,
    SelfAttentiveRNNEncoderDecoder,
)

SRC_V, TGT_V = 13, 11  # vocabulary sizes of the random batches: 0 [PAD], 1 [START], 2 [STOP], 3 [UNK], then words

# The baseline and stages 1-3 of the course's arc, (model class, config class); the Transformer (stage 4) has
# tests of its own.
STAGES = [
    (RNNEncoderDecoder, RNNConfig),
    (BahdanauEncoderDecoder, BahdanauConfig),
    (SelfAttentiveRNNEncoderDecoder, SelfAttentiveRNNConfig),
    (AttentionOnlyEncoderDecoder, AttentionOnlyConfig),
]
STAGE_IDS = [cls.__name__ for cls, _ in STAGES]


def random_batch(src_lengths, tgt_lengths, seed=0, src_v=SRC_V, tgt_v=TGT_V):
    """Random ids (4.. = ordinary tokens) padded with 0 at the end, and the masks that go with them.

    Returns src (B, S), src_key_padding_mask (B, S), tgt_in (B, T) starting with [START], tgt_key_padding_mask (B, T).
    """
    g = torch.Generator().manual_seed(seed)
    src_mask = padding_mask(torch.tensor(src_lengths))
    tgt_mask = padding_mask(torch.tensor(tgt_lengths))
    src = torch.randint(4, src_v, src_mask.shape, generator=g).masked_fill(src_mask, 0)
    tgt_in = torch.randint(4, tgt_v, tgt_mask.shape, generator=g).masked_fill(tgt_mask, 0)
    tgt_in[:, 0] = 1  # [START]
    return src, src_mask, tgt_in, tgt_mask


# --- sdpa ----------------------------------------------------------------------------------------

def make_attention(*, scale="sqrt", softmax_dim=-1, invert=False, use_masks=True, mask_after_softmax=False,
                   transpose_weights=False):
    """A learner's attention function, correct by default, with one mistake planted by a keyword."""
    def attention(query, key, value, attn_mask=None, key_padding_mask=None):
        d_k = query.size(-1)
        scores = query @ key.transpose(-2, -1)
        scores = {"sqrt": scores / math.sqrt(d_k), "none": scores, "dk": scores / d_k}[scale]
        forbidden = None
        if use_masks and attn_mask is not None:
            forbidden = attn_mask
        if use_masks and key_padding_mask is not None:
            kpm = key_padding_mask[:, None, :]
            forbidden = kpm if forbidden is None else forbidden | kpm
        if forbidden is not None and invert:
            forbidden = ~forbidden
        if forbidden is not None and not mask_after_softmax:
            scores = scores.masked_fill(forbidden, float("-inf"))
        weights = scores.softmax(softmax_dim)
        if forbidden is not None and mask_after_softmax:
            weights = weights.masked_fill(forbidden, 0.0)
        if transpose_weights:
            weights = weights.transpose(-2, -1)
        return weights @ value if not transpose_weights else weights.transpose(-2, -1) @ value, weights
    return attention


# --- bahdanau ------------------------------------------------------------------------------------

def make_masked_softmax(*, invert=False, ignore=False, dim=-1, after=False, keep_dims=True):
    """A learner's masked_softmax, correct by default, with one mistake planted by a keyword."""
    def masked_softmax(scores, key_padding_mask=None):
        mask = None if key_padding_mask is None or ignore else key_padding_mask[:, None, :]
        if mask is not None and invert:
            mask = ~mask
        if mask is not None and not after:
            scores = scores.masked_fill(mask, float("-inf"))
        weights = torch.softmax(scores, dim=dim)
        if mask is not None and after:
            weights = weights.masked_fill(mask, 0.0)
        return weights if keep_dims else weights.flatten(0, 1)
    return masked_softmax


def make_additive(*, tanh="inside", squeeze=True, transpose=False, average="value", step="squeeze",
                  softmax=None, rename=False):
    """A learner's AdditiveAttention class, correct by default, with one mistake planted by a keyword."""
    softmax = softmax or make_masked_softmax()

    class AdditiveAttention(nn.Module):
        def __init__(self, query_dim, key_dim, hidden_dim):
            super().__init__()
            self.W_q = nn.Linear(query_dim, hidden_dim, bias=False)
            self.W_k = nn.Linear(key_dim, hidden_dim)
            if rename:
                self.w = nn.Linear(hidden_dim, 1, bias=False)
            else:
                self.v = nn.Linear(hidden_dim, 1, bias=False)

        def score(self, query, key):
            q, k = self.W_q(query).unsqueeze(2), self.W_k(key).unsqueeze(1)
            hidden = {"inside": torch.tanh(q + k), "none": q + k, "outside": q + k}[tanh]
            scores = self.v(hidden)
            if tanh == "outside":
                scores = torch.tanh(scores)
            scores = scores.squeeze(-1) if squeeze else scores
            return scores.transpose(1, 2) if transpose else scores

        def forward(self, query, key, value, key_padding_mask=None):
            single = query.dim() == 2
            if single and step != "fail":
                query = query.unsqueeze(1)
            weights = softmax(self.score(query, key), key_padding_mask)
            context = weights @ (value if average == "value" else key)
            if single and step == "squeeze":
                return context.squeeze(1), weights.squeeze(1)
            return context, weights
    return AdditiveAttention


# --- multihead -----------------------------------------------------------------------------------

def make_self_attention(*, key_w="k", project_values=True, mask="pass", scale=True):
    def self_attention(x, w_q, w_k, w_v, key_padding_mask=None):
        q = x @ w_q
        k = x @ (w_k if key_w == "k" else w_q)
        v = x @ w_v if project_values else x
        kpm = {"pass": key_padding_mask, "ignore": None,
               "invert": None if key_padding_mask is None else ~key_padding_mask}[mask]
        if mask == "invert" and kpm is not None:  # ~mask can leave whole rows masked: fill by hand, as learners do
            scores = (q @ k.transpose(-2, -1)).masked_fill(kpm[:, None, :], float("-inf")) / math.sqrt(q.size(-1))
            weights = scores.softmax(-1).nan_to_num(0.0)
            return weights @ v, weights
        return scaled_dot_product_attention(q, k, v, key_padding_mask=kpm, scale=None if scale else 1.0)
    return self_attention


def make_split(kind="right"):
    def split_heads(x, num_heads):
        B, L, D = x.shape
        if kind == "reshape":
            return x.reshape(B, num_heads, L, D // num_heads)
        if kind == "strided":
            return x.view(B, L, D // num_heads, num_heads).permute(0, 3, 1, 2)
        if kind == "no-transpose":
            return x.view(B, L, num_heads, D // num_heads)
        return x.view(B, L, num_heads, D // num_heads).transpose(1, 2)
    return split_heads


def make_merge(kind="right"):
    def merge_heads(x):
        B, H, L, Dh = x.shape
        if kind == "reshape":
            return x.reshape(B, L, H * Dh)
        if kind == "interleave":
            return x.permute(0, 2, 3, 1).reshape(B, L, H * Dh)
        return x.transpose(1, 2).reshape(B, L, H * Dh)
    return merge_heads


def make_mha(*, split="right", merge="right", out_proj=True, scale="dh", key_proj="k", average="mean", masks="pass",
             length_from_query=False):
    """A learner's MultiHeadAttention class, correct by default, with one mistake planted by a keyword."""
    split_heads, merge_heads = make_split(split), make_merge(merge)

    class MultiHeadAttention(nn.Module):
        def __init__(self, embed_dim, num_heads):
            super().__init__()
            self.embed_dim, self.num_heads, self.head_dim = embed_dim, num_heads, embed_dim // num_heads
            self.q_proj = nn.Linear(embed_dim, embed_dim)
            self.k_proj = nn.Linear(embed_dim, embed_dim)
            self.v_proj = nn.Linear(embed_dim, embed_dim)
            self.out_proj = nn.Linear(embed_dim, embed_dim)

        def forward(self, query, key, value, key_padding_mask=None, attn_mask=None):
            B, T, D = query.shape
            q = split_heads(self.q_proj(query), self.num_heads)
            k = split_heads(getattr(self, f"{key_proj}_proj")(key), self.num_heads)
            v = split_heads(self.v_proj(value), self.num_heads)
            if length_from_query:
                k, v = k[:, :, :T], v[:, :, :T]
            factor = {"dh": 1 / math.sqrt(self.head_dim), "d": 1 / math.sqrt(D), "none": 1.0}[scale]
            scores = q @ k.transpose(-2, -1) * factor  # (B, H, T, S)
            forbidden = torch.zeros(scores.shape, dtype=torch.bool)
            if key_padding_mask is not None and masks != "ignore":
                forbidden = forbidden | key_padding_mask[:, None, None, :]
            if attn_mask is not None and masks != "ignore":
                forbidden = forbidden | attn_mask
            if masks == "invert" and (key_padding_mask is not None or attn_mask is not None):
                forbidden = ~forbidden
            weights = scores.masked_fill(forbidden, float("-inf")).softmax(-1).nan_to_num(0.0)
            out = merge_heads(weights @ v)
            out = self.out_proj(out) if out_proj else out
            weights = {"mean": weights.mean(1), "none": weights, "sum": weights.sum(1)}[average]
            return out, weights
    return MultiHeadAttention


# --- positional ----------------------------------------------------------------------------------

def make_table(*, first="sin", layout="interleave", exponent="2i", start=0, divide=True, transpose=False):
    """A learner's sinusoidal_encoding, correct by default, with one mistake planted by a keyword."""
    def sinusoidal_encoding(max_len, d_model):
        pos = torch.arange(start, start + max_len, dtype=torch.float32)[:, None]
        i = torch.arange(d_model // 2, dtype=torch.float32)
        power = {"2i": 2 * i / d_model, "i": i / d_model}[exponent]
        angle = pos * (10000.0 ** (-power) if divide else 10000.0 ** power)
        a, b = (torch.sin(angle), torch.cos(angle)) if first == "sin" else (torch.cos(angle), torch.sin(angle))
        table = torch.cat([a, b], 1) if layout == "concat" else torch.stack([a, b], 2).reshape(max_len, d_model)
        return table.T if transpose else table
    return sinusoidal_encoding


def column_exponent(max_len, d_model):
    pos = torch.arange(max_len, dtype=torch.float32)[:, None]
    angle = pos / 10000.0 ** (torch.arange(d_model) / d_model)  # column j: 10000^(j/d)
    table = torch.sin(angle)
    table[:, 1::2] = torch.cos(angle[:, 1::2])
    return table


def make_offset(*, sign=1, fixed_k=None, bad_block=False):
    def offset_matrix(k, d_model):
        k = fixed_k if fixed_k is not None else k
        M = torch.zeros(d_model, d_model)
        for i in range(d_model // 2):
            angle = k / 10000.0 ** (2 * i / d_model)
            c, s = math.cos(angle), sign * math.sin(angle)
            M[2 * i, 2 * i], M[2 * i, 2 * i + 1] = c, s
            M[2 * i + 1, 2 * i], M[2 * i + 1, 2 * i + 1] = (s, c) if bad_block else (-s, c)
        return M
    return offset_matrix


def make_layer(*, where="input", ignore=False, always=False, causal=False, no_slice=False):
    """A learner's self_attention_layer, correct by default, with one mistake planted by a keyword."""
    table_always = coursekit.positional.sinusoidal_table(20, 16) if always else None

    def self_attention_layer(x, w_q, w_k, w_v, table=None):
        table = table if table is not None else table_always
        T = x.size(1)
        mask = causal_mask(T) if causal else None
        if table is not None and not ignore:
            pe = table if no_slice else table[:T]
            if where == "input":
                x = x + pe
            elif where == "qk":
                q, k = (x + pe) @ w_q, (x + pe) @ w_k
                return scaled_dot_product_attention(q, k, x @ w_v, attn_mask=mask)[0]
            elif where == "output":
                return scaled_dot_product_attention(x @ w_q, x @ w_k, x @ w_v, attn_mask=mask)[0] + pe
        return scaled_dot_product_attention(x @ w_q, x @ w_k, x @ w_v, attn_mask=mask)[0]
    return self_attention_layer


# --- transformer ---------------------------------------------------------------------------------

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


# --- bert ----------------------------------------------------------------------------------------

def make_masking(*, skip_specials=True, labels="original", ignore_elsewhere=True, p=None, probs=(0.8, 0.1),
                 random_from="ordinary", random_everywhere=False, label_only_masked=False):
    """A learner's mask_tokens, correct by default, with one mistake planted by a keyword (``p``: a fixed choice
    probability instead of mlm_probability)."""
    def mask_tokens(input_ids, mask_id, vocab_size, special_ids, mlm_probability=0.15):
        special = torch.isin(input_ids, torch.tensor(special_ids))
        chosen = torch.rand(input_ids.shape) < (mlm_probability if p is None else p)
        if skip_specials:
            chosen &= ~special
        fate = torch.rand(input_ids.shape)
        to_mask = chosen & (fate < probs[0])
        to_random = (fate >= probs[0]) & (fate < probs[0] + probs[1])
        to_random = to_random & ~special if random_everywhere else to_random & chosen
        ordinary = torch.tensor([i for i in range(vocab_size) if i not in special_ids])
        random_ids = {"ordinary": ordinary[torch.randint(len(ordinary), input_ids.shape)],
                      "all": torch.randint(vocab_size, input_ids.shape),
                      "one": torch.full(input_ids.shape, int(ordinary[0]))}[random_from]
        masked = torch.where(to_random, random_ids, input_ids.masked_fill(to_mask, mask_id))
        labelled = to_mask if label_only_masked else chosen
        source = input_ids if labels == "original" else masked
        out = source.masked_fill(~labelled, -100) if ignore_elsewhere else source.clone()
        return masked, out
    return mask_tokens


def make_pack(kind="right"):
    def pack_pair(a_ids, b_ids, cls_id, sep_id):
        ids = [cls_id, *a_ids, sep_id, *b_ids, sep_id]
        types = [0] * (len(a_ids) + 2) + [1] * (len(b_ids) + 1)
        if kind == "no-final-sep":
            return ids[:-1], types[:-1]
        if kind == "no-cls":
            return ids[1:], types[1:]
        if kind == "first-sep-in-b":
            types[len(a_ids) + 1] = 1
        if kind == "last-sep-in-a":
            types[-1] = 0
        return ids, types
    return pack_pair


def make_nsp(*, p_next=0.5, invert=False, any_document=False, skip=False, first_sentence=False, offset=1):
    """A learner's make_nsp_pairs, correct by default, with one mistake planted by a keyword."""
    def make_nsp_pairs(documents, seed=0):
        rng = random.Random(seed)
        pairs = []
        for i, document in enumerate(documents):
            for j in range(len(document) - 1 - (1 if skip else 0)):
                if rng.random() < p_next and j + offset < len(document):
                    pairs.append((document[j], document[j + offset], 1 if invert else 0))
                else:
                    if any_document:
                        other = rng.randrange(len(documents))
                    else:
                        other = rng.randrange(len(documents) - 1)
                        other += other >= i
                    b = documents[other][0] if first_sentence else rng.choice(documents[other])
                    pairs.append((document[j], b, 0 if invert else 1))
        return pairs
    return make_nsp_pairs


def make_loss(kind="right"):
    def pretraining_loss(mlm_logits, mlm_labels, nsp_logits, nsp_labels):
        V = mlm_logits.size(-1)
        logits, labels = mlm_logits.reshape(-1, V), mlm_labels.reshape(-1)
        if kind == "no-flatten":
            return F.cross_entropy(mlm_logits, mlm_labels) + F.cross_entropy(nsp_logits, nsp_labels)
        if kind == "softmax":
            return F.cross_entropy(logits.softmax(-1), labels) + F.cross_entropy(nsp_logits.softmax(-1), nsp_labels)
        mlm = F.cross_entropy(logits, labels)
        nsp = F.cross_entropy(nsp_logits, nsp_labels)
        per_token = F.cross_entropy(logits, labels, reduction="none")
        return {"right": mlm + nsp, "mean": (mlm + nsp) / 2, "no-nsp": mlm, "no-mlm": nsp,
                "all-positions": per_token.sum() / labels.numel() + nsp, "sum": per_token.sum() + nsp,
                "vector": torch.stack([mlm, nsp])}[kind]
    return pretraining_loss



def make_step(*, zero_grad="first", clip="before-step", item=True):
    """A learner's pretraining_step (on the reference loss), correct by default, with one mistake planted by a
    keyword: ``zero_grad`` "first" / "never" / "before-step", ``clip`` "before-step" / "never" / "after-step"."""
    loss_fn = make_loss()

    def pretraining_step(model, optimizer, batch):
        if zero_grad == "first":
            optimizer.zero_grad()
        mlm_logits, nsp_logits = model(batch["input_ids"], batch["token_type_ids"], batch["key_padding_mask"])
        loss = loss_fn(mlm_logits, batch["mlm_labels"], nsp_logits, batch["nsp_labels"])
        loss.backward()
        if zero_grad == "before-step":
            optimizer.zero_grad()
        if clip == "before-step":
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        if clip == "after-step":
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        return loss.item() if item else loss
    return pretraining_step


def tiny_bert(vocab_size):
    """The BERT notebook's model factory (its provided cell)."""
    from coursekit.bert import BertConfig, BertForPreTraining

    return BertForPreTraining(BertConfig.tiny(vocab_size=vocab_size, d_model=32, dim_feedforward=64, dropout=0.0))


def sgd(model, lr):
    return torch.optim.SGD(model.parameters(), lr=lr)


# --- gpt -----------------------------------------------------------------------------------------

def make_causal_attention(*, mask="offset", scale=True, split="view", cache="before", returned="all"):
    """A learner's CausalSelfAttention class, correct by default, with one mistake planted by a keyword."""
    class CausalSelfAttention(nn.Module):
        def __init__(self, d_model, nhead):
            super().__init__()
            self.nhead = nhead
            self.q_proj, self.k_proj = nn.Linear(d_model, d_model), nn.Linear(d_model, d_model)
            self.v_proj, self.out_proj = nn.Linear(d_model, d_model), nn.Linear(d_model, d_model)

        def forward(self, x, past=None):
            B, T, D = x.shape
            H = self.nhead

            def heads(y):
                return y.reshape(B, H, T, D // H) if split == "reshape" else y.view(B, T, H, D // H).transpose(1, 2)

            q, k, v = heads(self.q_proj(x)), heads(self.k_proj(x)), heads(self.v_proj(x))
            new = (k, v)
            if past is not None and cache != "ignored":
                k = torch.cat([past[0], k] if cache == "before" else [k, past[0]], dim=2)
                v = torch.cat([past[1], v] if cache == "before" else [v, past[1]], dim=2)
            S = k.size(2)
            scores = q @ k.transpose(-2, -1) / (math.sqrt(D // H) if scale else 1.0)
            if mask != "none":
                above = {"offset": S - T + 1, "square": 1}[mask]
                scores = scores.masked_fill(torch.ones(T, S, dtype=torch.bool).triu(above), float("-inf"))
            out = (scores.softmax(-1) @ v).transpose(1, 2).reshape(B, T, D)
            return self.out_proj(out), (new if returned == "new" else (k, v))
    return CausalSelfAttention


def make_next_token(*, temperature="divide", top_k="strict", greedy=False):
    """A learner's next_token, correct by default, with one mistake planted by a keyword."""
    def next_token(logits, temperature_=1.0, top_k_=None, generator=None):
        if temperature_ == 0 or greedy:
            return logits.argmax(-1)
        scaled = {"divide": logits / temperature_, "multiply": logits * temperature_, "ignore": logits}[temperature]
        if top_k_ is not None and top_k != "ignore":
            kth = scaled.topk(top_k_, dim=-1).values[:, -1:]
            scaled = scaled.masked_fill(scaled < kth if top_k == "strict" else scaled <= kth, float("-inf"))
        return torch.multinomial(scaled.softmax(-1), 1, generator=generator).squeeze(1)

    def with_names(logits, temperature=1.0, top_k=None, generator=None):
        return next_token(logits, temperature, top_k, generator)
    return with_names


def make_generate(*, feed="newest", position=-1, returns="all", sample=True, seed_used=True):
    """A learner's generate loop, correct by default, with one mistake planted by a keyword."""
    pick = make_next_token()

    def generate(model, prompt, max_new_tokens, temperature=0.0, top_k=None, seed=None):
        generator = torch.Generator().manual_seed(seed) if seed is not None and seed_used else None
        ids, cache = prompt, None
        with torch.no_grad():
            for _ in range(max_new_tokens):
                if feed == "all":
                    out = model(ids)
                elif feed == "all-with-cache":
                    out = model(ids, cache=cache)
                else:
                    out = model(ids if cache is None else ids[:, -1:], cache=cache)
                cache = out.cache
                logits = out.logits[:, position]
                token = pick(logits, temperature, top_k, generator) if sample else logits.argmax(-1)
                ids = torch.cat([ids, token[:, None]], dim=1)
        return ids if returns == "all" else ids[:, prompt.size(1):]
    return generate


def tiny_gpt(vocab_size, max_len):
    """The GPT notebook's model factory (its provided cell): a course GPT that records its calls."""
    from coursekit.gpt import GPT, GPTConfig

    class RecordingGPT(GPT):
        def __init__(self, config):
            super().__init__(config)
            self.calls = []

        def forward(self, input_ids, key_padding_mask=None, cache=None, need_weights=False):
            self.calls.append([input_ids.size(1), cache is not None])
            return super().forward(input_ids, key_padding_mask, cache, need_weights)

    return RecordingGPT(GPTConfig.tiny(vocab_size, max_len=max_len))


# --- classifier ----------------------------------------------------------------------------------

def make_embedding(*, positions="arange", scaled=False):
    """A learner's ClassifierEmbedding, correct by default, with one mistake planted by a keyword."""
    class ClassifierEmbedding(nn.Module):
        def __init__(self, vocab_size, d_model, max_len, pad_id=0):
            super().__init__()
            self.tok_emb = nn.Embedding(vocab_size, d_model, padding_idx=pad_id)
            self.pos_emb = nn.Embedding(max_len, d_model)

        def forward(self, input_ids):
            S = input_ids.size(1)
            tokens = self.tok_emb(input_ids) * (self.tok_emb.embedding_dim ** 0.5 if scaled else 1.0)
            if positions == "none":
                return tokens
            index = {"arange": torch.arange(S), "from-1": torch.arange(1, S + 1),
                     "reversed": torch.arange(S).flip(0)}[positions]
            return tokens + self.pos_emb(index)
    return ClassifierEmbedding


def make_pool(*, cls="first-position", mean="real"):
    """A learner's pool, correct by default, with one mistake planted by a keyword."""
    def pool(hidden, key_padding_mask, how="cls"):
        if how == "cls":
            return {"first-position": hidden[:, 0], "first-text": hidden[0], "last": hidden[:, -1]}[cls]
        real = (~key_padding_mask).unsqueeze(-1).float()
        return {"real": lambda: (hidden * real).sum(1) / real.sum(1), "all": lambda: hidden.mean(1),
                "by-length": lambda: (hidden * real).sum(1) / hidden.size(1), "sum": lambda: (hidden * real).sum(1),
                "padding": lambda: (hidden * (1 - real)).sum(1) / (1 - real).sum(1)}[mean]()
    return pool


def make_classifier(*, embedding=None, pool=None, mask="pass", encoder=True, pooling="self", softmax=False):
    """A learner's TextClassifier, correct by default, with one mistake planted by a keyword."""
    from coursekit.transformer_layers import TransformerEncoder, TransformerEncoderLayer

    embedding_cls, pool_fn = embedding or make_embedding(), pool or make_pool()

    class TextClassifier(nn.Module):
        def __init__(self, vocab_size, num_classes, d_model=32, nhead=2, dim_feedforward=64, max_len=32,
                     pooling="cls", pad_id=0):
            super().__init__()
            self.pooling = pooling
            self.embed = embedding_cls(vocab_size, d_model, max_len, pad_id)
            layer = TransformerEncoderLayer(d_model, nhead, dim_feedforward, dropout=0.0, activation="gelu",
                                            norm_first=True)
            self.encoder = TransformerEncoder(layer, num_layers=1, norm=nn.LayerNorm(d_model))
            self.head = nn.Linear(d_model, num_classes)

        def forward(self, input_ids, key_padding_mask):
            x = self.embed(input_ids)
            hidden = self.encoder(x, src_key_padding_mask=key_padding_mask if mask == "pass" else None) \
                if encoder else x
            logits = self.head(pool_fn(hidden, key_padding_mask, self.pooling if pooling == "self" else "cls"))
            return logits.softmax(-1) if softmax else logits
    return TextClassifier


# --- rnn_self_attention (stage 2) ----------------------------------------------------------------------------

def make_block(*, residual=True, norm="after", mask="pass", tuple_out=False):
    """A learner's SelfAttentionBlock, right by default, with one mistake planted by a keyword."""

    class SelfAttentionBlock(nn.Module):
        def __init__(self, size, num_heads):
            super().__init__()
            self.self_attention = MultiHeadAttention(size, num_heads)
            self.norm = nn.LayerNorm(size)

        def forward(self, annotations, key_padding_mask):
            h = annotations
            kpm = {"pass": key_padding_mask, "none": None}[mask]
            source = self.norm(h) if norm == "before" else h
            attended, weights = self.self_attention(source, source, source, key_padding_mask=kpm)
            if norm == "before":
                out = h + attended
            else:
                total = h + attended if residual else attended
                out = self.norm(total) if norm == "after" else total
            return (out, weights) if tuple_out else out
    return SelfAttentionBlock


def make_masked_mean(kind="real"):
    def masked_mean(memory, key_padding_mask):
        real = (~key_padding_mask)[..., None].to(memory.dtype)
        if kind == "all":
            return memory.mean(dim=1)
        if kind == "divide-by-S":
            return (memory * real).sum(dim=1) / memory.size(1)
        if kind == "inverted":
            pad = key_padding_mask[..., None].to(memory.dtype)
            return (memory * pad).sum(dim=1) / pad.sum(dim=1)
        if kind == "last-real":
            return memory[torch.arange(memory.size(0)), real.sum(dim=1)[:, 0].long() - 1]
        return (memory * real).sum(dim=1) / real.sum(dim=1)
    return masked_mean


def make_general(*, mask="fill", dim=-1, scale=False, values="memory"):
    def general_attention(query, memory, W, key_padding_mask):
        scores = query @ W @ memory.transpose(-2, -1)
        if scale:
            scores = scores / math.sqrt(memory.size(-1))
        hidden = key_padding_mask[:, None, :]
        if mask in ("fill", "inverted"):
            scores = scores.masked_fill(hidden if mask == "fill" else ~hidden, float("-inf"))
        weights = torch.softmax(scores, dim=dim)
        if mask == "after":
            weights = weights.masked_fill(hidden, 0.0)
        return weights @ (memory @ W.T if values == "projected" else memory), weights
    return general_attention


def make_stage2(*, start="mean", combine="context first", squash=True, block=None):
    """A learner's SelfAttentiveRNN (the notebook's Part 4), right by default, built on right Parts 1-3."""
    from coursekit.seq2seq import run_encoder_rnn

    Block, mean, general = block or make_block(), make_masked_mean(), make_general()

    class SelfAttentiveRNN(nn.Module):
        def __init__(self, src_vocab_size, tgt_vocab_size, embed_dim, hidden_dim, num_heads):
            super().__init__()
            E, H = embed_dim, hidden_dim
            self.src_embed = nn.Embedding(src_vocab_size, E, padding_idx=0)
            self.tgt_embed = nn.Embedding(tgt_vocab_size, E, padding_idx=0)
            self.encoder = nn.GRU(E, H, batch_first=True, bidirectional=True)
            self.block = Block(2 * H, num_heads)
            self.init_state = nn.Linear(2 * H, H)
            self.decoder = nn.GRU(E, H, batch_first=True)
            self.W_a = nn.Linear(2 * H, H, bias=False)
            self.combine = nn.Linear(2 * H + H, H)
            self.out = nn.Linear(H, tgt_vocab_size)

        def encode(self, src, src_key_padding_mask):
            lengths = (~src_key_padding_mask).sum(dim=1)
            annotations, _ = run_encoder_rnn(self.encoder, self.src_embed(src), lengths)
            memory = self.block(annotations, src_key_padding_mask)
            if start == "zeros":
                return memory, torch.zeros(src.size(0), self.init_state.out_features)
            return memory, torch.tanh(self.init_state(mean(memory, src_key_padding_mask)))

        def forward(self, src, src_key_padding_mask, tgt_in):
            memory, hidden = self.encode(src, src_key_padding_mask)
            states, _ = self.decoder(self.tgt_embed(tgt_in), hidden[None])
            context, weights = general(states, memory, self.W_a.weight, src_key_padding_mask)
            pair = [context, states] if combine == "context first" else [states, context]
            features = self.combine(torch.cat(pair, dim=-1))
            return self.out(torch.tanh(features) if squash else features), weights
    return SelfAttentiveRNN


# --- attention_without_rnn (stage 3) -------------------------------------------------------------------------

def make_learned(*, use_offset=True, check="raise", added=True, attribute="embedding"):
    """A learner's LearnedPositions, right by default; ``check``: "raise", "none" (indexing fails on its own),
    "wrap" (positions modulo max_len), "off-by-one" (refuses the last rows too)."""

    class LearnedPositions(nn.Module):
        def __init__(self, d_model, max_len):
            super().__init__()
            self.max_len = max_len
            setattr(self, attribute, nn.Embedding(max_len, d_model))

        def forward(self, x, offset=0):
            first = offset if use_offset else 0
            stop = first + x.size(1)
            if (check == "raise" and stop > self.max_len) or (check == "off-by-one" and stop >= self.max_len):
                raise ValueError(f"positions up to {stop - 1} do not exist")
            positions = torch.arange(first, stop) % self.max_len if check == "wrap" else torch.arange(first, stop)
            rows = getattr(self, attribute)(positions)
            return x + rows if added else rows
    return LearnedPositions


def make_sinusoidal(*, trainable=False, use_offset=True, persistent=False):
    class SinusoidalPositions(nn.Module):
        def __init__(self, d_model, max_len):
            super().__init__()
            self.max_len = max_len
            table = coursekit.positional.sinusoidal_table(max_len, d_model)
            if trainable:
                self.table = nn.Parameter(table)
            else:
                self.register_buffer("table", table, persistent=persistent)

        def forward(self, x, offset=0):
            first = offset if use_offset else 0
            stop = first + x.size(1)
            if stop > self.max_len:
                raise ValueError(f"positions up to {stop - 1} are past the table")
            return x + self.table[first:stop]
    return SinusoidalPositions


def make_embed(scale="sqrt(D)", order="scale first"):
    def embed(ids, weight, table=None):
        factor = {"sqrt(D)": math.sqrt(weight.size(1)), "none": 1.0, "sqrt(V)": math.sqrt(weight.size(0))}[scale]
        x = weight[ids]
        if table is None:
            return x * factor
        return (x + table[: ids.size(1)]) * factor if order == "scale the sum" else x * factor + table[: ids.size(1)]
    return embed


def make_stage3(*, scale=True, target_positions=True, memory_mask=True, learned=None, sinusoidal=None):
    """A learner's AttentionWithoutRNN (the notebook's Part 4), right by default, built on right Parts 1-2."""
    from coursekit.seq2seq import AttentionDecoderLayer, AttentionEncoderLayer

    kinds = {"learned": learned or make_learned(), "sinusoidal": sinusoidal or make_sinusoidal()}

    class AttentionWithoutRNN(nn.Module):
        def __init__(self, src_vocab_size, tgt_vocab_size, d_model, nhead, dim_feedforward, positions, max_len=64):
            super().__init__()
            self.d_model = d_model
            self.src_embed = nn.Embedding(src_vocab_size, d_model, padding_idx=0)
            self.tgt_embed = nn.Embedding(tgt_vocab_size, d_model, padding_idx=0)
            self.positions = kinds[positions](d_model, max_len) if positions in kinds else None
            self.encoder_layer = AttentionEncoderLayer(d_model, nhead, dim_feedforward, dropout=0.0)
            self.decoder_layer = AttentionDecoderLayer(d_model, nhead, dim_feedforward, dropout=0.0)
            self.out = nn.Linear(d_model, tgt_vocab_size)

        def _embed(self, embedding, ids, with_positions=True):
            x = embedding(ids) * (math.sqrt(self.d_model) if scale else 1.0)
            return self.positions(x) if self.positions is not None and with_positions else x

        def forward(self, src, src_key_padding_mask, tgt_in):
            memory = self.encoder_layer(self._embed(self.src_embed, src), src_key_padding_mask)
            y = self._embed(self.tgt_embed, tgt_in, with_positions=target_positions)
            mask = src_key_padding_mask if memory_mask else torch.zeros_like(src_key_padding_mask)
            output, weights = self.decoder_layer(y, memory, mask)
            return self.out(output), weights
    return AttentionWithoutRNN


# --- graded notebooks: the instructor's answers, with changes typed in ------------------------------------------

ROOT = Path(__file__).resolve().parents[1]
WRITTEN = "A short answer in my own words."
MARKERS = ("BEGIN SOLUTION", "END SOLUTION", "BEGIN HIDDEN TESTS", "END HIDDEN TESTS")


def load_notebook(path: Path) -> dict:
    return json.loads(Path(path).read_text())


def grade_cells(assignment: str, kind: str) -> list[dict]:
    """The source's cells of one kind: "test" (autograded), "code-answer" or "written"."""
    cells = load_notebook(ROOT / "solutions" / assignment / f"{assignment}.ipynb")["cells"]
    meta = [(c, c["metadata"].get("nbgrader", {})) for c in cells]
    if kind == "test":
        return [c for c, m in meta if m.get("grade") and not m.get("solution")]
    if kind == "written":
        return [c for c, m in meta if m.get("solution") and c["cell_type"] == "markdown"]
    return [c for c, m in meta if m.get("solution") and c["cell_type"] == "code"]


def graded_test_ids(assignment: str) -> list[str]:
    return [c["metadata"]["nbgrader"]["grade_id"] for c in grade_cells(assignment, "test")]


def automatic_points(assignment: str) -> float:
    return sum(c["metadata"]["nbgrader"]["points"] for c in grade_cells(assignment, "test"))


def solution_code(assignment: str, grade_id: str) -> str:
    """The instructor's answer for one cell, as a learner would type it (solution markers removed)."""
    source = load_notebook(ROOT / "solutions" / assignment / f"{assignment}.ipynb")
    cell = next(c for c in source["cells"] if c["metadata"].get("nbgrader", {}).get("grade_id") == grade_id)
    lines = "".join(cell["source"]).splitlines()
    return "\n".join(line for line in lines if line.strip() not in ("### BEGIN SOLUTION", "### END SOLUTION"))


def reference_answers(assignment: str) -> dict[str, str]:
    """Every answer cell as the instructor wrote it, and a short text in each written answer."""
    answers = {c["metadata"]["nbgrader"]["grade_id"]: solution_code(assignment, c["metadata"]["nbgrader"]["grade_id"])
               for c in grade_cells(assignment, "code-answer")}
    answers.update({c["metadata"]["nbgrader"]["grade_id"]: WRITTEN for c in grade_cells(assignment, "written")})
    return answers


def replace_once(text: str, old: str, new: str) -> str:
    assert old in text, f"the mistake needs {old!r} in the solution"
    return text.replace(old, new)


def answers_with(assignment: str, changes: dict) -> dict[str, str]:
    """The reference answers with ``changes`` typed in: grade_id -> (old, new), a list of them, or the whole cell."""
    answers = reference_answers(assignment)
    for grade_id, change in changes.items():
        if isinstance(change, str):
            answers[grade_id] = change
            continue
        for old, new in [change] if isinstance(change, tuple) else change:
            answers[grade_id] = replace_once(answers[grade_id], old, new)
    return answers


def submit(course: Path, student: str, assignment: str, answers: dict[str, str]) -> Path:
    """Put a copy of the release, with ``answers`` typed into its answer cells, where nbgrader collects it."""
    notebook = load_notebook(course / "exercises" / assignment / f"{assignment}.ipynb")
    for cell in notebook["cells"]:
        grade_id = cell["metadata"].get("nbgrader", {}).get("grade_id")
        if grade_id in answers:
            cell["source"] = answers[grade_id]
    target = course / "submitted" / student / assignment
    target.mkdir(parents=True, exist_ok=True)
    path = target / f"{assignment}.ipynb"
    path.write_text(json.dumps(notebook))
    return path


def sdpa_submissions() -> dict[str, str]:
    """The sdpa answer cell as the reference writes it and with three of the corpus's planted mistakes: what the
    autograder's own tests (hostile cohort, PostgreSQL, self-check) submit beside their attacks."""
    from tests.mistakes import SDPA

    answers = {"reference": reference_answers("sdpa")["sdpa-answer"]}
    for name in ("unscaled", "inverted-masks", "calls-reference"):
        answers[name] = answers_with("sdpa", SDPA[name].changes)["sdpa-answer"]
    return answers


SDPA_SUBMISSIONS = sdpa_submissions()
