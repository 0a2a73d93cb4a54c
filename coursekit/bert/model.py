"""BERT: a Transformer encoder pretrained to fill in masked words and to tell whether two sentences follow.

Shape legend: B batch, S sequence length, D model dim (``d_model``), H heads, L layers, V vocabulary size,
N masked positions in a batch, K classes.

Devlin et al. (2019), "BERT: Pre-training of Deep Bidirectional Transformers for Language Understanding":

- :class:`BertModel` (section 3): token + position + segment embeddings (figure 2), a post-LN encoder of
  :class:`coursekit.transformer_layers.TransformerEncoderLayer` with GELU, and the [CLS] pooler.
- :class:`BertForPreTraining` (section 3.1): the masked-language-model head, tied to the word embeddings,
  and the next-sentence-prediction head; :meth:`BertForPreTraining.compute_loss` is their summed loss.
- :class:`BertForSequenceClassification` (section 4.1): one linear layer on the pooled [CLS] vector.
- :meth:`BertModel.from_pretrained` / :meth:`BertModel.save_pretrained`: read and write Hugging Face BERT
  checkpoint directories (``config.json`` + ``model.safetensors`` or ``pytorch_model.bin``).

Masks follow torch.nn: ``key_padding_mask`` is (B, S) bool, True at padding. (Hugging Face's
``attention_mask`` is the opposite: 1 = real token; convert with ``key_padding_mask = attention_mask == 0``.)
As in Hugging Face, nothing is inferred from the ids: pass ``key_padding_mask`` for padded batches.

Reading and writing Hugging Face checkpoints is :mod:`coursekit.bert.checkpoints`; the tokenizer, the text and
the pretraining data are :mod:`coursekit.bert.tokenizer`, :mod:`coursekit.bert.corpus` and
:mod:`coursekit.bert.pretraining_data`; pretraining and fine-tuning :mod:`coursekit.bert.training`.

Book: chapter "BERT".
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from coursekit.bert.checkpoints import load_hf_state_dict, read_hf_checkpoint, write_hf_checkpoint
from coursekit.transformer_layers import TransformerEncoder, TransformerEncoderLayer


@dataclass(frozen=True)
class BertConfig:
    """BERT's hyperparameters; the defaults are BERT-base (L=12, H=768, A=12; Devlin et al., 2019, section 3).

    Names follow the course (torch's ``d_model``, ``nhead`` ...); :meth:`from_hf_dict` reads a Hugging Face
    ``config.json``. One ``dropout`` serves the embeddings, attention weights and sublayer outputs (BERT uses
    0.1 for all of them).
    """

    vocab_size: int = 30522
    d_model: int = 768
    nhead: int = 12
    num_layers: int = 12
    dim_feedforward: int = 3072
    dropout: float = 0.1
    max_len: int = 512
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12
    pad_id: int = 0
    init_std: float = 0.02

    @classmethod
    def tiny(cls, vocab_size: int = 8000, **overrides: Any) -> BertConfig:
        """BERT-Tiny (L=2, H=128, A=2; Turc et al., 2019), sequences up to 128 tokens: pretrains on a CPU in minutes."""
        defaults = dict(d_model=128, nhead=2, num_layers=2, dim_feedforward=512, max_len=128)
        return cls(vocab_size=vocab_size, **{**defaults, **overrides})

    @classmethod
    def from_hf_dict(cls, hf: dict[str, Any]) -> BertConfig:
        """The config of a Hugging Face BERT ``config.json``; raises if it asks for something BertModel lacks."""
        if hf.get("hidden_act", "gelu") != "gelu":
            raise ValueError(f"config.json has hidden_act={hf['hidden_act']!r}; coursekit's BERT supports 'gelu' only")
        if hf.get("position_embedding_type", "absolute") != "absolute":
            raise ValueError(f"config.json has position_embedding_type={hf['position_embedding_type']!r}; "
                             "coursekit's BERT supports 'absolute' (learned) positions only")
        if hf.get("hidden_dropout_prob", 0.1) != hf.get("attention_probs_dropout_prob", 0.1):
            warnings.warn("config.json has different hidden and attention dropout; using hidden_dropout_prob for both")
        return cls(
            vocab_size=hf["vocab_size"], d_model=hf["hidden_size"], nhead=hf["num_attention_heads"],
            num_layers=hf["num_hidden_layers"], dim_feedforward=hf["intermediate_size"],
            dropout=hf.get("hidden_dropout_prob", 0.1), max_len=hf.get("max_position_embeddings", 512),
            type_vocab_size=hf.get("type_vocab_size", 2), layer_norm_eps=hf.get("layer_norm_eps", 1e-12),
            pad_id=hf.get("pad_token_id") or 0, init_std=hf.get("initializer_range", 0.02),
        )

    def to_hf_dict(self) -> dict[str, Any]:
        """This config as a Hugging Face ``config.json`` (inverse of :meth:`from_hf_dict`)."""
        return {
            "model_type": "bert", "vocab_size": self.vocab_size, "hidden_size": self.d_model,
            "num_attention_heads": self.nhead, "num_hidden_layers": self.num_layers,
            "intermediate_size": self.dim_feedforward, "hidden_act": "gelu", "hidden_dropout_prob": self.dropout,
            "attention_probs_dropout_prob": self.dropout, "max_position_embeddings": self.max_len,
            "type_vocab_size": self.type_vocab_size, "layer_norm_eps": self.layer_norm_eps,
            "pad_token_id": self.pad_id, "initializer_range": self.init_std, "position_embedding_type": "absolute",
        }


class BertEmbeddings(nn.Module):
    r"""Input representation (Devlin et al., 2019, section 3, figure 2): the sum of three learned embeddings,
    then layer norm and dropout.

    .. math:: E = \mathrm{Dropout}(\mathrm{LN}(E_{\text{token}}[x_s] + E_{\text{position}}[s] + E_{\text{segment}}[t_s]))

    Args:
        vocab_size: V. d_model: D. max_len: most positions. type_vocab_size: number of segments (2: A and B).
        layer_norm_eps: epsilon of the layer norm. dropout: dropout probability. pad_id: the [PAD] id,
            whose embedding gets no gradient.
    """

    def __init__(self, vocab_size: int, d_model: int, max_len: int, type_vocab_size: int, layer_norm_eps: float,
                 dropout: float, pad_id: int = 0) -> None:
        super().__init__()
        self.word_embeddings = nn.Embedding(vocab_size, d_model, padding_idx=pad_id)
        self.position_embeddings = nn.Embedding(max_len, d_model)
        self.token_type_embeddings = nn.Embedding(type_vocab_size, d_model)
        self.norm = nn.LayerNorm(d_model, eps=layer_norm_eps)
        self.dropout = nn.Dropout(dropout)

    def forward(self, input_ids: Tensor, token_type_ids: Tensor | None = None) -> Tensor:
        """Shape: input_ids (B, S), token_type_ids (B, S) of 0 (sentence A) or 1 (sentence B)
        -> (B, S, D)."""
        self._check_ids(input_ids, token_type_ids)
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(input_ids)
        positions = torch.arange(input_ids.size(1), device=input_ids.device)  # (S,)
        x = self.word_embeddings(input_ids) + self.position_embeddings(positions) \
            + self.token_type_embeddings(token_type_ids)  # (B, S, D) + (S, D) + (B, S, D)
        return self.dropout(self.norm(x))

    def _check_ids(self, input_ids: Tensor, token_type_ids: Tensor | None) -> None:
        if input_ids.dim() != 2 or input_ids.dtype not in (torch.int64, torch.int32):
            raise ValueError(f"input_ids must be (B, S) integer token ids, got {input_ids.dtype} {tuple(input_ids.shape)}")
        B, S = input_ids.shape
        if S > self.position_embeddings.num_embeddings:
            raise ValueError(f"sequence length {S} exceeds the model's max_len = {self.position_embeddings.num_embeddings} "
                             "positions; truncate the inputs (e.g. bert_data's max_len)")
        for name, ids, table in (("input_ids", input_ids, self.word_embeddings),
                                 ("token_type_ids", token_type_ids, self.token_type_embeddings)):
            if ids is None or ids.numel() == 0:
                continue
            if ids.shape != (B, S):
                raise ValueError(f"{name} must have shape (B, S) = {(B, S)}, got {tuple(ids.shape)}")
            low, high = int(ids.min()), int(ids.max())
            if low < 0 or high >= table.num_embeddings:
                what = "vocabulary" if name == "input_ids" else "segment table"
                raise ValueError(f"{name} contain id {high if high >= table.num_embeddings else low}, but the model's "
                                 f"{what} has {table.num_embeddings} entries (ids 0..{table.num_embeddings - 1}); "
                                 "was the tokenizer built for another vocabulary?")


class BertModel(nn.Module):
    r"""The BERT encoder (Devlin et al., 2019, section 3): embeddings, L post-LN Transformer layers, [CLS] pooler.

    .. math::
        h^0 = \mathrm{Embed}(x), \qquad h^\ell = \mathrm{TransformerLayer}(h^{\ell-1}), \qquad
        \mathrm{pooled} = \tanh(W_p\, h^L_{[\mathrm{CLS}]} + b_p)

    Each layer is :class:`coursekit.transformer_layers.TransformerEncoderLayer` with ``norm_first=False`` (the
    original post-LN order) and exact (erf) GELU (Hendrycks and Gimpel, 2016).

    Args:
        config: a :class:`BertConfig`.
    """

    config_class = BertConfig

    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.config = config
        self.embeddings = BertEmbeddings(config.vocab_size, config.d_model, config.max_len, config.type_vocab_size,
                                         config.layer_norm_eps, config.dropout, config.pad_id)
        layer = TransformerEncoderLayer(config.d_model, config.nhead, config.dim_feedforward, config.dropout,
                                        activation="gelu", layer_norm_eps=config.layer_norm_eps, norm_first=False)
        self.encoder = TransformerEncoder(layer, config.num_layers)
        self.pooler = nn.Linear(config.d_model, config.d_model)
        self.apply(partial(init_bert_weights, std=config.init_std))

    def forward(
        self, input_ids: Tensor, token_type_ids: Tensor | None = None, key_padding_mask: Tensor | None = None,
    ) -> tuple[Tensor, Tensor]:
        """Encode a batch of (pairs of) sentences.

        Args:
            input_ids: (B, S) token ids, e.g. ``[CLS] A [SEP] B [SEP] [PAD] ...``.
            token_type_ids: (B, S), 0 for sentence A and 1 for sentence B; all 0 if None.
            key_padding_mask: (B, S) bool, True at padding (torch.nn's convention); None = no padding.

        Shape:
            Returns ``(sequence_output, pooled_output)``: (B, S, D), one vector per token from the last layer,
            and (B, D), the pooled [CLS] vector that the NSP and classification heads read.
        """
        x = self.embeddings(input_ids, token_type_ids)  # (B, S, D)
        x = self.encoder(x, src_key_padding_mask=key_padding_mask)  # (B, S, D)
        return x, self.pool(x)

    def pool(self, sequence_output: Tensor) -> Tensor:
        """tanh(W h_[CLS] + b): the first position's final state through a dense layer. Shape: (B, S, D) -> (B, D)."""
        return torch.tanh(self.pooler(sequence_output[:, 0]))

    def attention_maps(
        self, input_ids: Tensor, token_type_ids: Tensor | None = None, key_padding_mask: Tensor | None = None,
    ) -> Tensor:
        """Every layer's and head's self-attention weights, for plots (explicit softmax, so slower than forward).

        Shape:
            Returns (B, L, H, S, S): ``maps[b, l, h, t]`` is how query t spreads its attention over the keys
            in head h of layer l; rows sum to 1 and are exactly 0 at padding keys.
        """
        x = self.embeddings(input_ids, token_type_ids)  # (B, S, D)
        return self.encoder.forward_with_weights(x, src_key_padding_mask=key_padding_mask)[1]  # (B, L, H, S, S)

    @classmethod
    def from_pretrained(cls, path: str | Path) -> BertModel:
        """Load a Hugging Face BERT checkpoint directory (``config.json`` + ``model.safetensors`` or
        ``pytorch_model.bin``), with or without the ``bert.`` prefix; pretraining heads in it are ignored.

        Raises:
            FileNotFoundError: no config or weights file. ValueError: missing or unexpected weights, or a
            weight whose shape does not fit the config; the message names each one.

        Returns:
            The model on the CPU in eval mode (call ``.train()`` to fine-tune).
        """
        hf_config, state = read_hf_checkpoint(path)
        model = cls(BertConfig.from_hf_dict(hf_config))
        load_hf_state_dict(model, state, with_heads=False, source=str(path))
        return model.eval()

    def save_pretrained(self, path: str | Path) -> Path:
        """Write a checkpoint directory that :meth:`from_pretrained` and ``transformers.BertModel`` both load."""
        return write_hf_checkpoint(self, path, "BertModel")


class MaskedLMHead(nn.Module):
    r"""Predicts the original token at each position (Devlin et al., 2019, section 3.1, task 1; appendix A.1).

    .. math:: p(x_i \mid \tilde{x}) = \mathrm{softmax}\big(\mathrm{LN}(\mathrm{GELU}(W h_i + b))\, E^\top + b_V\big)

    :math:`E` is the word-embedding matrix (V, D): the decoder's weight is tied to it by
    :class:`BertForPreTraining` (Press and Wolf, 2017), only its bias :math:`b_V` is the head's own.

    Args:
        d_model: D. vocab_size: V. layer_norm_eps: epsilon of the layer norm.
    """

    def __init__(self, d_model: int, vocab_size: int, layer_norm_eps: float) -> None:
        super().__init__()
        self.dense = nn.Linear(d_model, d_model)
        self.activation = nn.GELU()
        self.norm = nn.LayerNorm(d_model, eps=layer_norm_eps)
        self.decoder = nn.Linear(d_model, vocab_size)

    def forward(self, hidden: Tensor) -> Tensor:
        """Shape: (..., D) -> (..., V) logits."""
        return self.decoder(self.norm(self.activation(self.dense(hidden))))


class PretrainingLoss(NamedTuple):
    """Output of :meth:`BertForPreTraining.compute_loss`.

    Shape: ``loss``, ``mlm_loss``, ``nsp_loss`` scalars; ``mlm_logits`` (N, V) at the N masked positions,
    ``mlm_targets`` (N,) their original ids; ``nsp_logits`` (B, 2).
    """

    loss: Tensor
    mlm_loss: Tensor
    nsp_loss: Tensor
    mlm_logits: Tensor
    mlm_targets: Tensor
    nsp_logits: Tensor


class BertForPreTraining(nn.Module):
    r"""BERT with its two pretraining heads (Devlin et al., 2019, section 3.1).

    Task 1, masked LM: predict the tokens chosen for masking. Task 2, next sentence prediction: a 2-way
    classifier on the pooled [CLS] vector, class 0 = IsNext, 1 = NotNext (Hugging Face's convention).

    Args:
        config: a :class:`BertConfig`.
    """

    config_class = BertConfig

    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.config = config
        self.bert = BertModel(config)
        self.mlm = MaskedLMHead(config.d_model, config.vocab_size, config.layer_norm_eps)
        self.nsp = nn.Linear(config.d_model, 2)
        for module in (self.mlm, self.nsp):
            module.apply(partial(init_bert_weights, std=config.init_std))
        self.mlm.decoder.weight = self.bert.embeddings.word_embeddings.weight  # tied: (V, D)

    def forward(
        self, input_ids: Tensor, token_type_ids: Tensor | None = None, key_padding_mask: Tensor | None = None,
    ) -> tuple[Tensor, Tensor]:
        """Scores for every position and for the pair; arguments as in :meth:`BertModel.forward`.

        Shape:
            Returns ``(mlm_logits, nsp_logits)``: (B, S, V) and (B, 2).
        """
        sequence_output, pooled = self.bert(input_ids, token_type_ids, key_padding_mask)  # (B, S, D), (B, D)
        return self.mlm(sequence_output), self.nsp(pooled)

    def compute_loss(
        self, input_ids: Tensor, token_type_ids: Tensor | None, key_padding_mask: Tensor | None,
        mlm_labels: Tensor, nsp_labels: Tensor,
    ) -> PretrainingLoss:
        r"""The pretraining objective: mean MLM cross-entropy over the masked positions plus mean
        NSP cross-entropy.

        .. math::
            \mathcal{L} = -\frac{1}{|M|}\sum_{(b,i) \in M} \log p(x_{b,i} \mid \tilde{x}_b)
                          \;-\; \frac{1}{B}\sum_b \log p(\mathrm{IsNext}_b \mid \tilde{x}_b)

        Only the N masked positions go through the MLM head (the same numbers as scoring all
        B x S positions and ignoring the rest, at about 15% of the cost of the (B, S, V) output
        layer).

        Args:
            input_ids, token_type_ids, key_padding_mask: as in :meth:`forward` (the masked input).
            mlm_labels: (B, S), the original id at masked positions and -100 everywhere else.
            nsp_labels: (B,), 0 = B follows A, 1 = B is a random sentence.
        """
        # (B, S, D), (B, D)
        sequence_output, pooled = self.bert(input_ids, token_type_ids, key_padding_mask)
        masked = mlm_labels != -100  # (B, S)
        mlm_logits = self.mlm(sequence_output[masked])  # (N, D) -> (N, V)
        targets = mlm_labels[masked]  # (N,)
        nsp_logits = self.nsp(pooled)  # (B, 2)
        # A batch with no masked token (possible, rarely, with tiny batches) contributes no MLM
        # loss instead of NaN.
        mlm_loss = (F.cross_entropy(mlm_logits.float(), targets) if targets.numel()
                    else mlm_logits.sum() * 0.0)
        nsp_loss = F.cross_entropy(nsp_logits.float(), nsp_labels)
        return PretrainingLoss(mlm_loss + nsp_loss, mlm_loss, nsp_loss, mlm_logits, targets,
                               nsp_logits)

    @classmethod
    def from_pretrained(cls, path: str | Path) -> BertForPreTraining:
        """Load a Hugging Face checkpoint directory with the heads when it has them (``cls.*`` keys).

        A checkpoint without heads (e.g. all-MiniLM-L6-v2) loads with a warning and freshly initialised
        heads; any other missing or unexpected weight raises ``ValueError`` naming it. Returns the model on the
        CPU in eval mode.
        """
        hf_config, state = read_hf_checkpoint(path)
        model = cls(BertConfig.from_hf_dict(hf_config))
        load_hf_state_dict(model, state, with_heads=True, source=str(path))
        return model.eval()

    def save_pretrained(self, path: str | Path) -> Path:
        """Write a directory that :meth:`from_pretrained` and ``transformers.BertForPreTraining`` load."""
        return write_hf_checkpoint(self, path, "BertForPreTraining")


class BertForSequenceClassification(nn.Module):
    r"""Fine-tuning for a sentence (or sentence-pair) classification task (Devlin et al., 2019, section 4.1).

    .. math:: p(k \mid x) = \mathrm{softmax}(W\, \mathrm{Dropout}(\mathrm{pooled}) + b)_k, \qquad W \in \mathbb{R}^{K \times D}

    Start from pretrained weights with ``model.bert.load_state_dict(pretrained.bert.state_dict())``.

    Args:
        config: a :class:`BertConfig`. num_labels: K.
    """

    config_class = BertConfig

    def __init__(self, config: BertConfig, num_labels: int = 2) -> None:
        super().__init__()
        self.config, self.num_labels = config, num_labels
        self.bert = BertModel(config)
        self.dropout = nn.Dropout(config.dropout)
        self.classifier = nn.Linear(config.d_model, num_labels)
        init_bert_weights(self.classifier, config.init_std)

    def forward(
        self, input_ids: Tensor, token_type_ids: Tensor | None = None,
        key_padding_mask: Tensor | None = None,
    ) -> Tensor:
        """Class scores; arguments as in :meth:`BertModel.forward`. Shape: returns (B, K) logits."""
        _, pooled = self.bert(input_ids, token_type_ids, key_padding_mask)  # (B, D)
        return self.classifier(self.dropout(pooled))


def init_bert_weights(module: nn.Module, std: float = 0.02) -> None:
    """BERT's initialisation: N(0, std) for linear and embedding weights, zero biases, unit layer norms.

    The [PAD] embedding starts at zero (and ``padding_idx`` keeps it there).
    """
    if isinstance(module, (nn.Linear, nn.Embedding)):
        nn.init.normal_(module.weight, mean=0.0, std=std)
    if isinstance(module, nn.Linear) and module.bias is not None:
        nn.init.zeros_(module.bias)
    if isinstance(module, nn.Embedding) and module.padding_idx is not None:
        with torch.no_grad():
            module.weight[module.padding_idx].zero_()
    if isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


def count_parameters(model: nn.Module) -> int:
    """Number of distinct trainable parameters (tied weights count once)."""
    return sum(p.numel() for p in {id(p): p for p in model.parameters() if p.requires_grad}.values())
